"""A one-node Slurm cluster on this machine, for ``tests/test_slurm.py`` (``make slurm``).

``Cluster(directory).start()`` (or ``with Cluster(directory):``) installs Debian's
``slurm-wlm`` and ``munge`` if their programs are missing (root and ``apt-get`` needed;
otherwise ``Unavailable``), then:

- munge: reuses a ``munged`` that already answers, else starts one as the ``munge`` user
  with the package's key (created if absent; owner ``munge``, mode 0400) and run directory
  ``/run/munge``;
- writes ``slurm.conf`` into ``directory`` (state, spool and logs there too) and links
  ``/etc/slurm/slurm.conf`` to it: Slurm strips ``SLURM_CONF`` from a job's environment, and
  the ``srun`` that the executor plugin runs inside each job reads the default path. A
  ``slurm.conf`` already there is moved aside and put back at the end; a link left by a test
  cluster that was killed before its teardown is replaced, and its daemons are stopped;
- the cluster: the short host name as ``NodeName`` (``NodeAddr=127.0.0.1``), every CPU,
  three quarters of the memory, one partition ``debug`` (the default), ``proctrack/linuxproc``
  and ``task/none`` (no cgroups), free ports, no accounting database: the executor plugin
  polls ``squeue`` (``MinJobAge`` keeps finished jobs there for an hour) and job completions
  go to a text file that ``sacct --completion`` reads (``completed``, ``queued``);
- starts ``slurmctld`` and ``slurmd`` in the foreground (``-D``) as children of this
  process, waits until ``sinfo`` shows the node idle, and at the end cancels what is left
  of the jobs, stops the daemons it started and restores ``/etc/slurm/slurm.conf``.

By hand: ``sudo python tests/slurm/cluster.py /tmp/cluster`` starts one and keeps it up
until Ctrl-C.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
PROGRAMS = (
    "munged", "munge", "unmunge", "slurmctld", "slurmd", "slurmstepd", "sbatch", "srun",
    "squeue", "sinfo", "sacct", "scontrol", "scancel",
)  # fmt: skip
SLURM_CONF = Path("/etc/slurm/slurm.conf")
BACKUP = SLURM_CONF.with_name("slurm.conf.ntkpaper-test-backup")  # a real one, moved aside
RECORD = SLURM_CONF.with_name("slurm.conf.ntkpaper-test")  # what we linked it to
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")
PARTITION = "debug"
MIN_JOB_AGE = 3600  # s that finished jobs stay in squeue (the plugin wants >= 120)
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])


class Unavailable(RuntimeError):
    """Slurm or munge is not installed here and cannot be installed."""


def which(program: str) -> str | None:
    return shutil.which(program, path=PATH)


def missing() -> list[str]:
    """The programs of ``PROGRAMS`` that are not on this machine."""
    return [p for p in PROGRAMS if which(p) is None]


def install() -> str:
    """Install ``PACKAGES`` with apt if a program is missing; return what apt said."""
    if not missing():
        return ""
    why = f"missing {', '.join(missing())}"
    if os.geteuid() != 0 or which("apt-get") is None:
        raise Unavailable(f"{why}; installing {' '.join(PACKAGES)} needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": PATH}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:  # a stale package index: update it once
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if missing():
        raise Unavailable(f"{why}; apt-get install failed:\n{out.stdout[-2000:]}{out.stderr}")
    return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb() -> int:
    """Total memory in MB (``/proc/meminfo``)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _run(*cmd: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, capture_output=True, text=True, check=check, timeout=timeout, env=_env()
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": PATH}


def munge_works() -> bool:
    try:
        cred = _run("munge", "-n", timeout=10)
        if cred.returncode:
            return False
        return (
            subprocess.run(
                ["unmunge"], input=cred.stdout, capture_output=True, text=True, timeout=10,
                env=_env(),
            ).returncode
            == 0
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False


def stop_pid(pid: int, proc: subprocess.Popen | None = None, grace: float = 15) -> None:
    """SIGTERM the process ``pid`` (ours), then SIGKILL it after ``grace`` s."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait()


def daemons_of(conf: Path) -> list[int]:
    """Pids of the ``slurmctld``/``slurmd`` that a ``Cluster`` started on ``conf``: their
    command line is exactly ``<program> -D -f <conf>``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if (
            len(argv) == 4
            and Path(argv[0].decode(errors="replace")).name in ("slurmctld", "slurmd")
            and argv[1:] == [b"-D", b"-f", str(conf).encode()]
        ):
            found.append(int(entry.name))
    return found


def wait_for(what: str, ready, timeout: float, logs: list[Path] = ()) -> None:
    """Poll ``ready()`` until true; raise with the tails of ``logs`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tails = "".join(
                f"\n--- {p}:\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists()
            )
            raise RuntimeError(f"test cluster: {what} not ready after {timeout:.0f} s{tails}")
        time.sleep(0.25)


class Cluster:
    """A one-node Slurm cluster whose files live in ``directory`` (see the module's doc)."""

    def __init__(self, directory: Path, name: str = "ntkpaper-test"):
        self.dir = Path(directory).resolve()
        self.name = name
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.dir / "slurm.conf"
        self.jobcomp = self.dir / "jobcomp.txt"
        self.cpus = os.cpu_count() or 1
        self.memory_mb = memory_mb() * 3 // 4
        self._daemons: list[subprocess.Popen] = []
        self._munged_pid: int | None = None
        self._linked = False

    # -- configuration -------------------------------------------------------------------

    def config(self) -> str:
        d = self.dir
        return "\n".join(
            [
                f"ClusterName={self.name}",
                f"SlurmctldHost={self.host}(127.0.0.1)",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"StateSaveLocation={d / 'state'}",
                f"SlurmdSpoolDir={d / 'spool'}",
                f"SlurmctldPidFile={d / 'slurmctld.pid'}",  # (not written with -D)
                f"SlurmdPidFile={d / 'slurmd.pid'}",
                f"SlurmctldLogFile={d / 'slurmctld.log'}",
                f"SlurmdLogFile={d / 'slurmd.log'}",
                "SlurmctldDebug=info",
                "SlurmdDebug=info",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "SchedulerType=sched/backfill",
                "MpiDefault=none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/filetxt",
                f"JobCompLoc={self.jobcomp}",
                f"MinJobAge={MIN_JOB_AGE}",
                "ReturnToService=2",
                "MailProg=/bin/true",
                "DefMemPerCPU=1000",
                f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                f"RealMemory={self.memory_mb} State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE "
                "State=UP",
                "",
            ]
        )

    def _link_conf(self) -> None:
        """Link /etc/slurm/slurm.conf to ours; move a real one aside (``BACKUP``). A link left
        by a test cluster killed before its teardown (``RECORD`` names its target) is replaced,
        and that cluster's daemons, if still running, are stopped."""
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        left = RECORD.read_text().strip() if RECORD.exists() else None
        if SLURM_CONF.is_symlink() and os.readlink(SLURM_CONF) == left:
            for pid in daemons_of(Path(left)):
                stop_pid(pid)
            SLURM_CONF.unlink()  # the backup, if any, is still the original
        elif SLURM_CONF.exists() or SLURM_CONF.is_symlink():
            if BACKUP.exists() or BACKUP.is_symlink():
                raise RuntimeError(f"test cluster: {SLURM_CONF} and {BACKUP} both exist")
            os.replace(SLURM_CONF, BACKUP)
        RECORD.write_text(f"{self.conf}\n")
        SLURM_CONF.symlink_to(self.conf)
        self._linked = True

    def _unlink_conf(self) -> None:
        if not self._linked:
            return
        if SLURM_CONF.is_symlink() and os.readlink(SLURM_CONF) == str(self.conf):
            SLURM_CONF.unlink()
            if BACKUP.exists() or BACKUP.is_symlink():
                os.replace(BACKUP, SLURM_CONF)
        RECORD.unlink(missing_ok=True)
        self._linked = False

    # -- daemons -------------------------------------------------------------------------

    def _start_munge(self) -> None:
        if munge_works():
            return
        user = pwd.getpwnam("munge")
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            MUNGE_KEY.write_bytes(os.urandom(1024))
        for path, mode in ((MUNGE_KEY.parent, 0o700), (MUNGE_KEY, 0o400)):
            os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(path, mode)
        for path in (MUNGE_RUN, Path("/var/log/munge"), Path("/var/lib/munge")):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, user.pw_uid, user.pw_gid)
        MUNGE_RUN.chmod(0o755)
        out = _run("runuser", "-u", "munge", "--", which("munged"))  # daemonizes
        if out.returncode:
            raise RuntimeError(f"test cluster: munged failed: {out.stderr}")
        wait_for("munged", munge_works, 15, [Path("/var/log/munge/munged.log")])
        pid_file = MUNGE_RUN / "munged.pid"
        if pid_file.exists():
            self._munged_pid = int(pid_file.read_text().split()[0])

    def _daemon(self, program: str, log: Path) -> None:
        with open(log.with_suffix(".out"), "ab") as out:
            self._daemons.append(
                subprocess.Popen(
                    [which(program), "-D", "-f", str(self.conf)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=_env(),
                    start_new_session=True,
                )
            )

    def node_state(self) -> str:
        out = _run("sinfo", "-h", "-N", "-n", self.host, "-o", "%t", timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    def start(self, timeout: float = 60) -> Cluster:
        if os.geteuid() != 0:
            raise Unavailable("the test cluster needs root (munged, /etc/slurm/slurm.conf)")
        install()
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config())
        try:
            self._start_munge()
            self._link_conf()
            self._daemon("slurmctld", self.dir / "slurmctld.log")
            logs = [self.dir / n for n in ("slurmctld.log", "slurmctld.out")]
            wait_for("slurmctld", lambda: _run("scontrol", "ping").returncode == 0, timeout, logs)
            self._daemon("slurmd", self.dir / "slurmd.log")
            logs += [self.dir / n for n in ("slurmd.log", "slurmd.out")]
            wait_for("the node", lambda: self.node_state() == "idle", timeout, logs)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel the jobs left, stop the daemons started here, restore slurm.conf."""
        try:
            if self._daemons and self._daemons[0].poll() is None:
                _run("scancel", "--full", "--partition", PARTITION, timeout=15)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and _run("squeue", "-h", "-t", "R,CG").stdout:
                    time.sleep(0.25)
        except (OSError, subprocess.TimeoutExpired):
            pass  # the controller is gone already: nothing to cancel through it
        for proc in reversed(self._daemons):  # slurmd first
            stop_pid(proc.pid, proc)
        self._daemons.clear()
        if self._munged_pid is not None:
            stop_pid(self._munged_pid)
            self._munged_pid = None
        self._unlink_conf()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- queries -------------------------------------------------------------------------

    def completed(self, name: str) -> list[dict[str, str]]:
        """The finished jobs called ``name`` (the executor's run id), from the job completion
        records (``sacct --completion``): JobID, State, ExitCode, NodeList, AllocCPUS."""
        fields = ["JobID", "JobName", "State", "ExitCode", "NodeList", "AllocCPUS"]
        out = _run(
            "sacct", "--completion", "--allusers", "--parsable2", "--noheader",
            f"--format={','.join(fields)}", check=True,
        )  # fmt: skip
        rows = [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines()]
        return [r for r in rows if r["JobName"] == name]

    def queued(self, name: str) -> list[dict[str, str]]:
        """The jobs called ``name`` that ``squeue`` still knows (finished ones for
        ``MinJobAge``): JobID, State, Comment (the plugin's rule and wildcards), Partition,
        CPUs, Memory, TimeLimit, TRES (per node: GPUs)."""
        fields = ["JobID", "State", "Comment", "Partition", "CPUs", "Memory", "TimeLimit", "TRES"]
        out = _run(
            "squeue", "--states=all", "--noheader", "--name", name,
            "--format=%i|%T|%k|%P|%C|%m|%l|%b", check=True,
        )  # fmt: skip
        return [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines()]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/slurm/cluster.py DIRECTORY  (as root)", file=sys.stderr)
        return 2

    def stop(signum, frame):
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    with Cluster(Path(argv[0])) as cluster:
        print(f"cluster up: {cluster.host}, slurm.conf {cluster.conf}; Ctrl-C stops it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The main command: Snakemake on the working directory, resuming after a kill.

``python -m ntkpaper figures [snakemake options]`` (what ``make figures`` runs).

Snakemake locks its working directory while it runs (``.snakemake/locks/``) and leaves the
lock behind when it is killed; it cannot tell a stale lock from a live one and asks for
``--unlock`` by hand. This command holds an advisory ``flock`` on
``.snakemake/ntkpaper-run.lock`` for as long as Snakemake runs (Snakemake inherits it), and the
kernel releases a ``flock`` when the last process holding it dies, however it dies. So:

- the ``flock`` is held: a live run in this directory; refuse, naming its pid;
- it is free and a Snakemake process started by hand runs in this directory: refuse too;
- it is free and Snakemake's lock is there: a killed run left it; clear it (``--unlock``),
  then run with ``--rerun-incomplete``, which restarts the killed jobs from their checkpoints.

With ``--keep-going``: a figure that fails (a notebook error, a diverged run) does not stop
the others; the report site the Snakefile builds at the end shows it as failed, with its log,
and the command exits non-zero.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

SNAKEFILE = Path(__file__).resolve().parent.parent / "Snakefile"
LOCK_NAME = "ntkpaper-run.lock"


class LiveRun(RuntimeError):
    """Another run of the workflow is live in this directory."""


def _snakemake(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *args]


def hand_started_snakemake(directory: Path) -> list[int]:
    """Pids of live Snakemake processes (not ours) whose working directory is ``directory``.

    Linux ``/proc``; elsewhere nothing is found and only the ``flock`` protects.
    """
    found, here = [], directory.resolve()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        pid = int(entry.name)
        if pid != os.getpid() and cwd == here and any(b"snakemake" in a for a in argv[:3]):
            if not any(a.endswith(b"ntkpaper") for a in argv[:3]):  # not `-m ntkpaper figures`
                found.append(pid)
    return found


def hold_run_lock(directory: Path) -> int:
    """Take this directory's run lock (a file descriptor to keep open) or raise ``LiveRun``."""
    lock = directory / ".snakemake" / LOCK_NAME
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LiveRun(
            f"another run of the workflow is live in {directory} (pid {holder}); wait for it "
            "to finish or stop it, then run the same command again"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def main(args: list[str], directory: Path | None = None) -> int:
    """Run the workflow with ``args`` passed to Snakemake; clear a lock left by a killed run."""
    directory = (directory or Path.cwd()).resolve()
    try:
        fd = hold_run_lock(directory)
        others = hand_started_snakemake(directory)
        if others:
            raise LiveRun(
                f"Snakemake is running in {directory} (pid {', '.join(map(str, others))}); "
                "wait for it to finish or stop it, then run the same command again"
            )
    except LiveRun as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    locks = directory / ".snakemake" / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        print("ntkpaper: clearing the lock left by a run that was killed", file=sys.stderr)
        unlock = subprocess.run(_snakemake("--unlock"), cwd=directory, capture_output=True)
        if unlock.returncode:
            sys.stderr.write(unlock.stderr.decode(errors="replace"))
            return unlock.returncode
    cmd = _snakemake("--rerun-incomplete", "--keep-going", *args)
    return subprocess.run(cmd, cwd=directory, pass_fds=(fd,)).returncode

"""Command line: the main command, and what the Snakefile's rules call.

python -m ntkpaper figures [snakemake options]  the workflow; resumes after a kill (make figures)
python -m ntkpaper check --profile quick       validate every parameter file
python -m ntkpaper run KEY --profile quick     run one cached job (a key of the plan); several
                                               children keys of one parent train together
python -m ntkpaper data cifar10                place a dataset in the cache
python -m ntkpaper site --profile quick        the report site, results/<profile>/site/
python -m ntkpaper stamp NOTEBOOK              copy provenance.json into an executed notebook
"""

from __future__ import annotations

import argparse
import sys

from ntkpaper import params as P
from ntkpaper import plan


def compilation_cache(path) -> None:
    """Persist compiled XLA programs: jobs of one kind compile the same step function."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntkpaper")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("figures", help="run the workflow (snakemake); resumes after a kill")
    check = sub.add_parser("check", help="validate params/*.yaml")
    check.add_argument("--profile", default="quick", choices=P.PROFILES)
    run = sub.add_parser("run", help="run jobs of the plan by key (children keys: together)")
    run.add_argument("key", nargs="+")
    run.add_argument("--profile", default="quick", choices=P.PROFILES)
    data = sub.add_parser("data", help="download, verify and cache a dataset")
    data.add_argument("name")
    site = sub.add_parser("site", help="build the report site results/<profile>/site/")
    site.add_argument("--profile", default="quick", choices=P.PROFILES)
    stamp = sub.add_parser("stamp", help="provenance.json beside NOTEBOOK into its metadata")
    stamp.add_argument("notebook")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["figures"]:  # every further option is Snakemake's
        from ntkpaper import launch

        return launch.main(argv[1:])
    args = parser.parse_args(argv)

    try:
        if args.command == "data":
            from ntkpaper import data as data_lib

            data_lib.prepare(args.name)
            return 0
        if args.command == "stamp":
            from ntkpaper import provenance

            provenance.stamp_notebook(args.notebook)
            return 0
        if args.command == "site":
            from ntkpaper import site as site_lib

            try:
                print(site_lib.build(args.profile))
            except site_lib.SiteError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            return 0
        figures = P.load_all(args.profile)
        jobs = plan.all_jobs(figures)
        if args.command == "check":
            print(f"{len(figures)} figures, {len(jobs)} runs on profile {args.profile}: ok")
            return 0
        unknown = [k for k in args.key if k not in jobs]
        if unknown:
            print(
                f"error: no run with key {unknown[0]} in params/*.yaml ({args.profile})",
                file=sys.stderr,
            )
            return 2
        if len(args.key) > 1 and any(jobs[k].kind != "children" for k in args.key):
            print("error: only children keys run together; give other keys one at a time",
                  file=sys.stderr)  # fmt: skip
            return 2
        from ntkpaper import store
        from ntkpaper.jobs import execute, execute_together

        compilation_cache(store.runs_dir() / ".jax_cache")
        if len(args.key) == 1:
            execute(jobs[args.key[0]])
        else:
            execute_together([jobs[k] for k in args.key])
        return 0
    except Exception as e:  # every expected failure carries its cause and remedy
        from ntkpaper import data as data_lib
        from ntkpaper import store, train

        if isinstance(
            e, (P.ParamsError, data_lib.DatasetUnavailable, store.CorruptEntry, train.Diverged)
        ):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise

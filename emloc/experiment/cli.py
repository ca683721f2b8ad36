"""The `emloc` command: `emloc run [overrides]` (the same as `python run.py`), `emloc sweep plan|run <sweep>`
(a sweep file's runs by signature: done / to do / invalid; launch the unfinished valid ones), `emloc report <sweep>`
(tables and figures of a sweep) and `emloc bench [...]`.
"""

from __future__ import annotations

import runpy
import sys

from emloc.utils.storage import REPO

BENCH = REPO / "benchmarks" / "bench_compression.py"
USAGE = """usage: emloc {run,sweep,report,bench} [args]

  run [overrides] [-m]                                one experiment or a sweep, exactly like `python run.py`
  sweep plan <sweep> [--output-dir DIR] [--no-data]   every run of a sweep file: signature, done / todo / invalid
  sweep run <sweep> [overrides]                       launch its unfinished, valid runs (`python run.py -m ...`)
  report <sweep> [--output-dir DIR] [--out DIR] ...   tables (Markdown + CSV) and PNG figures of one sweep
  bench [--shots N ...] [--queries N] ...             compression / per-query cost benchmark (benchmarks/)

`emloc <command> --help` shows the options of a command."""


def run(overrides: list[str]) -> int:
    """`python run.py` under another name: the same config tree, overrides, sweeps and return value."""
    from emloc.experiment.runner import main as run_main
    from emloc.utils.storage import conf_dir

    conf = conf_dir()
    if not (conf / "config.yaml").is_file():
        print(
            f"emloc run: error: no Hydra config in {conf} (run from a checkout, or set EMLOC_CONF_DIR)", file=sys.stderr
        )
        return 2
    return run_main(overrides)


def sweep(args: list[str]) -> int:
    """`emloc sweep plan <sweep>`: the planner's table; `emloc sweep run <sweep> [overrides]`: the sweep through the
    planned sweeper (only unfinished, valid points are launched)."""
    import argparse

    from emloc.utils.storage import sweeps_dir

    ap = argparse.ArgumentParser(prog="emloc sweep")
    ap.add_argument("action", choices=("plan", "run"))
    ap.add_argument("sweep", help="sweep file (path under sweeps/, e.g. smoke/main_table) or its sweep_name")
    ap.add_argument("--output-dir", help="where runs are looked up (default: the sweep's paths.output_dir)")
    ap.add_argument("--no-data", action="store_true", help="plan: do not load task data (signatures only)")
    ns, overrides = ap.parse_known_args(args)
    from emloc.experiment.sweeps import find, plan_sweep

    try:
        path = find(ns.sweep)
    except FileNotFoundError as err:
        print(f"emloc sweep: error: {err}", file=sys.stderr)
        return 2
    if ns.action == "run":
        name = str(path.relative_to(sweeps_dir()).with_suffix(""))
        return run(["-m", "--config-dir", str(sweeps_dir()), "--config-name", name, *overrides])
    plan = plan_sweep(str(path), ns.output_dir, check_data=not ns.no_data)
    print(plan.table())
    return 2 if plan.count("invalid") else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "run":
        return run(rest)
    if command == "sweep":
        return sweep(rest)
    if command == "report":
        from emloc.experiment.report import main as report_main

        return report_main(rest)
    if command == "bench":
        if not BENCH.is_file():
            print(
                f"emloc bench: error: {BENCH} not found (the benchmark ships with the repository checkout, "
                "not with an installed wheel)",
                file=sys.stderr,
            )
            return 2
        saved = sys.argv
        sys.argv = [str(BENCH), *rest]
        try:
            runpy.run_path(str(BENCH), run_name="__main__")
        except SystemExit as e:  # argparse --help / errors
            return e.code if isinstance(e.code, int) else 0
        finally:
            sys.argv = saved
        return 0
    print(f"emloc: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The `emloc` command: `emloc run [overrides]` (the same as `python run.py`), `emloc report <sweep> [...]`
(tables and figures of a sweep) and `emloc bench [...]`.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_compression.py"
USAGE = """usage: emloc {run,report,bench} [args]

  run [overrides] [-m]                                one experiment or a sweep, exactly like `python run.py`
  report <sweep> [--output-dir DIR] [--out DIR] ...   tables (Markdown + CSV) and PNG figures of one sweep
  bench [--shots N ...] [--queries N] ...             compression / per-query cost benchmark (benchmarks/)

`emloc <command> --help` shows the options of a command."""


def run(overrides: list[str]) -> int:
    """`python run.py` under another name: the same config tree, overrides, sweeps and return value."""
    from emloc.runner import conf_dir
    from emloc.runner import main as run_main

    conf = conf_dir()
    if not (conf / "config.yaml").is_file():
        print(
            f"emloc run: error: no Hydra config in {conf} (run from a checkout, or set EMLOC_CONF_DIR)", file=sys.stderr
        )
        return 2
    run_main(overrides)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "run":
        return run(rest)
    if command == "report":
        from emloc.report import main as report_main

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

"""One-line errors for `python run.py` and `emloc run`: a config or data error is printed as ONE line naming the
key, the value and the fix, and the process exits 2; `HYDRA_FULL_ERROR=1` shows the full traceback instead.

* `one_line(err)` — the line for a config or data error, or None for anything else: Hydra composition errors (an
  unknown key in a group file, a value of the wrong type, an unknown option, a bad override) and the runner's
  `ConfigError` (bad values, missing data: `emloc.experiment.config`).
* `guard(main)` — calls a `@hydra.main` function with Hydra's own error printing off (it would print the chained
  tracebacks of its wrappers before the line that matters), prints `one_line` and returns 2; any other error is
  raised with its full traceback. `exit_if_config_error(err)` does the same from inside a single run's task
  function (`runner.job`), before Hydra adds its "Error executing job" line.

It deliberately does not decide what is valid (that is the schemas' and the method classes' job) and never
swallows an error it cannot name: those keep their traceback and exit 1.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emloc.experiment.config import ConfigError

FULL_ERROR = "HYDRA_FULL_ERROR"


def _config_dirs(argv: list[str]) -> list[Path]:
    """The folders a config path may live in: --config-dir / -cd of `argv`, then the package's conf/."""
    from emloc.utils.storage import conf_dir

    dirs = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    return [*dirs, conf_dir()]


def _file(config_path: str, argv: list[str]) -> str:
    """`task/mytask` → the YAML file that defines it (first match on the search path), else `task/mytask.yaml`."""
    for d in _config_dirs(argv):
        path = (d / f"{config_path}.yaml").expanduser()
        if path.is_file():
            return str(path.resolve())
    return f"{config_path}.yaml"


def _field(text: str, name: str) -> str | None:
    match = re.search(rf"{name}[:=] ?(\S+)", text)
    return match[1] if match else None


def one_line(err: BaseException, argv: list[str] | None = None) -> str | None:
    """The one-line message of a config or data error; None when `err` is neither."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    argv = list(sys.argv[1:] if argv is None else argv)
    cause = err
    while not isinstance(cause, ConfigError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, ConfigError):
        return f"config error: {cause}"
    if not isinstance(err, (HydraException, OmegaConfBaseException, MissingConfigException)):
        return None
    text = "\n".join(str(e) for e in (err, err.__cause__) if e is not None)
    where = re.search(r"In '([^']+)'", text)
    source = (
        f" in {_file(where[1], argv)}" if where and where[1] != "config" and not where[1].startswith("hydra/") else ""
    )
    key = _field(text, "full_key")
    if m := re.search(r"Key '([^']+)' not in '(\w+)'", text):  # an unknown key: in a group file or an override
        group = (key or "").split(".")[0]
        from emloc.experiment.config import SCHEMAS, keys

        known = f"; {group} keys: {', '.join(keys(group))}" if group in SCHEMAS else ""
        plus = "" if source else f", or add it on purpose with +{key}=..."
        return f"config error: unknown key `{key or m[1]}`{source}. Fix: remove or rename it{known}{plus}"
    if m := re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", text):
        return (f"config error: {key}={m[1]}{source}: not a valid {m[2]}. "
                f"Fix: give {key} a value of type {m[2].lower()}")  # fmt: skip
    if m := re.search(r"Could not find '([^']+)'", text):
        group = m[1].rsplit("/", 1)[0]
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        hint = f"use one of {', '.join(options)}" if options else f"check the options of `{group}`"
        return f"config error: no config `{m[1]}`{source}. Fix: {hint} ({group}=<option>)"
    if m := re.search(r"Missing mandatory value: ?(\S+)", text):
        return f"config error: {m[1]}=??? has no value{source}. Fix: set {m[1]}=<value>"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("object_type")]
    return "config error: " + " ".join(lines)


_state = {"full_error": False}  # whether the user asked for tracebacks (guard sets HYDRA_FULL_ERROR for Hydra)


def exit_if_config_error(err: BaseException, argv: list[str] | None = None) -> None:
    """Inside a single run's task function: print `err`'s one line and exit 2 if it is a config or data error (and
    tracebacks were not asked for). Hydra would otherwise add an "Error executing job" line; in a sweep (multirun)
    this does nothing, so one bad job never stops the others."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if _state["full_error"] or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return
    line = one_line(err, argv)
    if line is not None:
        print(line, file=sys.stderr)
        raise SystemExit(2)


def guard(main: Callable[[], Any], argv: list[str] | None = None) -> int:
    """Run `main` (a `@hydra.main` function, called without arguments); 2 after printing the one line of a config or
    data error, else 0. `HYDRA_FULL_ERROR=1` keeps every traceback."""
    saved = os.environ.get(FULL_ERROR)
    _state["full_error"] = saved == "1"
    os.environ[FULL_ERROR] = "1"  # Hydra re-raises instead of printing its wrappers' tracebacks: we print
    try:
        main()
    except Exception as err:
        line = None if _state["full_error"] else one_line(err, argv)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2
    finally:
        if saved is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = saved
    return 0

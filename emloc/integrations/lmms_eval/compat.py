"""Workarounds for two lmms-eval bugs that break native `multiple_choice` and `loglikelihood` tasks.

TEMPORARY: remove this module (and its `apply()` call in `model.EMLoCLMM.__init__`) once lmms-eval is fixed.

**Applies to** lmms-eval `>=0.7,<0.8` (`AFFECTED`; the code was read in 0.7, 0.7.2 and 0.7.3, the version `make install`
pins). Other versions are left untouched; if a later version still stringifies log-likelihoods, `apply()` warns.

**Bug 1: log-likelihoods turned into strings.** Since 0.7 the evaluator passes every model response through
`lmms_eval.api.instance.unwrap_generation_output`, written for `generate_until` output. Anything that is not text
(or text plus token counts) comes back as `str(response)`. So the `(log-likelihood, is_greedy)` pairs every
lmms-eval model returns for `loglikelihood` requests reach `ConfigurableTask.process_results` as strings like
`"(3.2, False)"`, and `multiple_choice` scoring (`lls, is_greedy = zip(*results)`) fails with
`ValueError: too many values to unpack (expected 2)`. 0.6.1 did not have this function.
Workaround: that function is wrapped so that a `(float, bool)` pair (a tuple, or the list the response cache gives
back) passes through as a tuple with no token counts. Every other response goes to the original function
unchanged. `lmms_eval.evaluator` imports the function by name, so the name bound there is replaced too, or picks
up the wrapper if the evaluator is imported later. Tasks with their own `process_results` get the pairs too:
`task.EmlocTask` used to take the argmin of the strings, which ranks "(10.2, False)" before "(9.5, False)".

**Bug 2: the `loglikelihood` result list is not unwrapped.** For `output_type: loglikelihood` the built-in
`ConfigurableTask.process_results` does `ll, is_greedy = results`. But the evaluator passes a list with one
response per request, and there is one request per document. So it fails with `ValueError: not enough values to
unpack (expected 2, got 1)` for every model (the code is the same in 0.6.1). lm-evaluation-harness, where this
code comes from, takes `results[0]` first.
Workaround: for a `loglikelihood` task scored by the built-in code (no `process_results` of its own), a
one-element result list holding a `(float, bool)` pair is replaced by that pair before the original runs.

What this module does NOT do: it changes no other request type, response shape or metric. In particular it does not
fix lmms-eval's sign conventions. `multiple_choice` takes the argmin, so models return a loss, and the `perplexity`
aggregation of `loglikelihood` tasks then reports `exp(-mean(loss))`. It does not fix `acc_mutual_info` either,
whose unconditional requests carry no task arguments, which the emloc model needs.

`apply()` is idempotent: it runs each time an `EMLoCLMM` is built and patches only once.
"""

from __future__ import annotations

import functools
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

log = logging.getLogger(__name__)

AFFECTED = SpecifierSet(">=0.7,<0.8")
_MARK = "_emloc_compat"  # set on every wrapper this module installs
_PROBE = (1.5, False)


def installed_version() -> str | None:
    try:
        return version("lmms-eval")
    except PackageNotFoundError:
        return None


def affected(lmms_version: str | None) -> bool:
    """Whether lmms-eval `lmms_version` is one this module patches."""
    try:
        return lmms_version is not None and Version(lmms_version) in AFFECTED
    except InvalidVersion:
        return False


def _is_pair(value: Any) -> bool:
    """A `loglikelihood` response: `(log-likelihood or loss, is_greedy)` as a tuple, or as a list after caching."""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and isinstance(value[0], float)
        and isinstance(value[1], bool)
    )


def _stringifies(unwrap) -> bool:
    return isinstance(unwrap(_PROBE)[0], str)


def _wrap_unwrap(original):
    @functools.wraps(original)
    def unwrap_generation_output(output: Any):
        if _is_pair(output):
            return tuple(output), None
        return original(output)

    setattr(unwrap_generation_output, _MARK, True)
    return unwrap_generation_output


def _wrap_process_results(original):
    @functools.wraps(original)
    def process_results(self, doc, results, *args, **kwargs):
        if (
            getattr(self, "OUTPUT_TYPE", None) == "loglikelihood"
            and not callable(getattr(self.config, "process_results", None))
            and isinstance(results, list)
            and len(results) == 1
            and _is_pair(results[0])
        ):
            results = tuple(results[0])
        return original(self, doc, results, *args, **kwargs)

    setattr(process_results, _MARK, True)
    return process_results


def is_applied() -> bool:
    """Whether both workarounds are installed in this process."""
    from lmms_eval.api import instance
    from lmms_eval.api.task import ConfigurableTask

    return all(getattr(f, _MARK, False) for f in (instance.unwrap_generation_output, ConfigurableTask.process_results))


def apply() -> bool:
    """Install both workarounds if the installed lmms-eval is `AFFECTED` (idempotent); returns `is_applied()`."""
    from lmms_eval.api import instance
    from lmms_eval.api.task import ConfigurableTask

    current = installed_version()
    if not affected(current):
        unwrap = getattr(instance, "unwrap_generation_output", None)  # absent before 0.7
        if current is not None and unwrap is not None and _stringifies(unwrap):
            log.warning(
                "lmms-eval %s stringifies (log-likelihood, is_greedy) responses but emloc.integrations.lmms_eval."
                "compat only patches lmms-eval %s: native multiple_choice tasks will fail",
                current,
                AFFECTED,
            )
        return False
    if not getattr(instance.unwrap_generation_output, _MARK, False):
        instance.unwrap_generation_output = _wrap_unwrap(instance.unwrap_generation_output)
        log.info("emloc: lmms-eval %s unwrap_generation_output patched: log-likelihood pairs pass through", current)
    evaluator = sys.modules.get("lmms_eval.evaluator")  # it imported the function by name: rebind it there
    if evaluator is not None and hasattr(evaluator, "unwrap_generation_output"):
        evaluator.unwrap_generation_output = instance.unwrap_generation_output
    if not getattr(ConfigurableTask.process_results, _MARK, False):
        ConfigurableTask.process_results = _wrap_process_results(ConfigurableTask.process_results)
        log.info("emloc: lmms-eval %s ConfigurableTask.process_results patched for loglikelihood tasks", current)
    return is_applied()

"""`emloc.integrations.lmms_eval.compat`: the lmms-eval 0.7.x workarounds are installed once, only on affected
versions, and change nothing but `(float, bool)` log-likelihood responses. The end-to-end regression tests (native
multiple_choice and loglikelihood tasks) are in test_lmms_eval_native.py."""

import logging
from types import SimpleNamespace

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is the optional [eval] extra (make install)")

from emloc.integrations.lmms_eval import compat

needs_affected = pytest.mark.skipif(
    not compat.affected(compat.installed_version()), reason="the installed lmms-eval is not one compat patches"
)


def test_version_guard():
    assert compat.affected("0.7") and compat.affected("0.7.2") and compat.affected("0.7.3")
    assert not any(map(compat.affected, ("0.6.1", "0.8.0", "1.0", "not-a-version", None)))


@needs_affected
def test_apply_is_idempotent_and_rebinds_the_evaluator():
    from lmms_eval import evaluator
    from lmms_eval.api import instance
    from lmms_eval.api.task import ConfigurableTask

    assert compat.apply() and compat.is_applied()
    unwrap, process = instance.unwrap_generation_output, ConfigurableTask.process_results
    assert compat.apply()
    assert instance.unwrap_generation_output is unwrap and ConfigurableTask.process_results is process
    assert evaluator.unwrap_generation_output is unwrap  # the name the evaluator calls
    for f in (unwrap, process):  # one layer: the wrapped function is lmms-eval's own
        assert not getattr(f.__wrapped__, compat._MARK, False)


@needs_affected
def test_only_loglikelihood_pairs_pass_through_unwrap():
    from lmms_eval.api import instance

    compat.apply()
    unwrap = instance.unwrap_generation_output
    # the lmms-eval bug compat works around; when this fails, lmms-eval is fixed and compat can go
    assert unwrap.__wrapped__((3.25, False)) == ("(3.25, False)", None)
    assert unwrap((3.25, False)) == ((3.25, False), None)
    assert unwrap([3.25, True]) == ((3.25, True), None)  # the response cache hands back lists
    for other in ("text", ["a", "b"], (1, 2), (3.25, "x"), (True, False), (3.25, False, 1), {"a": 1}, 3.25):
        assert unwrap(other) == unwrap.__wrapped__(other)


@needs_affected
def test_process_results_unwraps_only_builtin_loglikelihood_scoring():
    from lmms_eval.api.task import ConfigurableTask

    compat.apply()
    seen = []

    def task(output_type, own=None):
        return SimpleNamespace(
            OUTPUT_TYPE=output_type,
            config=SimpleNamespace(process_results=own),
            _metric_fn_list={"perplexity": None, "acc": None},
        )

    assert ConfigurableTask.process_results(task("loglikelihood"), {}, [(2.5, True)]) == {"perplexity": 2.5, "acc": 1}
    own = task("loglikelihood", lambda doc, results: seen.append(results) or {})
    ConfigurableTask.process_results(own, {}, [(2.5, True)])  # a task's own process_results gets what it always got
    assert seen == [[(2.5, True)]]


def test_unaffected_versions_are_left_alone_with_a_warning(monkeypatch, caplog):
    from lmms_eval.api import instance

    original = getattr(instance.unwrap_generation_output, "__wrapped__", instance.unwrap_generation_output)
    monkeypatch.setattr(instance, "unwrap_generation_output", original)
    monkeypatch.setattr(compat, "installed_version", lambda: "0.8.0")
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        assert not compat.apply()
    assert instance.unwrap_generation_output is original
    assert "native multiple_choice tasks will fail" in caplog.text

"""Progress bars fall back to periodic log lines when stderr is not a terminal (SLURM logs)."""

import io
import logging

from emloc.utils import progress


def test_log_lines_instead_of_a_bar_when_not_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a tty, and no notebook kernel in this process
    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    caplog.set_level(logging.INFO, logger="emloc.utils.progress")
    bar = progress.progress(range(4), desc="compress", interval=0)
    assert isinstance(bar, progress.LogProgress)
    assert list(bar) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("compress: 1/4 (25%)") and lines[-1].startswith("compress: 4/4 (100%)")
    assert lines[-1].endswith("(done)") and "\r" not in "".join(lines)


def test_updates_are_rate_limited_and_resume_from_initial(caplog):
    caplog.set_level(logging.INFO, logger="emloc.utils.progress")
    bar = progress.LogProgress(total=100, initial=40, desc="queries", interval=3600)
    for _ in range(60):
        bar.update(1)
    bar.close()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["queries: 100/100 (100%)"]

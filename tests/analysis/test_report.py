"""emloc.experiment.report on real tiny-model runs: the three sources agree, aggregation over demo seeds, the CLI's files and
its messages for missing or partial sweeps."""

import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from emloc.analysis import loading
from emloc.experiment import report

SEEDS, DELTAS = (0, 1), (0.01, 0.05)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """Four finished tiny runs of sweep `t` (2 JS thresholds x 2 demo seeds), each with its W&B offline file."""
    from emloc.experiment import runner
    from tests.conftest import compose

    root = tmp_path_factory.mktemp("runs")
    for seed in SEEDS:
        for delta in DELTAS:
            runner.run(
                compose(
                    [
                        "debug=tiny",
                        "logger=wandb_offline",
                        "sweep_name=t",
                        f"task.demo_seed={seed}",
                        f"method.js_threshold={delta}",
                    ],
                    root,
                )
            )
    return root


@pytest.fixture(scope="module")
def wandb_runs(out):
    """What the four W&B offline files hold (read once: each read is one `wandb leet inspect` process)."""
    return [report.read_wandb_run(p) for p in sorted({p.resolve() for p in out.glob("runs/*/wandb/*/run-*.wandb")})]


def sweeps_dir(tmp_path, seeds=SEEDS):
    """A sweep file declaring sweep `t` (the grid the fixture ran, or a bigger one)."""
    d = tmp_path / "sweeps"
    d.mkdir(exist_ok=True)
    (d / "t.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /config\n  - override /debug: tiny\n  - _self_\n"
        "sweep_name: t\nhydra:\n  sweeper:\n    params:\n"
        f"      method.js_threshold: {','.join(map(str, DELTAS))}\n      task.demo_seed: {','.join(map(str, seeds))}\n"
    )
    return d


def test_run_folders_and_wandb_offline_files_give_the_same_rows(out, wandb_runs, monkeypatch):
    """Real offline `run-*.wandb` files written by real runs, read back without wandb, give the run folders' rows."""
    by_path = {}
    for r in wandb_runs:  # already read by the fixture: hand them back instead of re-running `wandb leet inspect`
        by_path[str(next(out.glob(f"runs/{r['summary']['signature']}/wandb/*/run-*.wandb")).resolve())] = r
    monkeypatch.setattr(loading, "read_wandb_run", lambda p: by_path[str(p)])
    folders, wandb_files = report.load_runs(out, "t"), report.load_wandb_offline(out, "t")
    pd.testing.assert_frame_equal(folders, wandb_files, check_exact=True)
    assert len(folders) == len(SEEDS) * len(DELTAS) and folders["signature"].is_unique
    assert set(folders["method"]) == {"EMLoC, warm bisect search, answer rows only"} and set(
        folders["method_option"]
    ) == {"emloc"}
    assert set(folders["method.js_threshold"]) == set(DELTAS)
    for key in report.METRICS:
        assert key in folders
    run = json.loads((out / "runs" / folders["signature"][0] / "metrics.json").read_text())
    assert folders.loc[0, "accuracy"] == run["accuracy"] and folders.loc[0, "retention"] == run["retention"]


def test_wandb_api_rows_are_normalised_like_the_others(out, wandb_runs, monkeypatch):
    """The public API returns the same summary/config dicts as the offline files (W&B media entries included)."""
    assert len(wandb_runs) == 4 and {r["state"] for r in wandb_runs} == {"finished"}
    monkeypatch.setattr(
        "emloc.experiment.tracking.fetch_runs",
        lambda project, entity, group: [(r["summary"], r["config"], r.get("start_time", "")) for r in wandb_runs],
    )
    api = report.load_wandb_api("emloc", sweep="t")
    pd.testing.assert_frame_equal(api, report.load_runs(out, "t"), check_exact=True)


def test_aggregate_gives_mean_and_spread_over_demo_seeds(out):
    df = report.load_runs(out, "t")
    agg = report.aggregate(df, ["method.js_threshold"])
    assert list(agg["method.js_threshold"]) == list(DELTAS) and list(agg["n"]) == [2, 2]
    for _, row in agg.iterrows():
        acc = df.loc[df["method.js_threshold"] == row["method.js_threshold"], "accuracy"].tolist()
        assert row["accuracy_mean"] == pytest.approx(statistics.mean(acc))
        assert row["accuracy_std"] == pytest.approx(statistics.stdev(acc))
        assert (row["accuracy_min"], row["accuracy_max"]) == (min(acc), max(acc))
        half = 12.706 * statistics.stdev(acc) / math.sqrt(2)
        mean = statistics.mean(acc)
        assert (row["accuracy_ci_low"], row["accuracy_ci_high"]) == pytest.approx((mean - half, mean + half))
        assert row["seeds"] == "0 1"
    with pytest.raises(report.SweepError, match="method.js_threshold"):  # two runs per seed: a grid column is missing
        report.aggregate(df, ["method"])


def test_layer_frame_matches_the_memory(out):
    sweep = report.load_sweep(out, "t", sweeps_dir=sweeps_dir(out))
    lf = sweep.layers()
    for sig, rows in lf.groupby("signature"):
        stats = json.loads((out / "runs" / sig / "memory_stats.json").read_text())
        assert rows.groupby("layer")["kept"].sum().tolist() == stats["layer_lengths"]
        kinds = [c for c in rows if c.startswith("kept_")]
        assert (rows[kinds].sum(axis=1) - rows["kept"]).abs().max() < 1e-6


def test_cli_writes_tables_and_figures(out, tmp_path, capsys):
    dest = tmp_path / "report"
    args = ["t", "--output-dir", str(out), "--out", str(dest), "--sweeps-dir", str(sweeps_dir(tmp_path))]
    assert report.main(args) == 0
    assert "(complete)" in capsys.readouterr().out
    names = {p.name for p in dest.iterdir()}
    assert {
        "summary.md",
        "summary.csv",
        "runs.csv",
        "README.md",
        "accuracy_retention_vs_js_threshold.png",
        "kept_tokens_heatmap.png",
        "accepted_js_per_layer.png",
        "pruned_token_kinds.png",
        "cost_vs_accuracy_pareto.png",
    } <= names
    for png in dest.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    md = (dest / "summary.md").read_text()
    assert "±" in md and "accuracy (%)" in md and md.count("\n| 0.0") == 2
    csv = pd.read_csv(dest / "summary.csv")
    agg = report.aggregate(report.load_runs(out, "t"), ["method.js_threshold"])
    assert csv["accuracy_mean"].tolist() == pytest.approx(agg["accuracy_mean"].tolist())


def test_emloc_report_command_is_the_same_cli(out, tmp_path):
    """`emloc report ...` as an installed console script, in a fresh process (the strict check exits before drawing)."""
    exe = Path(sys.executable).parent / "emloc"
    args = [
        "report",
        "t",
        "--output-dir",
        str(out),
        "--out",
        str(tmp_path / "r"),
        "--strict",
        "--sweeps-dir",
        str(sweeps_dir(tmp_path, seeds=(0, 1, 2))),
    ]
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True)
    assert proc.returncode == 3 and "PARTIAL: 2 of 6" in proc.stderr and "Traceback" not in proc.stderr


def test_partial_sweep_names_what_is_missing(out, tmp_path, capsys):
    sweeps = sweeps_dir(tmp_path, seeds=(0, 1, 2))
    sweep = report.load_sweep(out, "t", sweeps_dir=sweeps)
    assert sweep.missing == ["method.js_threshold=0.01 task.demo_seed=2", "method.js_threshold=0.05 task.demo_seed=2"]
    assert "PARTIAL: 2 of 6" in sweep.status() and "method.js_threshold=0.05 task.demo_seed=2" in sweep.status()
    assert "Partial sweep: 2 expected runs missing" in report.summary_table(sweep).markdown()
    assert "partial" in report.figure(sweep, "cost_pareto").get_suptitle()  # figures say so too
    assert (
        report.main(
            ["t", "--output-dir", str(out), "--out", str(tmp_path / "s"), "--sweeps-dir", str(sweeps), "--strict"]
        )
        == 3
    )
    assert "PARTIAL: 2 of 6" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_unfinished_runs_are_named(out, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(out / "runs", copy / "runs", symlinks=True)
    started = copy / "runs" / "0123456789ab"
    started.mkdir()
    shutil.copy(next((out / "runs").glob("*/config.yaml")), started / "config.yaml")
    status = report.load_sweep(copy, "t", sweeps_dir=sweeps_dir(tmp_path)).status()
    assert "started but not finished (1): 0123456789ab" in status


def test_deleted_run_is_named_exactly(out, tmp_path):
    """Completeness is by signature: with one finished run removed, the report names exactly that grid point."""
    copy = tmp_path / "out"
    shutil.copytree(out / "runs", copy / "runs", symlinks=True)
    df = report.load_runs(copy, "t")
    gone = df[(df["task.demo_seed"] == 1) & (df["method.js_threshold"] == 0.05)]["signature"].item()
    shutil.rmtree(copy / "runs" / gone)
    sweep = report.load_sweep(copy, "t", sweeps_dir=sweeps_dir(tmp_path))
    assert sweep.expected == 4 and sweep.missing == ["method.js_threshold=0.05 task.demo_seed=1"]


def test_main_table_on_an_empty_folder_expects_every_task(tmp_path, capsys):
    """The paper's main table is 6 tasks x 3 methods x 3 seeds: every group of the grid counts (tasks too)."""
    assert report.main(["main_table", "--output-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "PARTIAL: 54 of 54 expected runs are missing" in err
    assert "task=ok_vqa method=emloc_paper task.demo_seed=1" in err and "task=youcook2 method=zero_shot" in err


def test_empty_or_unknown_sweep_is_a_clear_message_not_a_traceback(out, tmp_path, capsys):
    # a sweep file but no finished run: every expected run is named missing, with the command that runs it
    assert report.main(["smoke_ablate_chunk_size", "--output-dir", str(out), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "PARTIAL: 9 of 9 expected runs are missing" in err and "method.chunk_size=1 task.demo_seed=0" in err
    assert "--config-name smoke/ablate_chunk_size" in err and "Traceback" not in err
    # no sweep file and no run of that name: the sweeps that are present
    assert report.main(["nothing_here", "--output-dir", str(out), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "none of sweep 'nothing_here'" in err and "sweeps present: t (4 runs)" in err and "Traceback" not in err
    assert report.main(["t", "--output-dir", str(tmp_path / "nowhere")]) == 2
    assert "no run folders at" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_report_imports_neither_torch_nor_wandb():
    code = (
        "import sys, emloc.experiment.report, emloc.analysis.figures, emloc.analysis.tables, emloc.experiment.cli;"
        "print(sorted({'torch', 'wandb', 'hydra'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_emloc_command_dispatches(capsys):
    from emloc.experiment import cli

    assert cli.main(["bench", "--help"]) == 0
    assert "--shots" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_comparison_table_pairs_every_arm_with_full_context(tmp_path):
    """Real tiny runs of three arms on two demo seeds: each compressed arm gets its paired difference against full
    context on the same queries, with the candidate scores the runs kept."""
    from emloc.experiment import runner
    from tests.conftest import compose

    for seed in (0, 1):
        for method in ("full_context", "emloc", "snapkv"):
            runner.run(compose(["debug=tiny", "sweep_name=cmp", f"task.demo_seed={seed}", f"method={method}",
                                "task.num_queries=24"], tmp_path))  # fmt: skip
    sweep = report.load_sweep(tmp_path, "cmp")
    assert sweep.by == ["method"] and len(sweep.predictions) == 6 * 24
    assert sweep.predictions["scores"].map(len).eq(4).all()  # the synthetic task's 4 candidates, per query
    table = report.comparison_table(sweep)
    rows = dict(zip(table.frame["method"], table.frame["vs"]))
    assert rows == {"full context": "reference", "EMLoC, warm bisect search, answer rows only": "full context",
                    "SnapKV": "full context"}  # fmt: skip
    data = table.data.set_index(table.frame["method"])
    assert data.loc["SnapKV", "paired_queries"] == 24 and 0 <= data.loc["SnapKV", "paired_agreement_diff"] <= 1
    assert data.loc["SnapKV", "paired_seeds"] == 2 and len(data.loc["SnapKV", "paired_per_seed"].split(" / ")) == 2
    assert (
        data.loc["SnapKV", "paired_ci_low"] <= data.loc["SnapKV", "paired_diff"] <= data.loc["SnapKV", "paired_ci_high"]
    )
    assert "95 % CI" in table.notes and "[" in table.markdown()
    snap = sweep.runs[sweep.runs["method"] == "SnapKV"]  # against the full context: its own held-out JS, with a CI
    assert data.loc["SnapKV", "paired_js_queries"] == 8  # the synthetic task's 8 fidelity inputs: too few for a CI ...
    assert data.loc["SnapKV", "paired_js_diff"] == pytest.approx(snap["heldout_js"].mean())
    assert "8 common queries: no interval" in data.loc["SnapKV", "paired_js_note"]  # ... and the cell says so
    assert "8 common queries: no interval" in table.markdown()


def test_runs_outside_the_sweep_file_are_named_and_left_out(out, tmp_path):
    """A sweep file that changed after some runs (here: one JS threshold dropped) reports its own grid only, and names
    the finished runs of the same sweep_name it leaves out."""
    d = sweeps_dir(tmp_path)
    path = d / "t.yaml"
    path.write_text(path.read_text().replace(f"method.js_threshold: {','.join(map(str, DELTAS))}",
                                             f"method.js_threshold: {DELTAS[0]}"))  # fmt: skip
    sweep = report.load_sweep(out, "t", sweeps_dir=d)
    assert len(sweep.runs) == 2 and set(sweep.runs["method.js_threshold"]) == {DELTAS[0]} and not sweep.missing
    assert len(sweep.outside) == 2 and all(f"method.js_threshold={DELTAS[1]}" in o for o in sweep.outside)
    assert "left out: 2 finished runs" in sweep.status() and sweep.outside[0] in sweep.status()

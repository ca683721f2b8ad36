"""The analysis notebooks: stored clean and parameterised; executed headlessly (papermill, via analysis/run_all.sh)
on a tiny sweep of real tiny-model runs for every sweep file."""

import json
import os
import re
import subprocess

import pytest

from emloc.experiment import report
from emloc.utils.storage import REPO

ANALYSIS = REPO / "analysis"
# every notebook: one per top-level sweep file, plus the frontier (its sweeps: studies/frontier and smoke/frontier)
STEMS = sorted({p.stem for p in (REPO / "sweeps").glob("*.yaml")} | {"frontier"})
SEEDS = (0, 1)
# per sweep file: the tiny grid standing in for it (each point run for every seed)
GRIDS = {
    "main_table": [[f"method={m}"] for m in ("zero_shot", "full_context", "emloc_paper")],
    "ablate_js_threshold": [[f"method.js_threshold={d}"] for d in (0.01, 0.05)],
    "ablate_chunk_size": [[f"method.chunk_size={c}"] for c in (2, 4)],
    "ablate_shots": [
        [f"task.num_shots={n}", f"method={m}"] for n in (4, 8) for m in ("zero_shot", "full_context", "emloc_paper")
    ],
    "ablate_keep_ratios": [["method.keep_ratios=[0.2,0.5]"], ["method.keep_ratios=[0.5]"]],
    "e2e_targets": [
        [f"method={m}", "+match_retention_of=emloc_e2e", "eval.fidelity_layers=true"]
        for m in ("full_context", "emloc_e2e", "emloc_paper", "snapkv")
    ],
    "pruning_strategies": [
        [f"method={m}", "+match_retention_of=emloc_paper"]
        for m in (
            "full_context",
            "emloc_paper",
            "snapkv",
            "snapkv_protect",
            "h2o",
            "pyramidkv",
            "streamingllm",
            "kvzip",
            "expected_attention",
            "random",
        )
    ],
    "frontier": [
        ["method=full_context"],
        *(["method=kvzip_published", f"method.keep_ratio={r}", "method.block_tokens=64"] for r in (0.3, 0.6)),
        *(
            ["method=emloc_global", f"method.delta={d}", "method.tuning_inputs=8", "method.block_tokens=64"]
            for d in (0.01, 0.05)
        ),
    ],
}


def test_every_sweep_file_has_a_clean_parameterised_notebook():
    assert set(STEMS) == set(GRIDS) and STEMS
    for stem in STEMS:
        nb = json.loads((ANALYSIS / f"{stem}.ipynb").read_text())
        params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1, stem
        source = "".join(params[0]["source"])
        assert "output_dir =" in source and f'sweep_name = "smoke_{stem}"' in source
        for cell in nb["cells"]:
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{stem}.ipynb has outputs"
        code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        # the notebook draws what `emloc report` draws (report.FIGURES), in the same order
        assert re.findall(r'report\.figure\(sweep, "(\w+)"', code) == report.FIGURES[stem], stem
        imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
        assert imports and all(
            line.split()[1] in ("emloc.experiment.report", "pathlib") or line == "from emloc.experiment import report"
            for line in imports
        ), (stem, imports)  # analysis code imports only emloc.experiment.report


@pytest.mark.slow
def test_run_all_executes_every_notebook_on_real_runs(tmp_path):
    from emloc.experiment import runner
    from emloc.experiment.matching import Origin
    from emloc.utils.storage import conf_dir
    from tests.conftest import compose

    out = tmp_path / "outputs"
    for stem, grid in GRIDS.items():
        for point in grid:
            for seed in SEEDS:
                overrides = ["debug=tiny", f"sweep_name=tiny_{stem}", f"task.demo_seed={seed}", *point]
                runner.run(
                    compose(overrides, out), Origin(conf_dir(), "config", [*overrides, f"paths.output_dir={out}"])
                )
    dest = tmp_path / "executed"
    env = {**os.environ, "OUTPUT_DIR": str(out), "PREFIX": "tiny_", "DEST": str(dest), "MPLBACKEND": "Agg"}
    proc = subprocess.run(["bash", str(ANALYSIS / "run_all.sh")], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stem in STEMS:
        executed = json.loads((dest / f"{stem}.ipynb").read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (stem, errors)
        report_dir = dest / f"tiny_{stem}"
        pngs = sorted(report_dir.glob("*.png"))
        assert len(pngs) >= 3, (stem, pngs)
        for png in pngs:
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, png
        assert (report_dir / "summary.md").read_text().count("±") >= 2 and (report_dir / "summary.csv").is_file()
    assert (dest / "tiny_pruning_strategies" / "matched_retention.md").is_file()
    # a sweep without runs: the notebook fails (CI fails) with the message naming what is missing, no stack trace
    env["PREFIX"] = "absent_"
    proc = subprocess.run(["bash", str(ANALYSIS / "run_all.sh"), "main_table"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "SweepError: " in proc.stderr and "none of sweep 'absent_main_table'" in proc.stderr
    assert "sweeps present: tiny_" in proc.stderr

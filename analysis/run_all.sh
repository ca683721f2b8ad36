#!/usr/bin/env bash
# Execute the analysis notebooks headlessly with papermill; stops at the first failing notebook.
#
#   analysis/run_all.sh [stem ...]            # default: every analysis/*.ipynb
#
# Environment (all optional):
#   OUTPUT_DIR   where the runs are             (default: $EMLOC_OUTPUT or <repo>/outputs)
#   PREFIX       sweep_name = PREFIX + stem     (default: smoke_ ; use PREFIX= for the paper-scale sweeps)
#   DEST         executed notebooks go to DEST/<stem>.ipynb, tables and figures to DEST/<sweep_name>/
#                                               (default: <repo>/reports/executed)
#   PYTHON       the interpreter with emloc, papermill and ipykernel (default: <repo>/.venv/bin/python)
#   KERNEL       Jupyter kernel name            (default: python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
KERNEL="${KERNEL:-python3}"
OUTPUT_DIR="$(realpath -m "${OUTPUT_DIR:-${EMLOC_OUTPUT:-$REPO/outputs}}")"
PREFIX="${PREFIX-smoke_}"
DEST="$(realpath -m "${DEST:-$REPO/reports/executed}")"

if [ ! -x "$PYTHON" ]; then
  echo "run_all.sh: $PYTHON not found (make install, or set PYTHON=...)" >&2
  exit 2
fi
if ! "$PYTHON" -c "import papermill, ipykernel" 2>/dev/null; then
  echo "run_all.sh: papermill / ipykernel missing: $PYTHON -m pip install -e '.[dev]'" >&2
  exit 2
fi
# the kernel must be this interpreter's (a global python3 kernel would not see emloc)
if ! "$PYTHON" -m jupyter kernelspec list 2>/dev/null | grep -q "^ *$KERNEL .*$(dirname "$(dirname "$PYTHON")")"; then
  echo "installing the $KERNEL kernel of $PYTHON (--sys-prefix)"
  "$PYTHON" -m ipykernel install --sys-prefix --name "$KERNEL" >/dev/null
fi

if [ "$#" -gt 0 ]; then
  STEMS=("$@")
else
  STEMS=()
  for nb in "$HERE"/*.ipynb; do STEMS+=("$(basename "$nb" .ipynb)"); done
fi

mkdir -p "$DEST"
export MPLBACKEND=Agg HF_HUB_OFFLINE=1
for stem in "${STEMS[@]}"; do
  nb="$HERE/$stem.ipynb"
  [ -f "$nb" ] || { echo "run_all.sh: no notebook $nb" >&2; exit 2; }
  sweep="${PREFIX}${stem}"
  start=$(date +%s)
  echo "== $stem.ipynb  (sweep $sweep, runs in $OUTPUT_DIR)"
  # papermill from Python, so that a failing cell is reported by its error message (e.g. which sweep or runs are
  # missing), not by papermill's own stack trace
  if ! "$PYTHON" - "$nb" "$DEST/$stem.ipynb" "$KERNEL" "$HERE" "$OUTPUT_DIR" "$sweep" "$DEST/$sweep" <<'PY'
import sys
import papermill as pm
nb, out, kernel, cwd, output_dir, sweep, report_dir = sys.argv[1:]
try:
    pm.execute_notebook(nb, out, kernel_name=kernel, cwd=cwd, progress_bar=False,
                        parameters={"output_dir": output_dir, "sweep_name": sweep, "report_dir": report_dir})
except pm.PapermillExecutionError as e:
    print(f"   cell {e.exec_count} failed: {e.ename}: {e.evalue}", file=sys.stderr)
    sys.exit(1)
PY
  then
    echo "run_all.sh: $stem.ipynb failed (executed copy with the error: $DEST/$stem.ipynb)" >&2
    exit 1
  fi
  echo "   ok in $(( $(date +%s) - start )) s -> $DEST/$sweep/"
done

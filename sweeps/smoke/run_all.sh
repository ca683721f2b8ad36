#!/usr/bin/env bash
# Run every smoke sweep (`make smoke`): main_table first, then the others in two parallel lanes.
#
#   sweeps/smoke/run_all.sh [hydra overrides ...]      e.g. hydra/launcher=slurm
#
# Why lanes: on 2 CPU cores two single-threaded processes get through these small-model runs faster than one
# process with 2 threads, and they degrade gracefully when the cores are shared (2 OpenMP threads on a busy machine
# were measured 5x slower than 1). Why main_table first: it builds the task memories the other sweeps share (EMLoC,
# full context and zero-shot at 8 shots, seeds 0-2); after it, no two lanes build the same memory, so they never
# write the same cache entry. A new smoke sweep must be added to a lane below (the script refuses to run otherwise).
#
# Environment: SMOKE_LANES=1 runs everything in one process at a time (default 2); OMP_NUM_THREADS (default 1);
# EMLOC_OUTPUT (default outputs/); per-sweep logs go to $EMLOC_OUTPUT/smoke-logs/<sweep>.log.
# Finished runs are skipped, so a rerun does no work.
set -uo pipefail

FIRST="main_table"
# seconds on 1 thread each, two lanes on 2 otherwise idle cores (CI, 2026-12-06, 16-input held-out sets): main_table
# 130 | ablate_shots 134, pruning_strategies 210, ablate_js_threshold 90, ablate_keep_ratios 115, frontier 175 |
# ablate_chunk_size 251, e2e_targets 401 -> 857 s in all (with the default 64-input sets: ~35 min)
LANE_A="ablate_shots pruning_strategies ablate_js_threshold ablate_keep_ratios frontier"
LANE_B="ablate_chunk_size e2e_targets"

# run NAME...: each sweep in turn, its output in $LOGS/NAME.log; prints wall and CPU time per sweep
run() {
  local n rc
  for n in "$@"; do
    TIMEFORMAT="== smoke/$n: %0R s wall, %0U s user CPU, %0S s sys"
    { time "$PYTHON" run.py --config-dir sweeps --config-name "smoke/$n" "${OVERRIDES[@]}" >"$LOGS/$n.log" 2>&1; } 2>&1
    rc=$?
    if [ "$rc" != 0 ]; then
      echo "== smoke/$n FAILED (exit $rc); last lines of $LOGS/$n.log:" >&2
      tail -n 30 "$LOGS/$n.log" >&2
      return 1
    fi
  done
}

main() {
  cd "$(dirname "$0")/../.."
  PYTHON="${PYTHON:-.venv/bin/python}"
  LOGS="${EMLOC_OUTPUT:-outputs}/smoke-logs"
  OVERRIDES=("$@")
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  mkdir -p "$LOGS"
  local f n start=$SECONDS a b ra rb
  for f in sweeps/smoke/*.yaml; do
    n=$(basename "$f" .yaml)
    case " $FIRST $LANE_A $LANE_B " in
      *" $n "*) ;;
      *) echo "run_all.sh: sweeps/smoke/$n.yaml is in no lane" >&2; return 2 ;;
    esac
  done
  run $FIRST || return 1
  if [ "${SMOKE_LANES:-2}" = 1 ]; then
    run $LANE_A $LANE_B || return 1
  else
    run $LANE_A & a=$!
    run $LANE_B & b=$!
    wait $a; ra=$?
    wait $b; rb=$?
    [ "$ra" = 0 ] && [ "$rb" = 0 ] || return 1
  fi
  echo "== all smoke sweeps: $(( SECONDS - start )) s wall"
}

main "$@"; exit  # the whole file is read before anything runs: editing it during a run is safe

#!/usr/bin/env bash
# One-shot GPU benchmark: cascade seconds per case and training throughput, printed as one markdown table.
#
#   bash bench/gpu.sh                    # one CUDA GPU, under 10 minutes (an H200: see docs/benchmarks.md)
#   bash bench/gpu.sh --smoke            # anywhere, CPU too: tiny networks and phantoms, a few minutes
#   bash bench/gpu.sh --download-wheels  # where PyPI is reachable: the pure-Python dependencies into .whl/
#
# What it measures (full-width networks, random weights: the cost does not depend on the weights):
#   1. the cascade per case on a full-size 44 x 576 x 576 phantom (bench/predict_speed.py --cascade):
#      overlap 0.5 and 0, mirroring TTA on and off, stage 2 over the mask region and the whole volume;
#      the paper's RTX 4090 figures (with TTA): 20.80 s at step 0.5, 11.81 s at step 1.0 (overlap 0);
#   2. 200 training iterations of each bundle's train.json (bench/train_speed.py) with the loader as
#      configured, with bench/configs/no_cache_copy.json, with the random transforms on the GPU
#      (bench/configs/gpu_augmentation.json), and with one preloaded batch (no loader at all):
#      iterations per second, peak GPU memory, and the share of time spent waiting for data.
#
# Assumptions (nothing is fetched from the network):
#   - run from a checkout of this repository; the package is used from it (PYTHONPATH), not installed;
#   - a Python that imports torch, with CUDA unless --smoke: $PYTHON, else .venv/bin/python, else python3;
#   - the project's other dependencies (monai, nibabel, pytorch-ignite, fire, scipy, scikit-image, tqdm,
#     pillow) importable by it, or the missing ones as wheels in .whl/ (or $CASCADE_WHEELS): they are then
#     installed with pip --no-index into a scratch folder (torch is never installed);
#   - about 6 GB of free disk for phantoms and scratch files.
# Outputs go to $BENCH_OUT (default bench_gpu_out/): the table (gpu_table.md), the JSON lines and the logs.
# Steps that would start after $BENCH_BUDGET_S seconds (default 540) are skipped; the table still prints.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
MODE=full
case "${1:-}" in
  --smoke) MODE=smoke ;;
  --download-wheels) MODE=wheels ;;
  "") ;;
  *) echo "usage: bash bench/gpu.sh [--smoke | --download-wheels]" >&2; exit 2 ;;
esac
WHEELS=${CASCADE_WHEELS:-$REPO/.whl}
# Pure-Python packages the project needs beyond a PyTorch image (versions as tested here).
WHEEL_SPECS="monai==1.6.1 nibabel==5.4.2 pytorch-ignite==0.5.5 fire==0.7.1 termcolor==3.3.0"

if [ "$MODE" = wheels ]; then
  python3 -m pip download --no-deps --only-binary=:all: -d "$WHEELS" $WHEEL_SPECS
  echo "wheels in $WHEELS; carry that folder with the checkout"
  exit 0
fi

fail() { echo "bench/gpu.sh: $*" >&2; exit 1; }
PY=""
for candidate in ${PYTHON:-} "$REPO/.venv/bin/python" python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" 2>/dev/null; then PY=$candidate; break; fi
done
[ -n "$PY" ] || fail "no Python with torch found (set PYTHON=/path/to/python)"
if [ "$MODE" = full ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "$PY: torch $("$PY" -c 'import torch; print(torch.__version__)') sees no CUDA GPU (use --smoke to run on a CPU)"
fi
OUT=${BENCH_OUT:-$REPO/bench_gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
MODULES="monai nibabel ignite fire scipy skimage tqdm PIL"
missing() { "$PY" -c "
import importlib.util, sys
print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))" $MODULES; }
if [ -n "$(missing)" ]; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 \
    || fail "$PY lacks $(missing); put their wheels in $WHEELS (bash bench/gpu.sh --download-wheels where PyPI is reachable)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$OUT/site" "$WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:$OUT/site"
  [ -z "$(missing)" ] || fail "still missing after installing $WHEELS: $(missing)"
fi
"$PY" -c "import torch, monai; print(f'python {__import__(\"sys\").version.split()[0]}, torch {torch.__version__}, monai {monai.__version__}, '
          f'device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"CPU\"}')" | tee "$OUT/environment.txt"

rm -f "$OUT/cascade.jsonl" "$OUT/train.jsonl" "$OUT/failures.txt"
touch "$OUT/cascade.jsonl" "$OUT/train.jsonl"
SECONDS=0
BUDGET=${BENCH_BUDGET_S:-540}  # steps that would start later are skipped, so the table comes in time
if [ "$MODE" = full ]; then
  PHANTOM_ARGS=(--cases 2 --seed 0)
  CASCADE_ARGS=(--overlaps 0.5 0 --tta)
  # The loader as configured is measured over fewer iterations: it is the slow one.
  TRAIN_RUNS=("--modes config --iterations 60 --warmup 10" "--modes no_cache_copy gpu_augmentation preloaded --iterations 200 --warmup 20")
else
  PHANTOM_ARGS=(--cases 2 --seed 0 --shape 24 160 160 --spacing 2.5 1.25 1.25)
  CASCADE_ARGS=(--overlaps 0 --tta --regions "mask region" --width 0.5 --configs demo --shape 24 160 160 --spacing 2.5 1.25 1.25)
  TRAIN_RUNS=("--iterations 3 --warmup 1 --num_workers 1")
fi
step() {  # step NAME LOG COMMAND...: run unless over budget; a failure is noted, not fatal
  local name=$1 log=$2; shift 2
  if [ "$SECONDS" -ge "$BUDGET" ]; then echo "$name: skipped (over the ${BUDGET} s budget)" | tee -a "$OUT/failures.txt"; return; fi
  echo "== $name (at ${SECONDS} s)" >&2
  set +e
  "$@" 2>&1 | grep --line-buffered -v "Loading dataset" | tee -a "$log"
  local status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || echo "$name: failed with exit status $status (see $log)" | tee -a "$OUT/failures.txt"
}

step "cascade per case" "$OUT/cascade.log" \
  "$PY" bench/predict_speed.py --cascade --no_windows "${CASCADE_ARGS[@]}" --json "$OUT/cascade.jsonl"
step "phantoms for training" "$OUT/train.log" "$PY" -m cascade.cli phantom "$OUT/phantoms" "${PHANTOM_ARGS[@]}"
for stage in localizer segmenter; do
  configs=()
  [ "$MODE" = smoke ] && configs=(--configs "bundles/atria_$stage/configs/quick.json")
  for run in "${TRAIN_RUNS[@]}"; do
    # shellcheck disable=SC2086  # $run holds several options
    step "train $stage $run" "$OUT/train.log" \
      "$PY" bench/train_speed.py --stage "$stage" --data "$OUT/phantoms" $run "${configs[@]}" --json "$OUT/train.jsonl"
  done
done

"$PY" - "$OUT" "$MODE" "$SECONDS" <<'EOF' | tee "$OUT/gpu_table.md"
import json, sys
from pathlib import Path

out, mode, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
paper = {0.5: "20.80 s", 0.0: "11.81 s"}  # RTX 4090, with TTA (mirroring), per case
print((Path(out) / "environment.txt").read_text().strip() + f"; {mode} run, {seconds} s in all\n")
print("| benchmark | setting | result | peak GPU memory | waiting for data | paper (RTX 4090) |")
print("|---|---|---|---|---|---|")
for line in (out / "cascade.jsonl").read_text().splitlines():
    row = json.loads(line)
    setting = (f"overlap {row['overlap']:g}, TTA {'on' if row['tta'] else 'off'}, "
               f"stage 2 over {'mask region' if row['mask region'] else 'whole volume'}, width {row['width']:g}")
    reference = paper.get(row["overlap"], "") if row["tta"] else ""
    print(f"| cascade per case | {setting} | {row['seconds']:.2f} s | | | {reference} |")
for line in (out / "train.jsonl").read_text().splitlines():
    row = json.loads(line)
    setting = f"{row['mode']} ({row['workers']} workers, batch {row['batch']}, amp {row['amp']})"
    print(f"| train {row['stage']}, {row['iterations']} iterations | {setting} | {row['it/s']:.2f} it/s "
          f"| {row['peak GiB']:.1f} GiB | {row['wait share']:.0%} | ~11 it/s |")
failures = out / "failures.txt"
if failures.exists():
    print("\n" + failures.read_text().strip())
EOF

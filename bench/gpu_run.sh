#!/usr/bin/env bash
# The GPU figures of issue 16 in ONE call on a lent GPU machine (prepared here by bench/gpu_prepare.sh):
#   run(command="bash bench/gpu_run.sh", carry=[".whl", ".gpu_data"], timeout_s=600)
# It installs the carried wheels into /tmp/site, runs bench/gpu_mfu.py (MFU and the trial loop against
# the bare loop, ~125M params, compile on and off) and bench/gpu_packing.py (trials per hour with K = 1,
# 2, 4, 8 workers on the GPU, gpu-files on the carried books) in the time left, and leaves
# bench/RESULTS.md (their sections appended) and the logs in $OUT. Back here, append RESULTS.md's new
# sections to bench/RESULTS.md.
# Rehearsed on a CPU machine (2026-11-30: an image-like venv with transformers 5.17, huggingface_hub 1.33 and
# tokenizers 0.23.2; a stand-in nvidia-smi on PATH; WHEELS, default .whl, pointing at wheels for its Python):
#   GPU_RUN_SECONDS=420 OUT=/tmp/out WHEELS=/tmp/whl311 bash bench/gpu_run.sh   # ended on time, workers stopped
set -uo pipefail
END=$((SECONDS + ${GPU_RUN_SECONDS:-560}))  # the call's limit is 600 s: what is left of 560 goes to the packing
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${WHEELS:-.whl}"/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import nas, optuna, torch; print('nas ok; optuna', optuna.__version__, '; torch', torch.__version__)" \
  2>&1 | tee -a "$OUT/gpu.txt" || exit 1
timeout 240 python3 bench/gpu_mfu.py 2>&1 | tee "$OUT/gpu_mfu.log"
cp bench/RESULTS.md "$OUT/RESULTS.md"
# K = 1 and 8 first for both spaces, then 2 and 4; no search starts in the last 60 s, and a search still running
# at the end is stopped with its workers (the table so far stays in gpu_packing.md)
LEFT=$((END - SECONDS))
timeout "$LEFT" python3 bench/gpu_packing.py --ks 1,8,2,4 --trials 8 --deadline $((LEFT - 60)) --timeout 120 \
  --partial "$OUT/gpu_packing.md" --set 'data.files.paths=[".gpu_data/gutenberg/*_*.txt"]' --set pretrain.compile=false \
  2>&1 | tee "$OUT/gpu_packing.log"
cp bench/RESULTS.md "$OUT/RESULTS.md"

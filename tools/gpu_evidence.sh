#!/usr/bin/env bash
# The prepared GPU check (issues 18, 15, 12): run from the repository root on a lent GPU machine, as one
# call of at most 10 minutes. Rerunning it on the same machine resumes what a deadline cut off.
#   bash tools/gpu_evidence.sh [SECONDS] [--no-side]   (default 590: the whole call's budget; --no-side: only the
#   probe and the two 150-epoch paper runs, ~13 GPU minutes side by side, what a 15-minute session can afford)
# Needs, carried in .gpu/ (ignored by git): cifar10-jpeg.tar.gz and make_cifar10.py from ../shared/datasets,
# whl/ with jsonschema and its three dependencies (the GPU image lacks them), and commit (git rev-parse HEAD of
# the clean tree that travelled, since the copy has no .git). Results land in $OUT.
set -uo pipefail
budget=${1:-590}
side=${2:-}
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }

export PYTHONPATH="$PWD"
if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl; then
    export PYTHONPATH="/tmp/site:$PWD"
fi
export Q4BENCH_COMMIT="$(cat .gpu/commit 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader
python3 .gpu/make_cifar10.py /tmp/q4data >/dev/null && echo "data ready after $(( $(date +%s) - start )) s"

# Training evidence first (the paper runs need the most time); it ends early when every job is done, and only
# then, with time left, the bench.
python3 tools/gpu_evidence.py --data-dir /tmp/q4data --runs runs/gpu --bundle-dir "$OUT" \
    --deadline-s $(( $(left) - 15 )) $side 2>&1 | tee "$OUT/evidence.log"

# The bench on an otherwise idle GPU, if the time left allows it (SGEMM ceiling, interleaved fp32/bf16 arms,
# NVML energy, accuracy at the quick tier's budget).
if [ "$(left)" -gt 95 ]; then
    timeout $(( $(left) - 10 )) python3 -m suite bench --tier quick --profile gpu-cuda --data-dir /tmp/q4data \
        --no-download --out "$OUT/bench" 2>&1 | tail -25
else
    echo "bench skipped: $(left) s left"
fi
echo "wrapper done after $(( $(date +%s) - start )) s"

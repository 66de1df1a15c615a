#!/usr/bin/env bash
# The GPU checks of issue 4 in one short call on a lent device machine (H100/H200):
# the CUDA trainer tests and the trainer benchmark on CUDA (bf16 autocast), figures to $OUT.
#
# The device image has torch, numpy, pyyaml, pytest, hypothesis and pytest-timeout but not
# pydantic (the recipe types the trainer imports); carry its wheels. Once, here:
#     bash benchmarks/gpu_wheels.sh            # fills .whl/ (ignored by git)
# Then, with the device tool:
#     run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=420)
# Ray and Optuna are not installed there, so sweeps (fractional GPUs per Ray task) are not
# part of this check; the trainer is what runs on the GPU.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
status=0
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/train/test_cuda.py tests/train/test_fused.py 2>&1 | tee "$OUT/tests.log" || status=1
timeout 240 python3 benchmarks/trainer_throughput.py --quick --device cuda 2>&1 | tee "$OUT/benchmark.log" || status=1
exit $status

#!/usr/bin/env bash
# The GPU checks in one call, on any CUDA machine (written on H100/H200): the CUDA trainer
# tests and the trainer benchmark on CUDA (bf16 autocast); logs and figures go to $OUT.
#
#     OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh      # about 6 minutes
#
# It needs torch (a CUDA build), numpy, pyyaml, pytest, pytest-timeout, hypothesis and
# pydantic: the trainer itself runs on torch alone, but these tests and the benchmark build
# their trials from recipes. Without network access there, fetch pydantic's wheels on a
# machine that has it (bash benchmarks/gpu_wheels.sh fills .whl/, ignored by git) and copy
# .whl/ along with the repository: this script installs from it when present. Ray and Optuna
# are not needed: fractional GPUs are measured as Ray realises them (P trainer processes on one
# device, benchmarks/gpu_sharing.py), since Ray's wheel is too large to carry to such machines.
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
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/train/test_cuda.py tests/train/test_fused.py 2>&1 | tee "$OUT/tests.log" || status=1
timeout 200 python3 benchmarks/trainer_throughput.py --quick --device cuda 2>&1 | tee "$OUT/benchmark.log" || status=1
# Fractional GPUs: P trainings sharing the device, as Ray places trials that ask for gpus: 1/P.
timeout 120 python3 benchmarks/gpu_sharing.py --shares 1,2,4,8 2>&1 | tee "$OUT/sharing.log" || status=1
exit $status

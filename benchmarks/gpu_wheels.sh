#!/usr/bin/env bash
# pydantic's wheels for a CUDA machine without network access (Python 3.12, x86-64), saved
# to .whl/ for gpu_check.sh. Versions match this repository's tested environment.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
ls -la .whl

#!/usr/bin/env bash
# The wheels the lent GPU machine lacks for benchmarks/gpu.py, into dist/gpu-wheels (git-ignored), at most 64 MiB.
#
#     bash benchmarks/gpu_wheels.sh            # from the repository root, with network to the package index
#
# That machine (/work/.library/device/KINDS.md, nvidia-h200) has Python 3.12, torch 2.11 (CUDA 13), transformers
# 5.17, peft, accelerate, pandas, pyarrow, xxhash, huggingface-hub 1.33 and no network. What seektune's training
# path imports beyond that, found by tracing the imports of `gpu.py --dry-run`: trl, datasets (and its dill and
# multiprocess), pydantic (and pydantic-core, annotated-types, typing-inspection; typing-extensions because
# pydantic 2.14 needs >= 4.16), plus the optional liger-kernel and bitsandbytes (QLoRA), and seektune itself.
# Pins: the versions seektune's tests run with here (.venv), except datasets: 5.0.1 is the newest that accepts
# huggingface-hub < 2 and pyarrow >= 21 (5.1 wants pyarrow >= 24, and that machine's pyarrow is not recorded).
# bitsandbytes 0.50.2 carries libbitsandbytes_cuda130.so for torch's CUDA 13 build; it is 41 MiB of the total.
# No flash-attn: PyPI has no wheel for torch 2.11 / CUDA 13 (only a source package), so seektune's padding-free
# batches run sdpa per row there (seektune/train/packing.py).
#
# On the machine, the device tool's command starts with (README.md in benchmarks/, "gpu.py"):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       dist/gpu-wheels/*.whl && export PYTHONPATH=/tmp/site || exit
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=dist/gpu-wheels
LIMIT_MIB=64
WHEELS=(
    trl==1.16.0
    datasets==5.0.1
    dill==0.4.1
    multiprocess==0.70.19
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
    liger-kernel==0.8.5
    bitsandbytes==0.50.2
)

if ! git check-ignore -q "$OUT"; then
    echo "gpu_wheels.sh: $OUT is not git-ignored; wheels must not be committed" >&2
    exit 1
fi
rm -rf "$OUT"
mkdir -p "$OUT"
# --platform: pip matches manylinux_2_N exactly, so every N the machine's glibc accepts is named (device README).
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$OUT" "${WHEELS[@]}"
# seektune itself, from this checkout (pure Python; the venv's setuptools builds it without the network). The build
# leaves a build/ folder behind: removed unless it was there before.
had_build=$([ -e build ] && echo 1 || echo 0)
"$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation . -w "$OUT"
[ "$had_build" = 1 ] || rm -rf build

ls -l "$OUT"
total=$(du -cb "$OUT"/*.whl | tail -1 | cut -f1)
echo "gpu_wheels.sh: $(ls "$OUT"/*.whl | wc -l) wheels, $((total / 1024 / 1024)) MiB ($total bytes) in $OUT"
if [ "$total" -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
    echo "gpu_wheels.sh: over the device tool's $LIMIT_MIB MiB (the checkout travels in the same limit)" >&2
    exit 1
fi

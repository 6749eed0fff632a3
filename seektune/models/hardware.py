"""What machine this is, in the words that decide training speed: the GPU, or the CPU and its vector units.

    machine_summary()   # "NVIDIA H200" or "AMD EPYC, 2 cores, avx2 avx512f avx512_bf16"
    cpu_info()          # {"model", "instruction_sets", "cores"} (benchmarks record it with every figure)

The same training step runs about twice as fast on a CPU with AVX-512 as on one with AVX2 only, so an
estimate or a benchmark figure says which kind of machine it came from.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["CPU_FLAGS", "cpu_info", "machine_summary"]

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_info() -> dict:
    """The CPU's model name, the vector instruction sets of CPU_FLAGS it has (from /proc/cpuinfo on Linux;
    none listed elsewhere) and its core count."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"model": model, "instruction_sets": [f for f in CPU_FLAGS if f in flags], "cores": os.cpu_count()}


def machine_summary() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = cpu_info()
    return f"{cpu['model']}, {cpu['cores']} cores, {' '.join(cpu['instruction_sets']) or 'no AVX2'}"

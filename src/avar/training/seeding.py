"""One seed for Python, NumPy and PyTorch, so a training run can be repeated, and a record of
what else decides its floating-point results."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

KERNEL_PINS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
"""Environment variables that pin the CPU kernels PyTorch (ATen, MKL, oneDNN), OpenBLAS and NumPy
choose. The same seed gives the same run on the same kind of CPU; across kinds (AVX2 against
AVX-512) the kernels sum in another order and a run can differ by a test clip (the demo's
audio-only head: 0.617 on AVX2, 0.600 on AVX-512; docs/results.md). Set to AVX2's kernels, an AVX-512
machine trains the demo's AVAR-Net heads as an AVX2 one does (ONNX Runtime, which extracts the
video features there, has no such switch)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def numerics() -> dict:
    """What a trained run records beside its seed: the library versions, the CPU kernels
    PyTorch chose (``torch.backends.cpu.get_cpu_capability()``) and any :data:`KERNEL_PINS` set."""
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_pins": {name: os.environ[name] for name in KERNEL_PINS if name in os.environ},
    }


def describe_numerics(record: dict | None) -> str:
    """One line for reports: 'PyTorch 2.13.0+cpu, AVX512 kernels; pinned: MKL_CBWR=AVX2';
    runs saved before :func:`numerics` existed did not record it."""
    if not record:
        return "not recorded"
    pins = record.get("kernel_pins") or {}
    pinned = f"; pinned: {', '.join(f'{k}={v}' for k, v in pins.items())}" if pins else ""
    return f"PyTorch {record.get('torch', '?')}, {record.get('cpu_capability', '?')} kernels{pinned}"

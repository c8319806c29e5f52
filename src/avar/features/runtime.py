"""How a backbone runs: eager PyTorch (fp32 or bfloat16) or ONNX Runtime, chosen by measurement.

Every neural extractor is numpy preprocessing followed by one ``nn.Module`` (``net``) that maps
a float32 batch to ``[N, dim]`` features. ``TorchBackbone`` holds both and hands the module to
one of ``RUNTIMES``:

* ``torch``: eager fp32, the reference every other runtime is checked against.
* ``bf16``: a bfloat16 copy of the module (channels-last for images). Fast only on CPUs with
  native bfloat16 (``avx512_bf16`` / AMX); elsewhere PyTorch emulates it slowly.
* ``onnx``: the module exported to ONNX (``avar export``) and run by ONNX Runtime. The file is
  cached next to the weights, named by a digest of the weights, so a change of weights
  re-exports and an unchanged model is exported once.

``auto`` takes each extractor's ``fast_runtime``, what ``benchmarks/realtime.py`` measured
fastest on a 2-core CPU with features matching eager fp32 (cosine >= 0.999 per step).
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

RUNTIMES = ("torch", "bf16", "onnx")
ONNX_OPSET = 18
ONNX_DIR = "avar-onnx"
"""Folder, next to the weights, that holds a model's exported ONNX files."""


def user_cache_dir() -> Path:
    """``$AVAR_CACHE`` or ``~/.cache/avar``: for exports whose weights sit somewhere read-only."""
    return Path(os.environ.get("AVAR_CACHE") or Path.home() / ".cache" / "avar")


def bf16_native() -> bool:
    """True when this CPU computes bfloat16 natively (else the ``bf16`` runtime is emulated)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def weights_digest(net: nn.Module) -> str:
    """A short digest of every parameter and buffer: the identity of an exported model."""
    h = hashlib.sha1()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def calibrated_random_init(net: nn.Module, sample: Callable[[], torch.Tensor], batches: int = 4) -> nn.Module:
    """Random weights with healthy activations, for timing an architecture without its weights.

    The transformers initialisers (normal, std 0.02) shrink MobileViT's activations into
    denormal floats within a few layers, which both zeroes the features and slows the CPU
    down. PyTorch's default initialisation plus batch-norm statistics measured on ``sample()``
    batches keeps every layer's output at a trained network's scale.
    """
    for module in net.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.reset_parameters()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            net(sample())
    return net.eval()


class TorchBackbone:
    """Base of the neural extractors: ``preprocess`` (numpy) then ``net`` under a runtime.

    Subclasses set ``net``, ``dim``, ``device`` and implement ``preprocess`` (checks the batch,
    returns float32) and ``export_example`` (a float32 input of the right shape with batch 2,
    plus the names of its dynamic axes).
    """

    name: str
    dim: int
    batch_size = 32
    fast_runtime = "onnx"
    """What ``runtime="auto"`` picks for this backbone (measured; see the module docstring)."""

    net: nn.Module
    device: torch.device
    weights_location: Path | None = None
    """File or folder the weights came from; exports are cached beside it when writable."""

    def preprocess(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def export_example(self) -> tuple[np.ndarray, dict[int, str]]:
        raise NotImplementedError

    @property
    def runtime(self) -> str:
        return getattr(self, "_runtime", "torch")

    def use_runtime(self, runtime: str = "auto", cache_dir: Path | None = None) -> "TorchBackbone":
        """Run ``net`` under ``runtime`` (one of ``RUNTIMES`` or ``auto``) from now on.

        ``onnx`` exports the model on first use (see ``onnx_path``); ``cache_dir`` overrides
        where the export is kept. Non-CPU devices keep eager PyTorch.
        """
        if runtime == "auto":
            runtime = self.fast_runtime
            if runtime == "bf16" and not bf16_native():
                runtime = "onnx"
            if self.device.type != "cpu":
                runtime = "torch"
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime '{runtime}'; choose one of: auto, {', '.join(RUNTIMES)}")
        if runtime != "torch" and self.device.type != "cpu":
            raise ValueError(f"runtime '{runtime}' runs on the CPU; use --runtime torch with device {self.device}")
        if runtime == "torch":
            self._engine = self._run_torch
        elif runtime == "bf16":
            self._bf16 = copy.deepcopy(self.net).to(torch.bfloat16)
            if self.export_example()[0].ndim == 4:
                self._bf16 = self._bf16.to(memory_format=torch.channels_last)
            self._engine = self._run_bf16
        else:
            path = self.onnx_path(cache_dir)
            if not path.is_file():
                self.export_onnx(path)
            self._session = onnx_session(path)
            self._engine = self._run_onnx
        self._runtime = runtime
        return self

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = self.preprocess(batch)
        out = np.empty((len(x), self.dim), dtype=np.float32)
        engine = getattr(self, "_engine", self._run_torch)
        for start in range(0, len(x), self.batch_size):
            out[start : start + self.batch_size] = engine(x[start : start + self.batch_size])
        return out

    @torch.inference_mode()
    def _run_torch(self, x: np.ndarray) -> np.ndarray:
        return self.net(torch.from_numpy(x).to(self.device)).float().cpu().numpy()

    @torch.inference_mode()
    def _run_bf16(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).to(torch.bfloat16)
        if t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return self._bf16(t).float().numpy()

    def _run_onnx(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"input": np.ascontiguousarray(x)})[0]

    def onnx_path(self, cache_dir: Path | None = None) -> Path:
        """Where this model's ONNX export lives: ``avar-onnx/<name>-<digest>.onnx`` next to the
        weights (a weights folder, or a weights file's folder) when writable, else in
        ``user_cache_dir()/onnx``."""
        if cache_dir is None:
            loc = self.weights_location
            folder = loc if loc is not None and loc.is_dir() else (loc.parent if loc is not None else None)
            cache_dir = folder / ONNX_DIR if folder is not None and os.access(folder, os.W_OK) else None
        cache_dir = cache_dir or user_cache_dir() / "onnx"
        return Path(cache_dir) / f"{self.name}-{weights_digest(self.net)}.onnx"

    def export_onnx(self, path: Path) -> Path:
        """Export ``net`` to ``path`` (batch, and any other dynamic axis, left free); atomic."""
        example, axes = self.export_example()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        net = copy.deepcopy(self.net).float().cpu().eval()
        try:
            with warnings.catch_warnings():
                # The TorchScript-based exporter is the one that handles the transformers
                # models quickly and exactly; its deprecation notice is not the user's concern.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net, (torch.from_numpy(example),), str(tmp), input_names=["input"], output_names=["features"],
                    dynamic_axes={"input": axes, "features": {0: "batch"}}, opset_version=ONNX_OPSET,
                    dynamo=False,
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


def onnx_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session using ``threads`` (default: PyTorch's thread count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads would otherwise spin on CPU that the decoder and the other backbone
    # need (spinning cost about 7% of end-to-end throughput on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise RuntimeError(
            f"{path}: cannot load the ONNX export ({err}); delete the file and rerun to export it again"
        ) from err

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
* ``int8``: that ONNX export statically quantised to int8 by ONNX Runtime (QDQ, weights per
  channel, activation ranges calibrated on real media: decoded frames or audio steps). The
  calibrated file sits beside the export, named by the weights digest and a digest of the
  calibration data (and the backbone's ``int8_settings``), so other weights or other
  calibration media give another file and a rerun reuses it.

``auto`` takes each extractor's ``fast_runtime``: a constant per backbone, the fastest runtime
in ``benchmarks/realtime.py`` / ``benchmarks/int8_acceptance.py`` on a 2-core CPU whose
features pass the bars (cosine >= 0.99 to eager fp32 on every step, and a head trained on
fp32 features keeps its decisions: clip accuracy and anomaly AUC within 0.5 points, per-step
anomaly scores' Spearman >= 0.99). Nothing is timed at run time.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from avar.files import atomic_path

RUNTIMES = ("torch", "bf16", "onnx", "int8")
ONNX_OPSET = 18
ONNX_DIR = "avar-onnx"
"""Folder, next to the weights, that holds a model's exported ONNX files."""

INT8_SETTINGS = {"activations": "uint8", "weights": "int8", "per_channel": True, "reduce_range": True,
                 "calibrate": "minmax"}
"""How ``int8`` quantises (``quantize_static``, QDQ) unless a backbone sets its own
``int8_settings``: ONNX Runtime's advice for x86 CPUs without VNNI, uint8 activations and
7-bit weights (``reduce_range``) against the saturation of the u8 x s8 instruction (AVX2's
``vpmaddubsw``). Measured on a 2-core AVX2 CPU without VNNI (min cosine to eager fp32, 8 steps
of the standard clip): MobileViT-small (random weights) 0.991 with it, 0.915 with signed
activations, about 0 (saturated) without ``reduce_range``."""
CALIBRATION_STEPS = 16
"""Steps (one per second) of each calibration file used by default."""
CALIBRATION_CLIP = "calibration-16s-1280x720-25fps-h264-2M-aac48k.mp4"
"""The default calibration media in ``user_cache_dir()/bench``: the first 16 s of the standard
bench clip's scene (``write_bench_clip``: the walkway with sensor noise, a siren from 5.3 s)."""

log = logging.getLogger(__name__)


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
    int8_settings: dict = INT8_SETTINGS
    """How the ``int8`` runtime quantises this backbone; part of the calibrated file's name."""
    int8_model: Path | None = None
    """The calibrated file the ``int8`` runtime runs, once chosen."""

    def preprocess(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def export_example(self) -> tuple[np.ndarray, dict[int, str]]:
        raise NotImplementedError

    @property
    def runtime(self) -> str:
        return getattr(self, "_runtime", "torch")

    def use_runtime(self, runtime: str = "auto", cache_dir: Path | None = None,
                    calibration: np.ndarray | None = None) -> "TorchBackbone":
        """Run ``net`` under ``runtime`` (one of ``RUNTIMES`` or ``auto``) from now on.

        ``onnx`` exports the model on first use (see ``onnx_path``); ``cache_dir`` overrides
        where the export is kept. ``int8`` also quantises the export on first use, calibrated
        on ``calibration``: a batch of raw inputs as ``__call__`` takes them (frames
        ``[N, H, W, 3]`` uint8 or waveforms ``[N, S]``, e.g. ``calibration_batch(self, files)``).
        Without it: the newest int8 model of these weights already made (``avar export --int8
        MEDIA``), else one calibrated on the first ``CALIBRATION_STEPS`` steps of
        ``default_calibration_media()``. Non-CPU devices keep eager PyTorch.
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
        elif runtime == "onnx":
            path = self.onnx_path(cache_dir)
            if not path.is_file():
                self.export_onnx(path)
            self._session = onnx_session(path)
            self._engine = self._run_onnx
        else:
            self.int8_model = self._int8_model(calibration, cache_dir)
            self._session = onnx_session(self.int8_model, remedy="delete the file and rerun to quantise the model again")
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
        net = copy.deepcopy(self.net).float().cpu().eval()
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # The TorchScript-based exporter is the one that handles the transformers
            # models quickly and exactly; its deprecation notice is not the user's concern.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net, (torch.from_numpy(example),), str(tmp), input_names=["input"], output_names=["features"],
                dynamic_axes={"input": axes, "features": {0: "batch"}}, opset_version=ONNX_OPSET,
                dynamo=False,
            )
        return path

    def _int8_model(self, calibration: np.ndarray | None, cache_dir: Path | None) -> Path:
        if calibration is None:
            export = self.onnx_path(cache_dir)
            made = sorted(export.parent.glob(f"{export.stem}-int8-*.onnx"), key=lambda p: p.stat().st_mtime_ns)
            if made:
                return made[-1]
            calibration = calibration_batch(self, [default_calibration_media()])
        path = self.int8_path(calibration, cache_dir)
        if not path.is_file():
            self.quantize_int8(path, calibration)
        return path

    def int8_path(self, calibration: np.ndarray, cache_dir: Path | None = None) -> Path:
        """Where the ``int8`` model calibrated on ``calibration`` lives: beside the ONNX export,
        ``<name>-<weights digest>-int8-<calibration digest>.onnx``."""
        export = self.onnx_path(cache_dir)
        return export.with_name(f"{export.stem}-int8-{calibration_digest(calibration, self.int8_settings)}.onnx")

    def quantize_int8(self, path: Path, calibration: np.ndarray) -> Path:
        """Quantise the ONNX export (made first if missing, in ``path``'s folder) to ``path``
        with ONNX Runtime's ``quantize_static`` (``int8_settings``), the activation ranges
        measured on ``calibration`` (raw inputs, as ``__call__`` takes them); atomic."""
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        export = self.onnx_path(path.parent)
        if not export.is_file():
            self.export_onnx(export)
        inputs = self.preprocess(calibration)

        class Batches(CalibrationDataReader):
            def __init__(self):
                self._batches = iter(range(0, len(inputs), CALIBRATION_BATCH))

            def get_next(self):
                start = next(self._batches, None)
                return None if start is None else {"input": inputs[start : start + CALIBRATION_BATCH]}

        log.info("%s: quantising to int8, calibrated on %d steps -> %s", self.name, len(inputs), path)
        types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
        settings = self.int8_settings
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmp, \
                atomic_path(path) as quantised:
            prepared = Path(tmp) / "prepared.onnx"
            # ONNX's own shape inference: ONNX Runtime's symbolic one gives up on the transformers
            # graphs (MobileViT, wav2vec2) and then leaves its temporary model in the working folder.
            quant_pre_process(str(export), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared), str(quantised), Batches(), quant_format=QuantFormat.QDQ,
                per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                activation_type=types[settings["activations"]], weight_type=types[settings["weights"]],
                calibrate_method=methods[settings["calibrate"]],
            )
        return path


CALIBRATION_BATCH = 8
"""Steps per calibration batch: the batch the runtimes are timed at."""


def calibration_digest(calibration: np.ndarray, settings: dict) -> str:
    """A short digest of calibration data (shape, type, values) and the quantisation settings."""
    data = np.ascontiguousarray(calibration)
    h = hashlib.sha1(f"{data.dtype}{data.shape}{sorted(settings.items())}".encode())
    h.update(data.tobytes())
    return h.hexdigest()[:12]


def calibration_batch(backbone: TorchBackbone, files: Iterable[Path | str], steps: int = CALIBRATION_STEPS,
                      step: float = 1.0) -> np.ndarray:
    """Real calibration inputs for ``backbone`` from media files: the first ``steps`` steps of
    each file, decoded as ``avar`` decodes them (a step's centre frame at the backbone's input
    size, uint8 ``[N, H, W, 3]``; or its 16 kHz audio, float32 ``[N, S]``, steps without sound
    left out)."""
    from avar.media.decode import iter_steps

    video = backbone.modality == "video"
    size = getattr(backbone, "input_size", None) if video else None
    files = [Path(f) for f in files]
    rows = []
    for path in files:
        for _, media in zip(range(steps), iter_steps(path, step, size)):
            if video and not media.video_missing:
                rows.append(media.frame)
            elif not video and not media.audio_missing:
                rows.append(media.audio)
    if not rows:
        names = ", ".join(str(f) for f in files) or "no files"
        raise ValueError(f"{names}: no {'frames' if video else 'sound'} to calibrate {backbone.name} on; "
                         f"give media files with a {'video' if video else 'audio'} stream")
    return np.stack(rows)


def default_calibration_media() -> Path:
    """``user_cache_dir()/bench/CALIBRATION_CLIP``, written once (a few seconds) and reused."""
    path = user_cache_dir() / "bench" / CALIBRATION_CLIP
    if not path.is_file():
        from avar.media.synth import write_bench_clip

        log.info("writing the default int8 calibration clip %s", path)
        write_bench_clip(path, seconds=CALIBRATION_STEPS)
    return path


def onnx_session(path: Path, threads: int | None = None,
                 remedy: str = "delete the file and rerun to export it again"):
    """An ONNX Runtime CPU session using ``threads`` (default: PyTorch's thread count); a file
    that cannot be loaded raises a ``RuntimeError`` naming it and ``remedy``."""
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
        raise RuntimeError(f"{path}: cannot load this ONNX model ({err}); {remedy}") from err



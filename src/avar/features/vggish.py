"""VGGish (Hershey et al., ICASSP 2017): the AudioSet audio embedding AVACA and XD-Violence use.

Written out in plain PyTorch with the module layout of ``harritaylor/torchvggish`` (``features``
/ ``embeddings``, optionally ``pproc``), so that project's converted state dict
(``vggish-10086976.pth``) or the same tensors as safetensors load with ``strict=True``. avar
ships no VGGish weights and never downloads them: pass the file with ``--audio-weights``.

The front end is the one of the reference ``vggish_input.py`` / ``mel_features.py``:
16 kHz audio, 25 ms periodic-Hann frames every 10 ms, |FFT| over 512 points, 64 mel bands
from 125 to 7500 Hz (HTK mel scale, triangles in the mel domain, DC bin dropped),
``log(mel + 0.01)``, then non-overlapping examples of 96 frames (0.96 s). The network maps
each ``[96, 64]`` example to 128 numbers; a step longer than one example gets the mean of its
examples' embeddings, a shorter one is zero-padded to one example (0.975 s of samples).

When the weights hold torchvggish's PCA parameters (``pproc.pca_eigen_vectors``,
``pproc.pca_means``), embeddings are post-processed as AudioSet's released ones are: PCA,
clipped to [-2, 2] and quantised to 0-255 (kept as float).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from avar.features.base import AUDIO_RATE, WeightsUnavailableError
from avar.features.runtime import TorchBackbone

WINDOW = 400
"""25 ms at 16 kHz."""
HOP = 160
"""10 ms at 16 kHz."""
N_FFT = 512
"""The smallest power of two holding a window."""
N_MELS = 64
MEL_LOW_HZ = 125.0
MEL_HIGH_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
"""Frames per example: 0.96 s."""
EXAMPLE_SAMPLES = WINDOW + (EXAMPLE_FRAMES - 1) * HOP
"""Samples one example needs (15600, 0.975 s)."""
EMBEDDING_DIM = 128
QUANTIZE_RANGE = (-2.0, 2.0)


def hertz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, ``1127 ln(1 + f / 700)``, as in the reference ``mel_features.py``."""
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = AUDIO_RATE,
               low_hz: float = MEL_LOW_HZ, high_hz: float = MEL_HIGH_HZ) -> np.ndarray:
    """``[n_fft // 2 + 1, n_mels]`` weights: triangles spaced evenly in mel, DC bin zeroed."""
    bins_mel = hertz_to_mel(np.linspace(0.0, rate / 2.0, n_fft // 2 + 1))
    edges = np.linspace(hertz_to_mel(low_hz), hertz_to_mel(high_hz), n_mels + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


_MEL = mel_matrix()
_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann


def log_mel_examples(waveform: np.ndarray) -> np.ndarray:
    """One 16 kHz mono waveform -> ``float32 [E, 96, 64]`` log-mel examples (E >= 1)."""
    x = np.asarray(waveform, dtype=np.float64)
    if x.size < EXAMPLE_SAMPLES:
        x = np.pad(x, (0, EXAMPLE_SAMPLES - x.size))
    n_frames = 1 + (x.size - WINDOW) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW)[::HOP][:n_frames]
    spectrum = np.abs(np.fft.rfft(frames * _WINDOW, N_FFT))
    log_mel = np.log(spectrum @ _MEL + LOG_OFFSET)
    n_examples = n_frames // EXAMPLE_FRAMES
    return log_mel[: n_examples * EXAMPLE_FRAMES].reshape(n_examples, EXAMPLE_FRAMES, N_MELS).astype(np.float32)


class Postprocessor(nn.Module):
    """AudioSet's PCA + quantisation of the embeddings (torchvggish ``pproc``)."""

    def __init__(self):
        super().__init__()
        self.pca_eigen_vectors = nn.Parameter(torch.eye(EMBEDDING_DIM), requires_grad=False)
        self.pca_means = nn.Parameter(torch.zeros(EMBEDDING_DIM, 1), requires_grad=False)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        pca = (self.pca_eigen_vectors @ (embeddings.t() - self.pca_means)).t()
        low, high = QUANTIZE_RANGE
        return torch.round((torch.clamp(pca, low, high) - low) * (255.0 / (high - low)))


class VGGish(nn.Module):
    """The VGG-like network: ``[N, 1, 96, 64]`` log-mel examples -> ``[N, 128]`` embeddings."""

    def __init__(self, postprocess: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for block in ((64,), (128,), (256, 256), (512, 512)):
            for width in block:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_DIM), nn.ReLU(inplace=True),
        )
        self.pproc = Postprocessor() if postprocess else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # Flatten in TensorFlow's NHWC order, which the converted fully connected weights expect.
        x = x.permute(0, 2, 3, 1).flatten(1)
        x = self.embeddings(x)
        return self.pproc(x) if self.pproc is not None else x


class _StepEmbedding(nn.Module):
    """``[N, E, 96, 64]`` examples of N steps -> ``[N, 128]``, the mean over each step's examples."""

    def __init__(self, model: VGGish):
        super().__init__()
        self.model = model

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        n, e = examples.shape[0], examples.shape[1]
        out = self.model(examples.reshape(n * e, 1, EXAMPLE_FRAMES, N_MELS))
        return out.reshape(n, e, -1).mean(dim=1)


class VGGishWeightsMissing(WeightsUnavailableError):
    """No VGGish weights file: avar ships none and never downloads one."""

    def __init__(self, reason: str):
        RuntimeError.__init__(
            self,
            f"cannot load weights for extractor 'vggish': {reason}\n"
            f"  fix: pass a local VGGish state dict with --audio-weights FILE: a .pth state dict (e.g. torchvggish's "
            f"vggish-10086976.pth, loaded with torch.load(weights_only=True), never unpickled) or the same tensors as "
            f".safetensors;\n  or use the offline audio extractor that ships with avar: --audio logmel.",
        )


def load_vggish_state(path: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of a VGGish weights file: safetensors, or a state dict read without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise VGGishWeightsMissing(f"'{path}' is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise several unrelated types for a bad file
        raise VGGishWeightsMissing(f"'{path}' is not a readable state dict ({err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VGGishWeightsMissing(f"'{path}' does not hold a state dict of tensors")
    return state


class VGGishExtractor(TorchBackbone):
    """Waveforms (16 kHz) -> 128-d VGGish embeddings, averaged over each step's 0.96 s examples.

    ``weights`` is a local file (required unless ``random_weights``, which builds the
    architecture untrained for tests and timing).
    """

    name = "vggish"
    modality = "audio"
    dim = EMBEDDING_DIM
    version = "1"
    default_source = "a local VGGish state dict (torchvggish layout); none bundled"
    preprocessing = ("16 kHz; 25 ms / 10 ms periodic-Hann STFT, 64 HTK mel bands 125-7500 Hz, log(mel + 0.01); "
                     "0.96 s examples, embeddings averaged per step")
    batch_size = 16
    fast_runtime = "onnx"

    @classmethod
    def available_offline(cls, weights: str | None = None) -> bool:
        """True when a weights file is given and exists (there is no default file)."""
        return bool(weights) and Path(weights).is_file()

    def __init__(self, weights: str | None = None, device: str = "cpu", random_weights: bool = False):
        if random_weights:
            model = VGGish()
        else:
            if not weights:
                raise VGGishWeightsMissing("no weights file given (avar does not bundle or download VGGish)")
            state = load_vggish_state(weights)
            model = VGGish(postprocess=any(k.startswith("pproc.") for k in state))
            try:
                model.load_state_dict(state)
            except RuntimeError as err:
                raise VGGishWeightsMissing(f"'{weights}' does not match the VGGish layout ({err})") from err
            self.weights_location = Path(weights)
        self.net = _StepEmbedding(model)
        self.device = torch.device(device)
        self.net.to(self.device).eval()

    @property
    def model(self) -> VGGish:
        return self.net.model

    def preprocess(self, waveforms: np.ndarray) -> np.ndarray:
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] == 0:
            raise ValueError(
                f"extractor '{self.name}' expects mono waveforms float32 [N, S] at {AUDIO_RATE} Hz, "
                f"got shape {list(waveforms.shape)}"
            )
        return np.stack([log_mel_examples(w) for w in waveforms])

    def export_example(self) -> tuple[np.ndarray, dict[int, str]]:
        return np.zeros((2, 1, EXAMPLE_FRAMES, N_MELS), np.float32), {0: "batch", 1: "examples"}

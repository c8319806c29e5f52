"""The eight spectral features of the acoustic model (Tariq et al., 2024, sec. 3.1.1), per frame.

Audio at 22,050 Hz is cut into frames of ``hop`` samples (one frame per video frame when
``hop = rate / fps``), and each frame gets 160 numbers, in this order:

==========  ======  ===========================================================
columns     count   feature (librosa)
==========  ======  ===========================================================
0           1       spectral flatness (0..1)
1           1       zero-crossing rate (crossings per sample)
2           1       spectral centroid (kHz)
3           1       spectral bandwidth (kHz)
4:24        20      MFCC 0-19 of the dB mel spectrogram
24:152      128     mel spectrogram, dB (power, 128 bands)
152         1       spectral roll-off, 85 % (kHz)
153:160     7       spectral contrast, 6 octave bands + the rest (dB)
==========  ======  ===========================================================

160 is the width of the paper's prediction layer (Table 2, layer 11), which is how the MFCC
and mel sizes were read. The features are then min-max normalised per column on the training
data (:class:`MinMaxNormalizer`) so that the autoencoder's sigmoid output can reach them.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

SPECTRAL_RATE = 22_050
"""Sample rate (Hz) of the acoustic model's input (sec. 3.1.1: 22 kHz)."""
N_FFT = 2048
N_MFCC = 20
N_MELS = 128
N_CONTRAST_BANDS = 6
SPECTRAL_DIM = 4 + N_MFCC + N_MELS + 1 + N_CONTRAST_BANDS + 1
"""160 features per frame."""
FEATURE_NAMES: tuple[str, ...] = (
    ("flatness", "zcr", "centroid_khz", "bandwidth_khz")
    + tuple(f"mfcc{k}" for k in range(N_MFCC))
    + tuple(f"mel{k}_db" for k in range(N_MELS))
    + ("rolloff_khz",)
    + tuple(f"contrast{k}_db" for k in range(N_CONTRAST_BANDS + 1))
)
_DB_FLOOR = 1e-10
"""Power floor under the mel dB, so silence gives -100 dB rather than -inf."""


def spectral_features(
    waveform: np.ndarray, rate: int = SPECTRAL_RATE, hop: int = 2205, n_frames: int | None = None
) -> np.ndarray:
    """``float32 [n_frames, 160]``: the eight features of each ``hop``-sample frame.

    ``waveform`` is mono ``[S]`` at ``rate`` Hz. Frame ``i`` is centred on sample ``i * hop``
    (librosa's ``center=True``), so with ``hop = rate / fps`` row ``i`` describes the sound
    around video frame ``i``. ``n_frames`` crops or repeats the last row to a fixed count
    (default ``1 + S // hop``). Silence gives finite values.
    """
    y = np.asarray(waveform, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"spectral_features expects a mono waveform [S], got shape {list(y.shape)}")
    if hop < 1:
        raise ValueError(f"hop must be >= 1 sample, got {hop}")
    if y.size < N_FFT:
        # librosa needs at least one full window; silence after the end changes no statistic's meaning.
        y = np.pad(y, (0, N_FFT - y.size))
    power = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=hop)) ** 2
    magnitude = np.sqrt(power)
    mel = librosa.feature.melspectrogram(S=power, sr=rate, n_mels=N_MELS)
    mel_db = 10.0 * np.log10(np.maximum(mel, _DB_FLOOR))
    columns = [
        librosa.feature.spectral_flatness(S=magnitude),
        librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=hop),
        librosa.feature.spectral_centroid(S=magnitude, sr=rate) / 1000.0,
        librosa.feature.spectral_bandwidth(S=magnitude, sr=rate) / 1000.0,
        librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC),
        mel_db,
        librosa.feature.spectral_rolloff(S=magnitude, sr=rate, roll_percent=0.85) / 1000.0,
        librosa.feature.spectral_contrast(S=magnitude, sr=rate, n_bands=N_CONTRAST_BANDS),
    ]
    t = min(c.shape[1] for c in columns)
    features = np.concatenate([c[:, :t] for c in columns], axis=0).T.astype(np.float32)
    features = np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)
    if n_frames is not None:
        if n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        if len(features) < n_frames:
            features = np.concatenate([features, np.repeat(features[-1:], n_frames - len(features), axis=0)])
        features = features[:n_frames]
    return features


@dataclass
class MinMaxNormalizer:
    """Per-column min-max scaling into [0, 1], fitted on training features.

    Values outside the training range map outside [0, 1] on purpose: they are exactly what
    the sigmoid decoder cannot reconstruct, so clipping them would hide anomalies.
    """

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, features: list[np.ndarray]) -> "MinMaxNormalizer":
        """Fit on ``[T_i, F]`` arrays (e.g. one per training video)."""
        if not features:
            raise ValueError("MinMaxNormalizer.fit needs at least one feature array")
        stacked = np.concatenate(features)
        return cls(stacked.min(0).astype(np.float32), stacked.max(0).astype(np.float32))

    def apply(self, features: np.ndarray) -> np.ndarray:
        # The floor keeps a constant column (e.g. silence-only training) at 0, not inf.
        span = np.maximum(self.high - self.low, 1e-6)
        return ((features - self.low) / span).astype(np.float32)

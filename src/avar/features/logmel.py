"""Hand-crafted audio statistics (log-mel, spectral shape, MFCC) that need no weights."""

from __future__ import annotations

import librosa
import numpy as np

from avar.features.base import AUDIO_RATE

N_FFT = 512
HOP = 160
"""10 ms at 16 kHz."""
WIN = 400
"""25 ms at 16 kHz."""
N_MELS = 64
FMIN_HZ = 20.0
CONTRAST_FMIN_HZ = 100.0
"""Lowest contrast band edge; with 6 octave bands the top edge (6.4 kHz) stays below Nyquist."""
N_CONTRAST_BANDS = 6
N_MFCC = 20
LOG_EPS = 1e-6
"""Floor under the mel power, so silence gives log(1e-6) instead of -inf."""


class LogMelExtractor:
    """Waveforms (16 kHz) -> 192 statistics over 10 ms frames, float32.

    Layout of each row (means over frames, then standard deviations over frames):

    - 0:64 / 64:128: log-mel power, 64 bands from 20 Hz (n_fft 512, win 400, hop 160);
    - 128:133 / 133:138: spectral flatness, zero-crossing rate, centroid (kHz),
      bandwidth (kHz), 85 % roll-off (kHz), in that order;
    - 138:145 / 145:152: spectral contrast, 6 octave bands from 100 Hz plus the rest (dB);
    - 152:172 / 172:192: MFCC 0-19 of the dB mel spectrogram.

    Frequencies are in kHz so that they sit near the other features' magnitudes. Silence
    gives finite values: every log has a floor.
    """

    name = "logmel"
    modality = "audio"
    dim = 2 * (N_MELS + 5 + N_CONTRAST_BANDS + 1 + N_MFCC)
    version = "1"
    default_source = "none (computed with librosa)"
    preprocessing = "16 kHz; 64-band log-mel, spectral shape, contrast, MFCC-20; mean+std over time"
    batch_size = 256

    @classmethod
    def available_offline(cls, weights: str | None = None) -> bool:
        """Always True: there are no weights."""
        return True

    def __init__(self, weights: str | None = None, device: str = "cpu"):
        if weights is not None:
            raise ValueError(
                f"extractor '{self.name}' has no weights; drop the weights argument ('{weights}')"
            )

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim != 2:
            raise ValueError(
                f"extractor '{self.name}' expects mono waveforms float32 [N, S] at {AUDIO_RATE} Hz, "
                f"got shape {list(waveforms.shape)}"
            )
        if waveforms.shape[1] < N_FFT:
            raise ValueError(
                f"extractor '{self.name}' needs at least {N_FFT} samples per step "
                f"({N_FFT / AUDIO_RATE * 1000:.0f} ms at {AUDIO_RATE} Hz), "
                f"got {waveforms.shape[1]}; use longer steps"
            )
        out = np.empty((len(waveforms), self.dim), dtype=np.float32)
        for start in range(0, len(waveforms), self.batch_size):
            rows = waveforms[start : start + self.batch_size]
            out[start : start + len(rows)] = self._statistics(rows)
        return out

    def _statistics(self, y: np.ndarray) -> np.ndarray:
        """``[n, S]`` waveforms -> ``[n, dim]``; librosa works on the whole batch at once."""
        sr = AUDIO_RATE
        magnitude = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP, win_length=WIN))
        mel = librosa.feature.melspectrogram(
            S=magnitude**2, sr=sr, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN_HZ
        )
        shape = np.stack(
            [
                librosa.feature.spectral_flatness(S=magnitude)[:, 0],
                librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP)[:, 0],
                librosa.feature.spectral_centroid(S=magnitude, sr=sr, n_fft=N_FFT)[:, 0] / 1000.0,
                librosa.feature.spectral_bandwidth(S=magnitude, sr=sr, n_fft=N_FFT)[:, 0] / 1000.0,
                librosa.feature.spectral_rolloff(S=magnitude, sr=sr, n_fft=N_FFT)[:, 0] / 1000.0,
            ],
            axis=1,
        )
        # One row at a time: spectral_contrast clips its dB values 80 dB below the maximum
        # of the whole array it gets, so a batched call would mix the steps together.
        contrast = np.stack(
            [
                librosa.feature.spectral_contrast(
                    S=m, sr=sr, n_fft=N_FFT, fmin=CONTRAST_FMIN_HZ, n_bands=N_CONTRAST_BANDS
                )
                for m in magnitude
            ]
        )
        # top_db=None: librosa's default clips against the maximum of the whole array,
        # which would make one step's features depend on the others in its batch.
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=N_MFCC)
        groups = [np.log(mel + LOG_EPS), shape, contrast, mfcc]
        stats = [stat for g in groups for stat in (g.mean(axis=-1), g.std(axis=-1))]
        return np.concatenate(stats, axis=1)

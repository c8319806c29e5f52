"""avar: audio-visual anomaly detection and recognition for surveillance video."""

__version__ = "0.1.0"

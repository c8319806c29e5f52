"""Training AVAR-Net heads on cached features, and the run directory they live in."""

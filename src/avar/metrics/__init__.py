"""Metrics: clip-level classification (numpy, checked against scikit-learn in the tests)."""

"""Datasets: which clips exist, their labels and splits."""

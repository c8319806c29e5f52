"""Figures for reports: confusion matrices, score-over-time curves, bar charts (matplotlib, Agg)."""

"""Evaluation: robustness sweeps, metrics and reports."""

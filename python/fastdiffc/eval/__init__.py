"""Evaluation: classical codecs, metrics, RD sweeps, BD-rate, plots."""

"""Reproducible experiments (`fastdiffc experiments ...`)."""

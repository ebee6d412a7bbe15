"""Training loops and data (patch datasets from image folders)."""

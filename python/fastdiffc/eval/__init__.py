"""Evaluation: classical codecs, metrics, RD sweeps, BD-rate, plots (`fastdiffc eval`, docs/design.md §9).

- `codecs`: JPEG, WebP, AVIF, HEIC, JPEG XL, JPEG 2000 through Pillow and its plugins.
- `metrics`: PSNR, MS-SSIM, SSIMULACRA2 and a weight-free realism distance.
- `bdrate`: Bjøntegaard delta rate and interpolation at fixed rates.
- `contenders`: classical codecs and fastdiffc pipelines behind one sweep interface.
- `sweep`: the resumable sweep writing points.csv; `report`: summary.md and RD plots.
- `images`: image folders and the development photos shipped in pip packages.
"""

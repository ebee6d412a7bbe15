"""Plot a run's training curve: `python -m fastdiffc.train.plot RUN_DIR [--gaussian BPD]`.

Reads RUN_DIR/loss.csv and RUN_DIR/eval.csv, writes RUN_DIR/curve.png against training minutes
(matplotlib, from the `eval` extra): a DiffC UNet run's training loss and held-out bits/dim; a
DIRAC run's (`--task dirac`) training loss and, on a second axis, its held-out 0-step PSNR gain."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_csv(path: Path) -> dict[str, list[float]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def plot_run(run_dir, out=None, gaussian_bpd: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    loss = read_csv(run_dir / "loss.csv")
    ev_path = run_dir / "eval.csv"
    ev = read_csv(ev_path) if ev_path.exists() else {}
    fig, ax = plt.subplots(figsize=(7, 4))
    minutes = [t / 60 for t in loss.get("elapsed_s", [])]
    if "loss_mse_x1e4" in loss:  # DIRAC: loss in MSE x 1e4, held-out score = minus the gain
        ax.plot(minutes, loss["loss_mse_x1e4"], lw=0.8, alpha=0.6, label="training loss (MSE × 1e4)")
        ax.set_ylabel("training loss (MSE × 1e4)")
        if ev:
            gain_ax = ax.twinx()
            gain_ax.plot([t / 60 for t in ev["elapsed_s"]], [-v for v in ev["neg_gain_db"]], "o-", color="C1",
                         label="held-out PSNR gain at 0 steps (EMA)")
            gain_ax.set_ylabel("held-out PSNR gain at 0 steps (dB)")
            gain_ax.legend(loc="lower right")
        ax.legend(loc="upper left")
    else:
        if loss:
            ax.plot(minutes, loss["loss_bpd"], lw=0.8, alpha=0.6, label="training loss (diffusion term, bits/dim)")
        if ev:
            ax.plot([t / 60 for t in ev["elapsed_s"]], ev["bpd"], "o-", label="held-out bits/dim (EMA)")
        if gaussian_bpd is not None:
            ax.axhline(gaussian_bpd, color="k", ls="--", lw=1, label="analytic Gaussian, held-out")
        ax.set_ylabel("bits/dim")
        ax.legend()
    ax.set_xlabel("training time (minutes)")
    ax.grid(alpha=0.3)
    out = Path(out) if out else run_dir / "curve.png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="plot loss.csv / eval.csv of a training run")
    p.add_argument("run_dir")
    p.add_argument("-o", "--out")
    p.add_argument("--gaussian", type=float, help="draw the Gaussian model's held-out bits/dim")
    a = p.parse_args(argv)
    print(plot_run(a.run_dir, a.out, a.gaussian))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Data-parallel training under torchrun (train/distributed.py): two local processes on gloo.

The replicas' parameters agree bit for bit after training, the ranks draw different batches
(two ranks drawing the same batch would average to the one-process gradient, hence the same
parameters as one process), and a resumed two-process run ends where an uninterrupted one does.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fastdiffc
import numpy as np
import pytest
from fastdiffc.cli import main
from fastdiffc.models.unet import UNet, UNetConfig
from fastdiffc.train import distributed
from PIL import Image

# Subprocesses import the fastdiffc this test imported (the source tree or the installed wheel).
PACKAGE_PARENT = Path(fastdiffc.__file__).resolve().parents[1]
TINY = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "groups": 4, "attn_head_dim": 8}
ARGS = ["--patch-size", "16", "--batch-size", "2", "--model-config", json.dumps(TINY), "--no-progress",
        "--ckpt-minutes", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp") / "data"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate(((40, 52), (33, 47), (64, 40))):
        small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).save(folder / f"img{i}.png")
    return folder


def _torchrun(data, run_dir, steps, *extra) -> dict:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun (from torch) is not on PATH"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "fastdiffc", "train", "--data", str(data),
           "--run-dir", str(run_dir), "--steps", str(steps), *ARGS, *extra]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"stdout:\n{out.stdout[-2000:]}\nstderr:\n{out.stderr[-3000:]}"
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, out.stdout  # rank 0 alone prints the result
    assert "2 processes (gloo), global batch 4" in out.stdout
    return json.loads(lines[0])


def _checkpoint_digest(run_dir) -> str:
    from safetensors.torch import load_file

    tensors = load_file(str(Path(run_dir) / "checkpoint.safetensors"))
    net = UNet(UNetConfig.from_dict(TINY))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    return distributed.parameter_digest(net)


def test_rank_seeds():
    assert distributed.rank_seed(0, 0) == 1 and distributed.rank_seed(7, 0) == 8  # rank 0 = one process
    assert len({distributed.rank_seed(0, r) for r in range(64)}) == 64


def test_two_processes_in_sync_and_resume(data, tmp_path):
    straight = _torchrun(data, tmp_path / "straight", 5)
    digests = straight["replica_digests"]
    assert straight["world_size"] == 2 and straight["step"] == 5
    assert len(digests) == 2 and digests[0] == digests[1]
    assert _checkpoint_digest(tmp_path / "straight") == digests[0]  # rank 0 wrote the replicas' parameters
    assert (tmp_path / "straight" / "loss.csv").exists()

    # interrupted after 3 steps, resumed to 5: the same parameters bit for bit
    first = _torchrun(data, tmp_path / "resumed", 3)
    assert first["replica_digests"][0] == first["replica_digests"][1] != digests[0]
    resumed = _torchrun(data, tmp_path / "resumed", 5, "--resume")
    assert resumed["replica_digests"] == digests

    # one process, same per-process batch: different parameters, so the two ranks drew different batches
    assert main(["train", "--data", str(data), "--run-dir", str(tmp_path / "one"), "--steps", "5", *ARGS]) == 0
    assert _checkpoint_digest(tmp_path / "one") != digests[0]

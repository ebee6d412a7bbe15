"""CDC: transforms + integer hyper-synthesis, the pipeline, determinism, bad input, training.

A tiny random model (torch seed 0, gains raised so its latents are not all zero; its ẑ tables
are Gaussian format tables, so they are integers independent of any float) keeps this fast.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import fastdiffc
import numpy as np
import pytest
import torch
from fastdiffc import container
from fastdiffc import entropy_models as em
from fastdiffc.cli import main
from fastdiffc.errors import (
    ChecksumError,
    DecodeBudgetError,
    FormatError,
    InvalidFieldError,
    ModelMismatchError,
    UnknownPipelineError,
)
from fastdiffc.image_io import psnr
from fastdiffc.models.cdc import CDCConfig, CDCModel
from fastdiffc.models.cdc_coding import decode_latents, encode_latents, hyper_params
from fastdiffc.pipelines import load_codec
from fastdiffc.pipelines.cdc import SOLVERS, CDCCodec, reconstruct
from PIL import Image

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "python" / "fastdiffc" / "samples" / "sample.png"
GOLDEN = Path(__file__).parent / "golden" / "cdc_v1_tiny_32x48.fdc"
# Subprocesses import the fastdiffc this test imported (the source tree or the installed wheel).
PACKAGE_PARENT = Path(fastdiffc.__file__).resolve().parents[1]


def photo(h=64, w=96) -> Image.Image:
    return Image.open(SAMPLE).convert("RGB").crop((120, 40, 120 + w, 40 + h))


def tiny_config() -> CDCConfig:
    unet = {**CDCConfig().unet, "base_channels": 16, "channel_mults": [1, 2], "attn_head_dim": 16}
    return CDCConfig(channels=16, latent_channels=24, hyper_channels=8, hyper_hidden=16,
                     lambdas=(0.002, 0.01, 0.05), unet=unet)


def tiny_model(seed=0) -> CDCModel:
    """Weights from numpy's PCG64, not torch's initialisers: torch's vectorised RNG kernels give
    other values under another ATEN_CPU_CAPABILITY, and the determinism test changes it."""
    m = CDCModel(tiny_config())
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in sorted(m.named_parameters()):
            constant = name.startswith(("log_", "prior_z.m", "prior_z.f")) or "norm" in name
            if constant or name.endswith((".beta", ".gamma")):
                continue  # constant initialisations (GDN, GroupNorm, gains, the prior's matrices and gates)
            if name.startswith("prior_z.biases"):
                v = rng.uniform(-0.5, 0.5, tuple(p.shape))
            elif p.ndim >= 2:
                v = rng.uniform(-1, 1, tuple(p.shape)) / np.sqrt(p[0].numel())
            else:
                v = rng.uniform(-0.05, 0.05, tuple(p.shape))
            p.copy_(torch.from_numpy(v))
        m.log_gain += 2.5  # latents of a few units, so every table and the escapes get used
        m.h_a[-1].weight *= 20.0  # a non-trivial hyper-latent
    m.eval().freeze()
    g = em.gaussian_tables()
    tabs = [g[24 + 3 * c] for c in range(m.config.hyper_channels)]  # integer tables, no float dependency
    width = max(len(t.freqs) for t in tabs)
    m.prior_z.table_offset = torch.tensor([t.offset for t in tabs], dtype=torch.int32)
    m.prior_z.table_len = torch.tensor([len(t.freqs) for t in tabs], dtype=torch.int32)
    m.prior_z.table_freqs = torch.tensor([list(t.freqs) + [0] * (width - len(t.freqs)) for t in tabs],
                                         dtype=torch.int32)
    m.requires_grad_(False)
    m.name = "tiny-cdc"
    m.content_hash = m.compute_content_hash()
    return m


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def codec(model):
    return CDCCodec(model, seed=7)


@pytest.fixture(scope="module")
def encoded(codec):
    return codec.compress(photo(), level=1)


# ----------------------------------------------------------------------------- the model


def test_latent_shapes_and_padding(model):
    z_shape, y_shape = CDCModel.latent_shapes(64, 96, model.config)
    assert z_shape == (8, 1, 2) and y_shape == (24, 4, 8)
    x = torch.zeros(1, 3, 50, 70)
    assert CDCModel.pad(x).shape[-2:] == (64, 128)


def test_integer_hyper_synthesis_tracks_float_and_ignores_it(model):
    """The fixed-point h_s approximates the float one, and the decoder's path never reads floats:
    perturbing the float weights (or the float output) changes no index or mean."""
    x = CDCModel.pad(torch.from_numpy(np.asarray(photo(), dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1)
    with torch.no_grad():
        y = model.analysis(x, 1)
        z_int = torch.round(model.h_a(y)).long()
        mean_i, idx = hyper_params(model, z_int)
        mean_f, t_f = model.h_s(z_int.float())
    assert (mean_i.double() / 256 - mean_f).abs().max() < 0.05
    agree = (torch.round(t_f.double() + 1e-6 * torch.randn_like(t_f.double())).clamp(0, 63).long() == idx)
    assert agree.float().mean() > 0.97
    saved = [c.weight.clone() for c in model.h_s.convs]
    try:
        with torch.no_grad():
            for c in model.h_s.convs:
                c.weight += 1e-6 * torch.randn_like(c.weight)
        mean_j, idx_j = hyper_params(model, z_int)
    finally:
        with torch.no_grad():
            for c, w in zip(model.h_s.convs, saved):
                c.weight.copy_(w)
    assert torch.equal(mean_i, mean_j) and torch.equal(idx, idx_j)


def test_latents_round_trip_exactly(model):
    x = CDCModel.pad(torch.from_numpy(np.asarray(photo(), dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1)
    with torch.no_grad():
        for level in range(model.config.levels):
            y = model.analysis(x, level)
            zs, ys, y_hat = encode_latents(model, y)
            assert torch.equal(decode_latents(model, zs, ys, 64, 96), y_hat)
            assert (y_hat - y).abs().max() <= 0.5 + 1e-5


def test_coded_size_matches_table_estimate(model):
    """The ŷ stream's size vs −Σ log2 P of the integer tables, escapes included (the match with the
    continuous likelihood on a realistic latent is test_entropy_models' job: a random model's scales
    fit its latents too badly for that)."""
    x = CDCModel.pad(torch.from_numpy(np.asarray(photo(128, 192), dtype=np.float32)).permute(2, 0, 1)[None] / 127.5
                     - 1)
    with torch.no_grad():
        y = model.analysis(x, 2)
        zs, ys, y_hat = encode_latents(model, y)
        z_int = torch.round(model.h_a(y)).long()
        mean_i, idx = hyper_params(model, z_int)
        q = (y_hat.double() - mean_i.double() / 256).round().long()
    est = em.estimate_bits(q.numpy(), idx.numpy(), em.gaussian_tables())
    assert abs(8 * len(ys) / est - 1) < 0.02, (8 * len(ys), est)


def test_save_load_registry(model, tmp_path):
    from fastdiffc.models.registry import content_hash, list_models, load_model

    path = tmp_path / "tiny-cdc.safetensors"
    model.save(path)
    assert [m.cls for m in list_models(tmp_path)] == ["cdc"]
    loaded = load_model("tiny-cdc", tmp_path)
    assert loaded.kind == "cdc" and loaded.content_hash == content_hash(path)
    for (k, a), (_, b) in zip(sorted(model.state_dict().items()), sorted(loaded.state_dict().items())):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="freeze"):
        CDCModel(tiny_config()).save(tmp_path / "x.safetensors")


# ----------------------------------------------------------------------------- the pipeline


def test_round_trip_every_level(codec, model):
    im = photo()
    sizes = []
    for level in range(model.config.levels):
        data = codec.compress(im, level=level)
        sizes.append(len(data))
        out = codec.decompress(data)
        assert out.size == im.size and out.mode == "RGB"
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    h = container.read_header(data)[0]
    assert h.pipeline == "cdc" and h.model("decoder").hash == model.content_hash
    assert CDCCodec.describe_params(h)["level"] == model.config.levels - 1


def test_bpp_ceiling_picks_largest_level(codec, model):
    im = photo()
    sizes = [len(codec.compress(im, level=lv)) for lv in range(model.config.levels)]
    px = im.size[0] * im.size[1]
    data = codec.compress(im, bpp=8 * (sizes[1] + 1) / px)
    assert len(data) == sizes[1]
    with pytest.raises(ValueError, match="smallest"):
        codec.compress(im, bpp=8 * (sizes[0] - 1) / px)


def test_decode_steps_and_eta(codec, model, encoded):
    _, h, level, seed, y_hat = codec.open(encoded)
    x_bar = model.mean_decode(y_hat, level)[:, :, :64, :96].clamp(-1, 1)
    assert torch.equal(reconstruct(model, y_hat, level, 64, 96, steps=0, seed=seed), x_bar)
    a = np.asarray(codec.decompress(encoded, decode_steps=2))
    assert np.array_equal(a, np.asarray(codec.decompress(encoded, decode_steps=2)))
    assert not np.array_equal(a, np.asarray(codec.decompress(encoded)))
    b = np.asarray(codec.decompress(encoded, decode_steps=2, eta=1.0))
    assert np.array_equal(b, np.asarray(codec.decompress(encoded, decode_steps=2, eta=1.0)))
    assert not np.array_equal(a, b)
    # η = 0 defaults to DPM-Solver++(2M); DDIM stays available and differs from step 3 on (the
    # first 2M step is first order, i.e. DDIM's); with one step both are the first model call.
    assert np.array_equal(a, np.asarray(codec.decompress(encoded, decode_steps=2, solver="dpmpp2m")))
    assert np.array_equal(a, np.asarray(codec.decompress(encoded, decode_steps=2, solver="ddim")))
    assert np.array_equal(np.asarray(codec.decompress(encoded, decode_steps=1)),
                          np.asarray(codec.decompress(encoded, decode_steps=1, solver="ddim")))
    c = reconstruct(model, y_hat, level, 64, 96, steps=4, seed=seed)
    assert not torch.equal(c, reconstruct(model, y_hat, level, 64, 96, steps=4, seed=seed, solver="ddim"))
    assert np.array_equal(b, np.asarray(codec.decompress(encoded, decode_steps=2, eta=1.0, solver="ddim")))
    with pytest.raises(ValueError, match="needs solver='ddim'"):
        codec.decompress(encoded, decode_steps=2, eta=0.5, solver="dpmpp2m")
    with pytest.raises(ValueError, match="solver"):
        codec.decompress(encoded, solver="euler")
    # both values can be written in an eval contender spec ("+" separates values there)
    from fastdiffc.eval.contenders import resolve_spec
    assert resolve_spec("cdc:decode_steps=4:solver=dpmpp2m+ddim").decode["solver"] == ("dpmpp2m", "ddim")


def test_decode_schedule_is_even_except_for_tuned_step_counts(model):
    """K model calls at λ_start + (λ_end − λ_start)·i/K, except a step count with a tuned grid
    (4: its own fractions of the range, ending at λ_end; the 2M solver's only, DDIM keeps the even
    grid of earlier releases); every grid starts from λ_start
    (where z_0 is pure noise) and increases strictly."""
    from fastdiffc.pipelines.cdc import TUNED_GRIDS, schedule

    lo, hi = model.config.logsnr_start, model.config.logsnr_end
    for k in (1, 2, 3, 5, 8, 64):
        assert schedule(model, k) == pytest.approx([lo + (hi - lo) * i / k for i in range(k)])
    for k, fractions in TUNED_GRIDS.items():
        grid = schedule(model, k)
        assert len(grid) == k and grid[0] == lo and grid[-1] == pytest.approx(hi)
        assert all(a < b for a, b in zip(grid, grid[1:]))
        assert grid == pytest.approx([lo + (hi - lo) * u for u in fractions])
        assert schedule(model, k, "ddim") == pytest.approx([lo + (hi - lo) * i / k for i in range(k)])


def test_dpm_solver_tracks_the_many_step_decode_better_than_ddim():
    """The point of the 2M default, on the shipped model (a property of the trained denoiser, not
    of the tiny random one): with 8 decode steps a sample-sized crop of a photo decodes closer to
    the 64-step decode — by either solver, so neither is favoured — than first-order DDIM does."""
    from fastdiffc.models.registry import load_model

    model = load_model("cdc")
    im = Image.open(Path(__file__).parent.parent / "python" / "fastdiffc" / "samples" / "sample.png").convert("RGB")
    codec = CDCCodec(model, seed=5)
    _, h, level, seed, y_hat = codec.open(codec.compress(im.crop((64, 64, 192, 160)), level=1))
    few_2m = reconstruct(model, y_hat, level, h.height, h.width, steps=8, seed=seed)
    few_ddim = reconstruct(model, y_hat, level, h.height, h.width, steps=8, seed=seed, solver="ddim")
    for solver in SOLVERS:
        ref = reconstruct(model, y_hat, level, h.height, h.width, steps=64, seed=seed, solver=solver)
        assert (few_2m - ref).pow(2).mean() < 0.5 * (few_ddim - ref).pow(2).mean(), solver



class _ScaledIdentityUNet(torch.nn.Module):
    """r̂(z) = 0.1 z: a stand-in UNet whose output depends on z only, not on the conditioning."""

    def forward(self, z, logsnr, cond):
        return 0.1 * z


@pytest.mark.parametrize("steps", [2, 5])
def test_sampler_moves_in_residual_space(model, codec, encoded, steps):
    """The UNet is trained on z = α·K(x − x̄) + σ·ε, so the DDIM steps must feed it the residual
    K(x̂ − x̄), never the image x̂: with a UNet that ignores the conditioning, x̂ − x̄ is then the
    same for any x̄ (a sampler that mixed x̂ into z would carry x̄ into the residual)."""
    import copy

    stub = copy.deepcopy(model)
    stub.unet = _ScaledIdentityUNet()
    _, _, level, seed, y_hat = codec.open(encoded)
    residuals = []
    for scale in (1.0, 0.5):  # two latents, two different mean decodes
        y = y_hat * scale
        x_bar = stub.mean_decode(y, level)[:, :, :64, :96]
        x = reconstruct(stub, y, level, 64, 96, steps=steps, seed=seed)
        inside = (x.abs() < 0.99) & (x_bar.abs() < 0.99)  # reconstruct clamps to [-1, 1]
        residuals.append(((x - x_bar) * inside, inside))
    (r1, m1), (r2, m2) = residuals
    both = m1 & m2
    assert both.float().mean() > 0.9
    assert torch.allclose(r1[both], r2[both], atol=1e-5)

def test_greyscale_round_trip(codec):
    out = codec.decompress(codec.compress(photo().convert("L"), level=0))
    assert out.mode == "L"


def test_knob_errors(codec):
    im = photo()
    with pytest.raises(ValueError, match="level must be in 0..2"):
        codec.compress(im, level=5)
    with pytest.raises(ValueError, match="level"):
        codec.compress(im, level=-1)
    with pytest.raises(ValueError, match="not both"):
        codec.compress(im, level=1, bpp=0.5)
    with pytest.raises(ValueError, match="decode knob"):
        codec.compress(im, decode_steps=2)
    with pytest.raises(ValueError, match="decode_steps"):
        codec.decompress(b"", decode_steps=65)
    with pytest.raises(ValueError, match="eta"):
        codec.decompress(b"", eta=2.0)
    with pytest.raises(ValueError, match="not a knob"):
        codec.compress(im, quality=3)
    with pytest.raises(ValueError, match="freeze"):
        CDCCodec(CDCModel(tiny_config()))
    assert isinstance(load_codec("cdc", tiny_model()), CDCCodec)


def _with_segments(data, segments=None, params=None, header=None):
    f = container.read(data)
    h = header or f.header
    if params is not None:
        h = container.Header(h.pipeline, h.models, h.height, h.width, h.channels, h.precision, h.params_version,
                             params)
    return container.write(h, segments if segments is not None else f.segments)


def test_bad_input(codec, encoded, model):
    f = container.read(encoded)
    with pytest.raises(ChecksumError):
        codec.decompress(encoded[:-5] + bytes([encoded[-5] ^ 1]) + encoded[-4:])
    with pytest.raises(FormatError):
        codec.decompress(encoded[:-3])
    with pytest.raises(FormatError):
        codec.decompress(b"not a file")
    with pytest.raises(InvalidFieldError, match="2 segments"):
        codec.decompress(_with_segments(encoded, segments=f.segments[:1]))
    with pytest.raises(InvalidFieldError, match="level"):
        codec.decompress(_with_segments(encoded, params=bytes([9, 7])))
    with pytest.raises(InvalidFieldError, match="level"):
        codec.decompress(_with_segments(encoded, params=bytes([40, 7])))
    with pytest.raises(InvalidFieldError, match="trailing"):
        codec.decompress(_with_segments(encoded, params=bytes([1, 7, 0])))
    dirac = container.Header("dirac", f.header.models, 64, 96, 3)
    with pytest.raises(UnknownPipelineError):
        codec.decompress(container.write(dirac, f.segments))
    big = container.Header("cdc", f.header.models, 40000, 40000, 3, params=f.header.params)
    with pytest.raises(DecodeBudgetError):
        codec.decompress(container.write(big, f.segments))
    other = tiny_model(seed=1)
    with pytest.raises(ModelMismatchError):
        CDCCodec(other).decompress(encoded)


def test_fuzz_streams(codec, encoded):
    """Bit flips and truncations inside the entropy-coded segments (checksums recomputed, so the
    flips reach the decoder): a FormatError, or a decode — never a crash or a hang."""
    f = container.read(encoded)
    rng = np.random.default_rng(5)
    errors = 0
    for trial in range(40):
        segs = [bytearray(s) for s in f.segments]
        k = trial % 2
        if not segs[k]:
            continue
        if trial % 5 == 4:
            segs[k] = segs[k][: rng.integers(0, len(segs[k]))]
        else:
            i = int(rng.integers(0, len(segs[k])))
            segs[k][i] ^= 1 << int(rng.integers(0, 8))
        try:
            codec.decompress(_with_segments(encoded, segments=[bytes(s) for s in segs]))
        except FormatError:
            errors += 1
    assert errors >= 30


# ----------------------------------------------------------------------------- determinism

_DETERMINISM_SCRIPT = r"""
import hashlib, json, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads({threads})
from test_cdc import tiny_model, photo
from fastdiffc.models.cdc import CDCModel
from fastdiffc.models.cdc_coding import encode_latents, hyper_params
from fastdiffc.pipelines.cdc import CDCCodec
m = tiny_model()
x = CDCModel.pad(torch.from_numpy(np.asarray(photo(128, 192), dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1)
with torch.no_grad():
    y = m.analysis(x, 2)
    z = torch.round(m.h_a(y)).long()
    mean, idx = hyper_params(m, z)
    zs, ys, y_hat = encode_latents(m, y)
data = CDCCodec(m).compress(photo(128, 192), level=2)
h = lambda t: hashlib.sha256(np.ascontiguousarray(t).tobytes()).hexdigest()[:16]
print(json.dumps({{"z": h(z.numpy()), "idx": h(idx.numpy()), "mean": h(mean.numpy()), "y_hat": h(y_hat.numpy()),
                  "bytes": h(np.frombuffer(data, np.uint8)), "threads": torch.get_num_threads()}}))
"""


def _run_determinism(threads, env_extra):
    path = str(PACKAGE_PARENT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = {**os.environ, **env_extra, "PYTHONPATH": path}
    code = _DETERMINISM_SCRIPT.format(tests=str(Path(__file__).parent), threads=threads)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_identical_latents_indices_and_bytes_across_threads_and_isas():
    runs = [_run_determinism(1, {}), _run_determinism(2, {}),
            _run_determinism(2, {"ATEN_CPU_CAPABILITY": "default"}),
            _run_determinism(2, {"ONEDNN_MAX_CPU_ISA": "AVX2"})]
    keys = ("z", "idx", "mean", "y_hat", "bytes")
    for r in runs[1:]:
        assert {k: r[k] for k in keys} == {k: runs[0][k] for k in keys}
    assert runs[0]["threads"] == 1 and runs[1]["threads"] == 2


# ----------------------------------------------------------------------------- golden file


def test_golden_file():
    """A CDC file of the tiny model: its latents decode exactly, and encoding the same photo
    today gives the same bytes (container v2, CDC parameters v1, both entropy streams)."""
    meta = json.loads(GOLDEN.with_suffix(".json").read_text())
    data = GOLDEN.read_bytes()
    assert hashlib.md5(data).hexdigest() == meta["fdc_md5"]
    m = tiny_model()
    codec = CDCCodec(m, seed=meta["seed"])
    _, h, level, seed, y_hat = codec.open(data)
    assert (h.height, h.width, level, seed) == (32, 48, meta["level"], meta["seed"])
    assert hashlib.sha256(y_hat.numpy().tobytes()).hexdigest() == meta["y_hat_sha256"]
    assert codec.compress(photo(32, 48), level=meta["level"]) == data


def _make_golden():  # pragma: no cover - run by hand: python tests/test_cdc.py
    m = tiny_model()
    codec = CDCCodec(m, seed=11)
    data = codec.compress(photo(32, 48), level=2)
    _, _, _, _, y_hat = codec.open(data)
    GOLDEN.write_bytes(data)
    GOLDEN.with_suffix(".json").write_text(json.dumps({
        "fdc_md5": hashlib.md5(data).hexdigest(), "y_hat_sha256": hashlib.sha256(y_hat.numpy().tobytes()).hexdigest(),
        "level": 2, "seed": 11, "bytes": len(data),
        "made_by": "tests/test_cdc.py::_make_golden (tiny_model(), photo(32, 48), level 2, seed 11)"}, indent=2) + "\n")


# ----------------------------------------------------------------------------- training


def test_training_smoke_checkpoint_resume_export(tmp_path):
    from fastdiffc.train.cdc import CDCTrainConfig, CDCTrainer

    data = tmp_path / "photos"
    data.mkdir()
    for i in range(2):
        photo(96, 96).rotate(90 * i).save(data / f"p{i}.png")
    cfg_kw = dict(data=str(data), heldout=str(data), batch_size=2, patch_size=64, scales=(1.0,), eval_patches=2,
                  eval_patch_size=64, progress=False, ckpt_minutes=0.0)
    cfg = CDCTrainConfig(run_dir=str(tmp_path / "rd"), max_steps=1, **cfg_kw)
    tr = CDCTrainer(cfg, tiny_config())
    res = tr.run()
    assert res["step"] == 1 and (tmp_path / "rd" / "ema.safetensors").exists()
    tr2 = CDCTrainer(CDCTrainConfig(run_dir=str(tmp_path / "rd"), max_steps=2, **cfg_kw), tiny_config())
    tr2.load_checkpoint(tmp_path / "rd" / "checkpoint.safetensors")
    assert tr2.step == 1 and torch.equal(tr2.net.g_a[0].weight, tr.net.g_a[0].weight)
    assert tr2.gen.get_state().equal(tr.gen.get_state())  # resuming replays the same batches
    diff = CDCTrainer(CDCTrainConfig(run_dir=str(tmp_path / "diff"), stage="diffusion", max_steps=1, **cfg_kw),
                      tiny_config())
    diff.init_weights(tmp_path / "rd" / "ema.safetensors")
    before = diff.net.g_a[0].weight.clone()
    diff.run()
    assert torch.equal(before, diff.net.g_a[0].weight)  # stage 1 frozen
    resumed = CDCTrainer(CDCTrainConfig(run_dir=str(tmp_path / "diff"), stage="diffusion", max_steps=2, **cfg_kw),
                         tiny_config())
    resumed.load_checkpoint(tmp_path / "diff" / "checkpoint.safetensors")  # frozen tables in the checkpoint
    assert resumed.step == 1
    model = CDCModel.load(tmp_path / "diff" / "ema.safetensors")
    out = CDCCodec(model).decompress(CDCCodec(model).compress(photo(), level=0), decode_steps=1)
    assert out.size == (96, 64)

    # a new encoder (the rd run continued) with the decoder of another model: each part from its file
    tr2.run()
    decoder = CDCModel.load(tmp_path / "diff" / "ema.safetensors")
    with torch.no_grad():  # a decoder that differs from every other file's
        decoder.unet.conv_in.weight.add_(1.0)
        decoder.cond_proj.weight.add_(1.0)
    decoder.save(tmp_path / "decoder.safetensors")
    mixed = CDCTrainer(CDCTrainConfig(run_dir=str(tmp_path / "mixed"), stage="diffusion", max_steps=1, **cfg_kw),
                       tiny_config())
    mixed.init_weights(tmp_path / "rd" / "ema.safetensors", decoder_from=tmp_path / "decoder.safetensors")
    new_rd = CDCModel.load(tmp_path / "rd" / "ema.safetensors")
    assert not torch.equal(new_rd.g_a[0].weight, model.g_a[0].weight)
    for m in (mixed.net, mixed.ema.model):
        assert torch.equal(m.g_a[0].weight, new_rd.g_a[0].weight)
        assert torch.equal(m.unet.conv_in.weight, decoder.unet.conv_in.weight)
        assert torch.equal(m.cond_proj.weight, decoder.cond_proj.weight)


def test_level_rates_recorded_and_listed(model, tmp_path, capsys, monkeypatch):
    """scripts/cdc_level_rates.py measures real files per level and writes them into the model
    file (tensors unchanged); `fastdiffc models` shows them."""
    import importlib.util

    from fastdiffc.models import registry

    spec = importlib.util.spec_from_file_location("cdc_level_rates", ROOT / "scripts" / "cdc_level_rates.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    weights, photos = tmp_path / "weights", tmp_path / "photos"
    weights.mkdir(), photos.mkdir()
    photo(96, 64).save(photos / "a.png")
    model.save(weights / "cdc.safetensors")
    assert script.main([str(weights / "cdc.safetensors"), "--photos", str(photos)]) == 0
    levels = registry.list_models(weights)[0].config["level_rates"]["levels"]
    reloaded = CDCModel.load(weights / "cdc.safetensors")  # named as the file: the header holds the name
    codec = CDCCodec(reloaded)
    for lv in levels:
        assert lv["bpp"] == pytest.approx(8 * len(codec.compress(photo(96, 64), level=lv["level"])) / (96 * 64),
                                          abs=1e-4)
    assert [lv["bpp"] for lv in levels] == sorted(lv["bpp"] for lv in levels)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(registry, "retired_weights_dir", lambda: None)  # only these weights
    capsys.readouterr()
    assert main(["models"]) == 0
    assert f"levels 0: {levels[0]['bpp']:.2f} bpp" in capsys.readouterr().out

if __name__ == "__main__":  # pragma: no cover
    _make_golden()


def test_cdc_shipped_model():
    """The shipped default CDC model: more bits buy more PSNR level by level, the deterministic
    decode is what the latents say, and a few diffusion steps stay close to it."""
    from fastdiffc.models.registry import WEIGHTS_DIR, default_model_name

    assert default_model_name("cdc") == "cdc"
    if not (WEIGHTS_DIR / "cdc.safetensors").exists():
        pytest.fail("the shipped CDC model weights/cdc.safetensors is missing")
    codec = load_codec("cdc")
    im = Image.open(SAMPLE).convert("RGB")
    ref = np.asarray(im)
    sizes, quality = [], []
    for level in range(codec.model_for_encoding().config.levels):
        data = codec.compress(im, level=level)
        sizes.append(len(data))
        quality.append(psnr(np.asarray(codec.decompress(data)), ref))
    assert sizes == sorted(sizes) and quality == sorted(quality), (sizes, quality)
    assert quality[-1] > quality[0] + 2.0
    data = codec.compress(im, level=2)
    steps4 = psnr(np.asarray(codec.decompress(data, decode_steps=4)), ref)
    assert abs(steps4 - quality[2]) < 1.5, (steps4, quality[2])

import json
import math

import numpy as np
import pytest
import torch
from fastdiffc.cli import main
from fastdiffc.codecs.learned import DIRAC_BASES
from fastdiffc.diffusion.vp import alpha_sigma
from fastdiffc.models.unet import UNetConfig
from fastdiffc.train.data import PatchDataset, tile_patches
from fastdiffc.train.elbo import LogSNRSampler, decoder_nll, elbo_bits_per_dim, prior_kl
from fastdiffc.train.loop import TrainConfig, Trainer
from PIL import Image

TINY = UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4, attn_head_dim=8)


def _smooth_images(folder, rng, sizes=((40, 52), (33, 47), (64, 40))):
    """Smooth colour images (low-pass noise): easy to denoise, so learning shows quickly."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        img.save(folder / f"img{i}.png")
    return folder


def test_patch_dataset(tmp_path, rng):
    d = _smooth_images(tmp_path / "imgs", rng)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "too_small.png")
    (d / "notes.txt").write_text("not an image")
    ds = PatchDataset(d, patch_size=16)
    assert len(ds.images) == 3  # the 8x8 image is skipped
    assert len(ds) == sum((h // 16) * (w // 16) for h, w in ((40, 52), (33, 47), (64, 40)))
    a = ds.sample(5, torch.Generator().manual_seed(7))
    b = ds.sample(5, torch.Generator().manual_seed(7))
    assert a.shape == (5, 3, 16, 16) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # every crop is an actual (possibly mirrored) window of some image
    imgs = [im.float() / 127.5 - 1 for im in ds.images]
    for patch in a:
        found = any(
            (im.unfold(1, 16, 1).unfold(2, 16, 1) - cand[:, None, None]).abs().amax(dim=(0, 3, 4)).min() == 0
            for im in imgs for cand in (patch, patch.flip(2))
        )
        assert found


def test_patch_dataset_scales(tmp_path, rng):
    """With scales, crops come from every downscaled copy; images too small at a scale drop out there."""
    d = _smooth_images(tmp_path / "imgs", rng, sizes=((64, 80), (40, 40)))
    ds = PatchDataset(d, patch_size=16, scales=(1.0, 0.5, 0.25))
    assert [len(imgs) for imgs, _ in ds.levels] == [2, 2, 1]  # 40x40 at 0.25 is 10x10 < 16
    assert ds.levels[1][0][0].shape == (3, 32, 40) and ds.levels[2][0][0].shape == (3, 16, 20)
    a = ds.sample(64, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, ds.sample(64, torch.Generator().manual_seed(3)), rtol=0, atol=0)
    smallest = ds.levels[2][0][0].float() / 127.5 - 1
    windows = smallest.unfold(1, 16, 1).unfold(2, 16, 1)
    hits = sum(int(any((windows - c[:, None, None]).abs().amax(dim=(0, 3, 4)).min() == 0 for c in (p, p.flip(2))))
               for p in a)
    assert 5 <= hits <= 40  # ~1/3 of 64 crops come from the quarter-scale image
    with pytest.raises(ValueError, match="scales"):
        PatchDataset(d, patch_size=16, scales=(1.0, 1.5))


def test_patch_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        PatchDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        PatchDataset(tmp_path / "empty")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "empty" / "s.png")
    with pytest.raises(ValueError, match="at least 16x16"):
        PatchDataset(tmp_path / "empty", patch_size=16)


def test_tile_patches_deterministic(tmp_path, rng):
    d = _smooth_images(tmp_path / "imgs", rng)
    t = tile_patches(d, 16)
    assert t.shape[0] == 2 * 3 + 2 * 2 + 4 * 2
    sub = tile_patches(d, 16, max_patches=5)
    assert sub.shape[0] == 5
    torch.testing.assert_close(sub[0], t[0])
    torch.testing.assert_close(sub[-1], t[-1])


def test_sampler_is_unbiased_with_nonuniform_proposal():
    s = LogSNRSampler(-4.0, 6.0, bins=10, warmup=0)
    s.mean_sq = torch.linspace(0.1, 5.0, 10, dtype=torch.float64) ** 2
    s.count[:] = 1
    p = s.probs()
    assert abs(float(p.sum()) - 1) < 1e-12 and not torch.allclose(p, torch.full_like(p, 0.1))
    lam, w = s.sample(20000, torch.Generator().manual_seed(0))
    assert lam.min() >= -4 and lam.max() <= 6
    f = lam.pow(2)  # ∫_{-4}^{6} λ² dλ = (216 + 64) / 3
    est = float((f * w).mean())
    assert est == pytest.approx(280 / 3, rel=5e-3)


def test_sampler_state_round_trip():
    s = LogSNRSampler(-1.0, 1.0, bins=4, warmup=1)
    s.update(torch.tensor([-0.9, -0.1, 0.2, 0.8, 0.81]), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    t = LogSNRSampler(-1.0, 1.0, bins=4, warmup=1)
    t.load_state_dict(s.state_dict())
    torch.testing.assert_close(t.probs(), s.probs())
    with pytest.raises(ValueError, match="bins"):
        LogSNRSampler(-1.0, 1.0, bins=5).load_state_dict(s.state_dict())


def test_elbo_matches_closed_form_for_gaussian_data():
    """x ~ N(0, v I) with its exact posterior-mean denoiser: the diffusion term is
    ½ [log(1 + v e^λ)] from λmin to λmax per dimension, in nats."""
    v, lo, hi = 0.09, -6.0, 8.0
    g = torch.Generator().manual_seed(3)
    x = math.sqrt(v) * torch.randn(256, 3, 4, 4, generator=g)

    def exact(z, lam, cond=None):
        a, s = alpha_sigma(lam.double())
        gain = (a * v / (a * a * v + s * s)).to(z.dtype)[:, None, None, None]
        return gain * z

    res = elbo_bits_per_dim(exact, x, logsnr_min=lo, logsnr_max=hi, n_logsnr=16, seed=1)
    want = 0.5 * (math.log1p(v * math.exp(hi)) - math.log1p(v * math.exp(lo))) / math.log(2)
    assert res["diffusion"] == pytest.approx(want, rel=0.03)
    # the same call again gives the same number (common random numbers)
    assert elbo_bits_per_dim(exact, x, logsnr_min=lo, logsnr_max=hi, n_logsnr=16, seed=1)["bpd"] == res["bpd"]


def test_prior_and_decoder_terms():
    x = torch.zeros(2, 3, 2, 2)
    lam = torch.tensor(-5.0, dtype=torch.float64)
    s2 = torch.sigmoid(-lam)
    want = 0.5 * (s2 - 1 - torch.log(s2)) * 12
    torch.testing.assert_close(prior_kl(x, -5.0), want.expand(2))
    # 8-bit values at a high log-SNR are decoded almost surely; at a low one they are not.
    x8 = torch.randint(0, 256, (2, 3, 4, 4), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    noise = torch.randn(x8.shape, generator=torch.Generator().manual_seed(1))
    assert float(decoder_nll(x8, 15.0, noise).max()) < 1e-6
    assert float(decoder_nll(x8, 6.0, noise).mean()) > 1.0


def _trainer(tmp_path, rng, **kw):
    d = tmp_path / "imgs"
    if not d.exists():
        _smooth_images(d, rng)
    cfg = TrainConfig(data=str(d), run_dir=str(tmp_path / "run"), patch_size=16, batch_size=8, lr=2e-3,
                      warmup_steps=1, progress=False, seed=0, **kw)
    return Trainer(cfg, TINY)


def test_loss_decreases_on_tiny_run(tmp_path, rng):
    # A mid-SNR range, where a few steps on smooth images buy a lot (at high SNR the
    # ELBO integrand is dominated by 8-bit quantisation noise nobody can predict).
    tr = _trainer(tmp_path, rng, logsnr_min=-6.0, logsnr_max=4.0)
    x = tile_patches(tmp_path / "imgs", 16)
    from fastdiffc.models.unet import UNetDenoiser

    def bpd():
        return elbo_bits_per_dim(UNetDenoiser(tr.net).eval(), x, logsnr_min=-6, logsnr_max=4, n_logsnr=8)["diffusion"]

    before = bpd()
    for _ in range(40):
        tr.train_step()
    after = bpd()
    assert after < 0.9 * before, (before, after)


def test_resume_is_exact(tmp_path, rng):
    tr = _trainer(tmp_path, rng)
    for _ in range(3):
        tr.train_step()
    ckpt = tmp_path / "ckpt.safetensors"
    tr.save_checkpoint(ckpt)
    uninterrupted = [tr.train_step()["loss"] for _ in range(2)]
    resumed = _trainer(tmp_path, rng)
    resumed.load_checkpoint(ckpt)
    assert resumed.step == 3
    assert [resumed.train_step()["loss"] for _ in range(2)] == uninterrupted
    for a, b in zip(tr.ema.model.parameters(), resumed.ema.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_warm_start_averages_at_full_decay_and_keeps_it_across_resume(tmp_path, rng):
    """A fresh run's EMA warms up ((1 + t)/(10 + t): it follows the first steps closely); one
    warm-started from trained weights averages at the full decay from its first step, and a
    checkpoint keeps that."""
    from fastdiffc.models.unet import save_unet

    def ema_step_size(tr):
        """How far one update moves the average toward the net, as a fraction of the distance."""
        before = [p.detach().clone() for p in tr.ema.model.parameters()]
        with torch.no_grad():
            for p in tr.net.parameters():
                p.add_(1.0)
        tr.ema.update(tr.net, tr.step)
        moved = next(iter(tr.ema.model.parameters())) - before[0]
        return float(moved.mean())

    fresh = _trainer(tmp_path, rng, ema_decay=0.999)
    assert not fresh.ema.warm
    assert ema_step_size(fresh) == pytest.approx(1 - 1 / 10)  # step 0: decay 1/10
    save_unet(fresh.net, tmp_path / "w.safetensors")
    warm = _trainer(tmp_path, rng, ema_decay=0.999)
    warm.init_weights(tmp_path / "w.safetensors")
    assert warm.ema.warm
    assert ema_step_size(warm) == pytest.approx(1 - 0.999, rel=1e-3)
    ckpt = tmp_path / "ckpt.safetensors"
    warm.save_checkpoint(ckpt)
    resumed = _trainer(tmp_path, rng, ema_decay=0.999)
    resumed.load_checkpoint(ckpt)
    assert resumed.ema.warm
    fresh.save_checkpoint(ckpt)
    resumed.load_checkpoint(ckpt)
    assert not resumed.ema.warm


def test_bfloat16_training_steps_and_resumes_exactly(tmp_path, rng):
    """--precision bfloat16 autocasts the forward/backward; the loss, weights and optimiser stay
    float32, so its loss matches the float32 step's within bfloat16 rounding and a resumed run
    repeats the uninterrupted one exactly."""
    trained = _trainer(tmp_path, rng)
    for _ in range(3):  # a fresh UNet's output layer is zero: nothing to round yet
        trained.train_step()
    ckpt = tmp_path / "ckpt.safetensors"
    trained.save_checkpoint(ckpt)
    f32, b16 = _trainer(tmp_path, rng), _trainer(tmp_path, rng, bf16=True)
    f32.load_checkpoint(ckpt)
    b16.load_checkpoint(ckpt)
    loss32, loss16 = f32.train_step()["loss"], b16.train_step()["loss"]
    assert loss16 != loss32 and loss16 == pytest.approx(loss32, rel=0.05)
    assert all(p.dtype == torch.float32 for p in b16.net.parameters())
    b16.save_checkpoint(ckpt)
    uninterrupted = [b16.train_step()["loss"] for _ in range(2)]
    resumed = _trainer(tmp_path, rng, bf16=True)
    resumed.load_checkpoint(ckpt)
    assert [resumed.train_step()["loss"] for _ in range(2)] == uninterrupted


def test_resume_with_other_heldout_measurement_resets_best(tmp_path, rng):
    tr = _trainer(tmp_path, rng)
    tr.best_bpd = 1.5
    ckpt = tmp_path / "ckpt.safetensors"
    tr.save_checkpoint(ckpt)
    same = _trainer(tmp_path, rng)
    same.load_checkpoint(ckpt)
    assert same.best_bpd == 1.5
    # Held-out tiles now include downscaled images: the old best is not comparable.
    other = _trainer(tmp_path, rng, scales=(1.0, 0.5))
    other.load_checkpoint(ckpt)
    assert other.best_bpd == float("inf") and other.step == tr.step


def test_checkpoint_rejects_other_model(tmp_path, rng):
    tr = _trainer(tmp_path, rng)
    ckpt = tmp_path / "ckpt.safetensors"
    tr.save_checkpoint(ckpt)
    d = tmp_path / "imgs"
    other = Trainer(TrainConfig(data=str(d), patch_size=16, progress=False),
                    UNetConfig(base_channels=8, channel_mults=(1,), num_res_blocks=1, groups=4, attn_head_dim=8))
    with pytest.raises(ValueError, match="config differs"):
        other.load_checkpoint(ckpt)


def test_cli_train_tiny_run(tmp_path, rng, capsys):
    d = _smooth_images(tmp_path / "imgs", rng)
    run = tmp_path / "run"
    args = ["train", "--data", str(d), "--heldout", str(d), "--run-dir", str(run), "--steps", "4",
            "--batch-size", "2", "--patch-size", "16", "--eval-patches", "4", "--eval-patch-size", "16",
            "--log-every", "2", "--no-progress",
            "--model-config", '{"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "groups": 4}',
            "--export", str(tmp_path / "w.safetensors")]
    assert main(args) == 0
    assert (run / "checkpoint.safetensors").exists() and (tmp_path / "w.safetensors").exists()
    rows = (run / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 3
    assert len((run / "eval.csv").read_text().splitlines()) == 2
    # the run exists: refuse to clobber it without --resume; --resume continues to 6 steps
    assert main(args) == 1
    assert "--resume" in capsys.readouterr().err
    assert main([*args[:8], "6", *args[9:], "--resume"]) == 0
    assert (run / "loss.csv").read_text().splitlines()[-1].startswith("6,")
    # --precision: DiffC trains in float32 unless asked; the run's config records it
    assert json.loads((run / "config.json").read_text())["train"]["bf16"] is False
    assert main([*args[:8], "7", *args[9:], "--resume", "--precision", "bfloat16"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["bf16"] is True


def test_cli_train_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert main(["train", "--data", str(tmp_path), "--model-config", "{oops"]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--loss-weighting", "relative"]) == 1
    assert "--loss-weighting: only for --task dirac" in capsys.readouterr().err


def test_dirac_relative_loss_weights_equalise_base_codec_error():
    """Relative weighting: patch i's squared error counts as mean(b) / (b_i + floor), b the base
    codec's MSE, so a patch with 4x the base error weighs ~1/4 — each patch's *relative* MSE, i.e.
    its PSNR change, counts equally — and the weights average to ~1 (the plain MSE's scale)."""
    from fastdiffc.train.residual import RELATIVE_MSE_FLOOR, ResidualTrainConfig, ResidualTrainer, patch_loss_weights

    x = torch.zeros(3, 3, 8, 8)
    xb = torch.stack([torch.full((3, 8, 8), v) for v in (0.01, 0.02, 0.0)])  # base MSE 1e-4, 4e-4, 0
    w = patch_loss_weights(x, xb, "relative")
    b = torch.tensor([1e-4, 4e-4, 0.0])
    assert torch.allclose(w, b.mean() / (b + RELATIVE_MSE_FLOOR))
    assert w[0] / w[1] == pytest.approx((4e-4 + RELATIVE_MSE_FLOOR) / (1e-4 + RELATIVE_MSE_FLOOR))
    assert w[2] == pytest.approx(b.mean() / RELATIVE_MSE_FLOOR)  # an exact base patch: bounded by the floor
    assert torch.equal(patch_loss_weights(x, xb, "mse"), torch.ones(3))
    # relative-start: the relative weights at λ_start only, plain MSE at the sampling λ's
    at_start = torch.tensor([True, False, True])
    ws = patch_loss_weights(x, xb, "relative-start", at_start=at_start)
    assert torch.equal(ws, torch.stack([w[0], torch.tensor(1.0), w[2]]))
    with pytest.raises(ValueError, match="needs at_start"):
        patch_loss_weights(x, xb, "relative-start")
    with pytest.raises(ValueError, match="loss weighting must be one of mse, relative, relative-start"):
        patch_loss_weights(x, xb, "psnr")
    with pytest.raises(ValueError, match="loss weighting"):
        ResidualTrainer(ResidualTrainConfig(data="unused", loss_weighting="l1"))


def test_compare_is_paired(tmp_path, rng):
    from fastdiffc.train.compare import compare

    d = _smooth_images(tmp_path / "imgs", rng)

    def identity(z, lam, cond=None):
        return z * alpha_sigma(lam.double())[0].to(z.dtype)[:, None, None, None]

    res = compare({"a": identity, "b": identity}, d, patch_size=16, patches=6, n_logsnr=4)
    assert res["n_patches"] == 6
    assert res["models"]["a"]["bpd"] == res["models"]["b"]["bpd"]
    assert res["models"]["b"]["paired_diff_vs_first"] == 0.0


def test_plot_run(tmp_path):
    pytest.importorskip("matplotlib")
    from fastdiffc.train.plot import plot_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "loss.csv").write_text("step,elapsed_s,images,loss_bpd,grad_norm,lr\n1,6,8,9.5,1,1e-4\n2,12,16,9.1,1,1e-4\n")
    (run / "eval.csv").write_text("step,elapsed_s,bpd,diffusion,prior,decoder,bpd_stderr\n2,12,9.2,9.2,0,0,0.1\n")
    out = plot_run(run, gaussian_bpd=9.0)
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100
    # A DIRAC run: its loss field and held-out score (minus the 0-step gain) are plotted too.
    dirac = tmp_path / "dirac"
    dirac.mkdir()
    (dirac / "loss.csv").write_text("step,elapsed_s,images,loss_mse_x1e4,grad_norm,lr\n1,6,8,25.0,1,1e-4\n")
    (dirac / "eval.csv").write_text("step,elapsed_s,neg_gain_db,psnr_base,psnr_dirac,mse\n1,6,-0.3,33.3,33.6,0.003\n")
    with Image.open(plot_run(dirac, tmp_path / "d.png")) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_dirac_residual_training_resumes_exactly_and_exports(tmp_path):
    """DIRAC's residual trainer on base-codec pairs: exact resume, a loadable model file, a held-out score."""
    from pathlib import Path

    from fastdiffc.models.residual import ResidualDenoiser, default_unet_config
    from fastdiffc.models.unet import UNetConfig
    from fastdiffc.train.residual import ResidualTrainConfig, ResidualTrainer
    from PIL import Image

    sample = Image.open(Path(__file__).parent.parent / "python" / "fastdiffc" / "samples" / "sample.png").convert("RGB")
    data, held = tmp_path / "data", tmp_path / "held"
    data.mkdir()
    held.mkdir()
    sample.crop((0, 0, 96, 64)).save(data / "a.png")
    sample.crop((100, 60, 196, 124)).save(data / "b.png")
    sample.crop((150, 90, 246, 154)).save(held / "c.png")
    cfg = ResidualTrainConfig(data=str(data), heldout=str(held), run_dir=str(tmp_path / "run"),
                              cache_dir=str(tmp_path / "cache"), patch_size=32, batch_size=2, scales=(1.0,),
                              per_codec=1, progress=False, warmup_steps=1, bf16=False,
                              loss_weighting="relative-start")
    model_cfg = UNetConfig.from_dict({**default_unet_config().to_dict(), "base_channels": 8, "channel_mults": [1, 2],
                                      "num_res_blocks": 1, "groups": 4, "attn_head_dim": 8})
    tr = ResidualTrainer(cfg, model_cfg)
    tr.train_step()
    tr.save_checkpoint(tmp_path / "ck.safetensors")
    uninterrupted = [tr.train_step()["loss"] for _ in range(2)]
    resumed = ResidualTrainer(cfg, model_cfg)
    resumed.load_checkpoint(tmp_path / "ck.safetensors")
    assert [resumed.train_step()["loss"] for _ in range(2)] == uninterrupted
    ev = tr.evaluate()
    assert set(ev) == set(ResidualTrainer.EVAL_FIELDS) and np.isfinite(ev["psnr_dirac"])
    tr.export(tmp_path / "m.safetensors")
    model = ResidualDenoiser.load(tmp_path / "m.safetensors")
    assert model.spec.sigma_data == cfg.sigma_data and model.spec.labels == DIRAC_BASES
    assert model.config.num_labels == len(DIRAC_BASES)
    # Every base codec, the learned cdc base (the shipped CDC model's mean decode) included, made pairs.
    assert {item[2] for item in tr.data.items} == set(range(len(DIRAC_BASES)))
    assert any("_cdc-" in p.name for p in (tmp_path / "cache").iterdir())
    # The model names the CDC model its cdc label was trained on; DIRAC encodes with that one.
    from fastdiffc.models.registry import load_model
    from fastdiffc.pipelines.dirac import DiracCodec

    shipped = load_model("cdc")
    assert (model.spec.cdc_model, int(model.spec.cdc_hash, 16)) == ("cdc", shipped.content_hash)
    assert DiracCodec(model).cdc_for_encoding().content_hash == shipped.content_hash


def test_dirac_warm_start_extends_a_model_trained_on_fewer_base_codecs(tmp_path):
    """A DIRAC model from before the learned cdc base (5 labels) warm-starts a 6-label run: the
    old label embeddings and every other weight are kept, the new label starts at their mean."""
    from pathlib import Path

    from fastdiffc.codecs.plain import BASE_CODECS
    from fastdiffc.models.residual import ResidualSpec, default_unet_config, save_residual
    from fastdiffc.models.unet import UNet, UNetConfig
    from fastdiffc.train.residual import ResidualTrainConfig, ResidualTrainer
    from PIL import Image

    sample = Image.open(Path(__file__).parent.parent / "python" / "fastdiffc" / "samples" / "sample.png").convert("RGB")
    data = tmp_path / "data"
    data.mkdir()
    sample.crop((0, 0, 64, 64)).save(data / "a.png")
    small = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "groups": 4, "attn_head_dim": 8}
    old_cfg = UNetConfig.from_dict({**default_unet_config().to_dict(), **small, "num_labels": len(BASE_CODECS)})
    torch.manual_seed(3)
    old = UNet(old_cfg)
    torch.nn.init.normal_(old.label_embed.weight)
    save_residual(old, ResidualSpec(labels=BASE_CODECS), tmp_path / "old.safetensors")
    cfg = ResidualTrainConfig(data=str(data), run_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
                              patch_size=32, batch_size=2, scales=(1.0,), per_codec=1, progress=False,
                              codecs=("jpeg",), bf16=False)
    tr = ResidualTrainer(cfg, UNetConfig.from_dict({**default_unet_config().to_dict(), **small}))
    tr.init_weights(tmp_path / "old.safetensors")
    assert tr.ema.warm  # trained weights: the average starts at the full decay
    new = tr.net.state_dict()
    emb_old, emb_new = old.label_embed.weight.detach(), new["label_embed.weight"]
    assert emb_new.shape[0] == len(DIRAC_BASES) == len(BASE_CODECS) + 1
    assert torch.equal(emb_new[: len(BASE_CODECS)], emb_old)
    assert torch.allclose(emb_new[len(BASE_CODECS)], emb_old.mean(0))
    assert all(torch.equal(v, new[k]) for k, v in old.state_dict().items() if k != "label_embed.weight")
    # Labels that are not a prefix of the run's are refused.
    save_residual(old, ResidualSpec(labels=("webp", "jpeg", "avif", "heic", "jxl")), tmp_path / "odd.safetensors")
    with pytest.raises(ValueError, match="not a prefix"):
        tr.init_weights(tmp_path / "odd.safetensors")


def test_dirac_pair_cache_in_worker_processes_matches_one_process(tmp_path):
    """The pair cache built by 2 worker processes — after torch has run a threaded op in this
    process, as a training run's has — is byte for byte the one a single process writes, the
    learned cdc base included. Forked workers used to hang forever on a lock copied mid-use."""
    from pathlib import Path

    from fastdiffc.train.pairs import build_cache, draw_specs
    from PIL import Image

    torch.set_num_threads(2)
    torch.nn.functional.conv2d(torch.randn(1, 8, 64, 64), torch.randn(8, 8, 3, 3))  # start the thread pool
    sample = Image.open(Path(__file__).parent.parent / "python" / "fastdiffc" / "samples" / "sample.png").convert("RGB")
    sample.crop((0, 0, 64, 48)).save(tmp_path / "a.png")
    specs = draw_specs([tmp_path / "a.png"], codecs=("jpeg", "cdc"), scales=(1.0,), per_codec=2)
    one = build_cache(specs, tmp_path / "one", workers=1)
    two = build_cache(specs, tmp_path / "two", workers=2)
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 4
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))

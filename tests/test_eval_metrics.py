"""Metrics and BD-rate of the evaluation harness (fastdiffc.eval.metrics, fastdiffc.eval.bdrate)."""

import math

import numpy as np
import pytest
from fastdiffc.eval import bdrate, metrics
from PIL import Image, ImageFilter


def _photo(size):
    """A smooth colour scene with edges and mild texture: behaves like a photo under blur."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(7)
    base = np.stack([128 + 100 * np.sin(6 * x + 2 * y), 128 + 90 * np.cos(5 * y), 80 + 150 * (x > 0.5)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _blur(a, radius):
    return np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(radius)))


# --- PSNR ------------------------------------------------------------------------------


def test_psnr_exact_on_known_arrays():
    a = np.full((2, 3, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 110  # one of 18 values off by 10: MSE = 100 / 18
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 * 18 / 100), abs=1e-12)
    c = np.full((2, 3, 3), 90, np.uint8)  # every value off by 10: MSE = 100
    assert metrics.psnr(a, c) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    assert metrics.psnr(a, a) == math.inf


def test_psnr_accepts_pil_and_rejects_mismatch():
    a = _photo((16, 20))
    assert metrics.psnr(Image.fromarray(a), a) == math.inf
    with pytest.raises(ValueError, match="sizes differ"):
        metrics.psnr(a, a[:, :-1])
    with pytest.raises(ValueError, match="uint8"):
        metrics.psnr(a.astype(np.float32), a)


# --- MS-SSIM ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (48, 64), (176, 180)])  # few-scale path and library path
def test_ms_ssim_identical_is_one_and_blur_lowers_it(size):
    a = _photo(size)
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    mild, strong = metrics.ms_ssim(a, _blur(a, 0.7)), metrics.ms_ssim(a, _blur(a, 2.0))
    assert 0 < strong < mild < 1


def test_ms_ssim_few_scale_path_matches_library_at_five_scales():
    # Same 5 scales and 11-tap window: the small-image code must agree with pytorch-msssim.
    from pytorch_msssim import ms_ssim

    a, b = _photo((176, 176)), _blur(_photo((176, 176)), 1.0)
    x, y = metrics._to_tensor(a).float(), metrics._to_tensor(b).float()
    with metrics._single_torch_thread():
        ours, library = metrics._ms_ssim_few_scales(x, y, 176), float(ms_ssim(x, y, data_range=255))
    assert ours == pytest.approx(library, abs=1e-5)


# --- SSIMULACRA2 -----------------------------------------------------------------------


def test_ssimulacra2_identical_is_100_and_blur_lowers_it():
    a = _photo((48, 48))
    assert metrics.ssimulacra2(a, a) == pytest.approx(100.0, abs=1e-6)
    assert metrics.ssimulacra2(a, _blur(a, 2.0)) < metrics.ssimulacra2(a, _blur(a, 0.7)) < 100


# --- realism (sliced Wasserstein on Laplacian patches) ----------------------------------


def test_realism_zero_for_identical_and_grows_with_blur():
    a = _photo((64, 64))
    assert metrics.realism_swd(a, a) == 0.0
    d1, d2 = metrics.realism_swd(a, _blur(a, 0.7)), metrics.realism_swd(a, _blur(a, 2.0))
    assert 0 < d1 < d2


def test_realism_compares_distributions_not_pixels():
    # A fresh realisation of the same noise is far in PSNR but close in distribution;
    # a blurred copy is closer in PSNR but its patch statistics are wrong.
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    fresh = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    blurred = _blur(a, 1.0)
    assert metrics.psnr(a, fresh) < metrics.psnr(a, blurred)
    assert metrics.realism_swd(a, fresh) * 2 < metrics.realism_swd(a, blurred)


def test_realism_reference_is_deterministic_and_checks_size():
    a, b = _photo((40, 56)), _blur(_photo((40, 56)), 1.0)
    ref = metrics.RealismReference(a)
    assert ref.distance(b) == metrics.RealismReference(a).distance(b) == metrics.realism_swd(a, b)
    with pytest.raises(ValueError, match="sizes differ"):
        ref.distance(b[:-2])
    with pytest.raises(ValueError, match="too small"):
        metrics.RealismReference(_photo((8, 8)))


def test_compute_metrics_all_and_unknown():
    a = _photo((32, 40))
    out = metrics.compute_metrics(a, a)
    assert set(out) == set(metrics.METRICS)
    assert out["psnr"] == math.inf and out["realism"] == 0.0
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.compute_metrics(a, a, ["lpips"])


# --- BD-rate -------------------------------------------------------------------------


RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [26.0, 28.5, 31.2, 34.0, 37.1]


def test_bd_rate_of_curve_against_itself_is_zero():
    assert bdrate.bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_scaled_rates():
    assert bdrate.bd_rate(RATES, PSNRS, [0.8 * r for r in RATES], PSNRS) == pytest.approx(-20.0, abs=1e-9)
    assert bdrate.bd_rate(RATES, PSNRS, [1.25 * r for r in RATES], PSNRS) == pytest.approx(25.0, abs=1e-9)


def test_bd_rate_of_a_one_db_better_log_linear_curve():
    # q = 10·log10(r) + 30: one dB more at equal rate is 10^-0.1 times the rate at equal quality.
    rates = np.geomspace(0.05, 2.0, 7)
    q = 10 * np.log10(rates) + 30
    assert bdrate.bd_rate(rates, q, rates, q + 1.0) == pytest.approx((10**-0.1 - 1) * 100, abs=1e-6)


def test_bd_rate_ignores_dominated_points_and_rejects_disjoint_curves():
    noisy_r, noisy_q = RATES + [0.5], PSNRS + [30.0]  # 0.5 bpp at 30 dB is worse than 0.4 bpp at 31.2 dB
    assert bdrate.bd_rate(RATES, PSNRS, noisy_r, noisy_q) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="overlap"):
        bdrate.bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS])
    with pytest.raises(ValueError, match="two"):
        bdrate.bd_rate(RATES, PSNRS, [0.1], [30.0])


def test_monotone_curve_and_quality_at_rate():
    r, q = bdrate.monotone_curve([0.4, 0.1, 0.2, 0.3, 1.0], [31, 26, 28, 27, math.inf])
    assert r.tolist() == [0.1, 0.2, 0.4] and q.tolist() == [26, 28, 31]
    rates = np.geomspace(0.05, 2.0, 6)
    q = 4 * np.log(rates) + 35  # linear in log-rate: PCHIP reproduces it exactly
    assert bdrate.quality_at_rate(rates, q, 0.25) == pytest.approx(4 * math.log(0.25) + 35, abs=1e-9)
    assert math.isnan(bdrate.quality_at_rate(rates, q, 3.0))
    assert bdrate.quality_at_rate(rates, q, 2.02) == pytest.approx(4 * math.log(2.02) + 35, abs=1e-3)
    assert bdrate.msssim_db(0.99) == pytest.approx(20.0)


# --- realism earns its role: known distortions of a real photo rank the right way ----------


def _real_photos():
    from importlib.resources import files

    with (files("fastdiffc") / "samples" / "sample.png").open("rb") as f, Image.open(f) as im:
        out = [("sample", np.asarray(im.convert("RGB")))]
    from fastdiffc.eval.images import load_dev_image  # scikit-image: the test/eval extras install it

    out.append(("chelsea", np.asarray(load_dev_image("chelsea"))))
    return out


def _phase_resynthesis(a, radius, seed=0):
    """Blur, plus the original's high band (a − blur) with its Fourier phases randomised: the
    same power spectrum (texture energy at every frequency), new texture — what a generative
    decoder aims for. The added band is independent of the lost one, so the MSE doubles."""
    low = _blur(a, radius).astype(np.float64)
    high = np.fft.fft2(a.astype(np.float64) - low, axes=(0, 1))
    rng = np.random.default_rng(seed)
    phase = np.exp(1j * np.angle(np.fft.fft2(rng.standard_normal(a.shape[:2]))))[..., None]  # same for R, G, B
    return np.clip(np.round(low + np.real(np.fft.ifft2(high * phase, axes=(0, 1)))), 0, 255).astype(np.uint8)


def _blur_at_psnr(a, target):
    """Gaussian blur whose PSNR is `target` (bisection on the radius)."""
    lo, hi = 0.2, 8.0
    for _ in range(25):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if metrics.psnr(a, _blur(a, mid)) > target else (lo, mid)
    return _blur(a, (lo + hi) / 2)


@pytest.mark.parametrize("name, photo", _real_photos())
def test_realism_ranks_known_distortions_of_a_real_photo(name, photo):
    ref = metrics.RealismReference(photo)
    assert ref.distance(photo) == 0.0
    # Blur and added noise move the patch distribution away, more so the stronger they are.
    blur = [ref.distance(_blur(photo, r)) for r in (0.7, 1.5, 3.0)]
    rng = np.random.default_rng(1)
    noisy = [ref.distance(np.clip(photo + rng.normal(0, s, photo.shape), 0, 255).astype(np.uint8))
             for s in (3, 8, 20)]
    assert 0.01 < blur[0] < blur[1] < blur[2], blur
    assert 0.01 < noisy[0] < noisy[1] < noisy[2], noisy
    # A texture-preserving resynthesis beats blur at equal PSNR (and white noise at equal PSNR).
    for radius in (1.0, 1.5):
        resynth = _phase_resynthesis(photo, radius)
        target = metrics.psnr(photo, resynth)
        blurred = _blur_at_psnr(photo, target)
        sigma = 255 / 10 ** (target / 20)  # white noise of the same MSE
        noise = np.clip(photo + np.random.default_rng(2).normal(0, sigma, photo.shape), 0, 255).astype(np.uint8)
        assert abs(metrics.psnr(photo, blurred) - target) < 0.5 and abs(metrics.psnr(photo, noise) - target) < 0.5
        d_resynth, d_blur, d_noise = ref.distance(resynth), ref.distance(blurred), ref.distance(noise)
        assert d_resynth < 0.85 * d_blur, (name, radius, target, d_resynth, d_blur)
        assert d_resynth < d_noise, (name, radius, target, d_resynth, d_noise)


def test_centre_crop_takes_the_middle_window_and_refuses_small_images():
    from fastdiffc.eval.images import centre_crop

    arr = np.arange(10 * 14 * 3, dtype=np.uint8).reshape(10, 14, 3)
    out = centre_crop(Image.fromarray(arr), 6, 4)
    assert out.size == (6, 4) and np.array_equal(np.asarray(out), arr[3:7, 4:10])
    with pytest.raises(ValueError, match="smaller than 768×512"):
        centre_crop(Image.fromarray(arr))

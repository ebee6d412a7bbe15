"""DiffC's output filter (parameter version 5; pipelines/output_filter.py, docs/design.md §4): the
encoder fits a least-squares correction of the flow reconstruction after the file's last step and
writes it as 21 integers. Asserted: it never makes the 8-bit output worse and helps on a photo;
it applies exactly when the steps it was fitted for are flow-decoded (not to prefixes, other
methods or with skip_filter); `prefix_files` makes byte for byte the files `compress(steps=k)`
writes; the golden v5 bitstream; forged filter codes.

Models and images as in test_diffc.py (PixelGaussian: exact, so the golden file pins the pipeline).
"""

import hashlib
import json

import numpy as np
import pytest
import torch
from fastdiffc import container
from fastdiffc.eval.contenders import ProgressivePipeline
from fastdiffc.pipelines import output_filter
from fastdiffc.pipelines.diffc import DiffCCodec, DiffCSettings
from fastdiffc.pipelines.diffc_format import FILTER_PARAMS_VERSION
from test_diffc import GOLDEN, SETTINGS, PixelGaussian, check_golden, gaussian_model, photo_crop

STEPS = 12


def _psnr(img, x: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / ((np.asarray(img, dtype=np.float64) - x) ** 2).mean()))


@pytest.fixture(scope="module")
def filtered():
    """A photo crop coded with the power-law Gaussian model (a real image prior), 12 steps, with and
    without the filter."""
    codec = DiffCCodec(gaussian_model(), recon_steps=6, **SETTINGS)
    img = photo_crop()
    return codec, img, codec.compress(img, steps=STEPS), codec.compress(img, steps=STEPS, no_filter=True)


def test_filter_is_written_after_the_steps_and_never_hurts(filtered):
    codec, img, data, plain = filtered
    f, g = container.read(data), container.read(plain)
    assert f.segments == g.segments  # the filter changes no step: only the parameter block
    s = DiffCSettings.from_bytes(f.header.params, f.header.params_version, f.header.precision)
    assert (f.header.params_version, s.filter_steps, len(s.filter_codes)) == (FILTER_PARAMS_VERSION, STEPS, 21)
    assert s.without_filter().to_bytes() == g.header.params
    assert len(data) - len(plain) == 48  # the step count, id byte and 21 int16 + version 4's fields (4 varints)
    x = np.asarray(img, dtype=np.float64)
    gains = []
    for k in (2, 5, STEPS):
        files = codec.prefix_files(img, data, [k])
        out = codec.decompress(files[k][0])
        unfiltered = codec.decompress(files[k][0], skip_filter=True)
        assert np.array_equal(np.asarray(unfiltered), np.asarray(codec.decompress(plain, max_steps=k)))
        gains.append(_psnr(out, x) - _psnr(unfiltered, x))
    assert min(gains) >= 0 and max(gains) > 0.1, gains


def test_filter_applies_only_to_the_steps_it_was_fitted_for(filtered):
    codec, img, data, plain = filtered
    same = lambda a, b: np.array_equal(np.asarray(a), np.asarray(b))  # noqa: E731
    full = codec.decompress(data)
    assert not same(full, codec.decompress(plain))
    assert same(codec.decompress(data, skip_filter=True), codec.decompress(plain))
    assert same(codec.decompress(data, max_steps=STEPS), full)
    # a prefix (max_steps, a truncated file, truncate_to_steps) decodes as the unfiltered prefix
    assert same(codec.decompress(data, max_steps=7), codec.decompress(plain, max_steps=7))
    cut = data[:len(data) - len(container.read(data).segments[-1]) // 2]
    assert same(codec.decompress(cut, allow_truncated=True), codec.decompress(plain, max_steps=STEPS - 1))
    assert same(codec.decompress(container.truncate_to_steps(data, 4)), codec.decompress(plain, max_steps=4))
    # the other methods ignore it
    for method in ("denoise", "ancestral"):
        assert same(codec.decompress(data, method=method), codec.decompress(plain, method=method))
    # one replay for every prefix applies it at the fitted step only
    prog = codec.decompress_progressive(data, [4, STEPS])
    assert same(prog[STEPS], full) and same(prog[4], codec.decompress(plain, max_steps=4))


def test_prefix_files_are_the_files_compress_writes(filtered):
    codec, img, data, plain = filtered
    files = codec.prefix_files(img, data, [1, 6, STEPS])
    for k in (1, 6, STEPS):
        assert files[k][0] == codec.compress(img, steps=k)
        assert np.array_equal(np.asarray(files[k][1]), np.asarray(codec.decompress(files[k][0])))
    unfiltered = codec.prefix_files(img, plain, [3, 6], no_filter=True, method="denoise")
    for k in (3, 6):
        assert unfiltered[k][0] == container.truncate_to_steps(plain, k) == codec.compress(img, steps=k, no_filter=True)
        assert np.array_equal(np.asarray(unfiltered[k][1]), np.asarray(codec.decompress(unfiltered[k][0],
                                                                                        method="denoise")))
    with pytest.raises(ValueError, match="image is 4x4"):
        codec.prefix_files(photo_crop(4, 4), data, [2])
    with pytest.raises(ValueError, match=r"steps must lie in 1\.\.12"):
        codec.prefix_files(img, data, [0, 3])
    with pytest.raises(ValueError, match=r"steps must lie in 1\.\.12"):
        codec.prefix_files(img, data, [13])
    with pytest.raises(ValueError, match="not max_steps"):
        codec.prefix_files(img, data, [3], max_steps=3)


def test_eval_points_are_the_per_rate_files(filtered):
    """fastdiffc eval's DiffC curve: each point's bytes are those of `compress(steps=k)` (the filter
    included), its reconstruction that file's decode."""
    codec, img, data, _ = filtered
    contender = ProgressivePipeline("diffc", codec, container.truncate_to_steps, steps=[3, 8])
    trials = {t.setting: t for t in contender.run(img, "crop.png", set(), None)}
    for k in (3, 8):
        want = codec.compress(img, steps=k)
        assert trials[f"steps={k}"].nbytes == len(want)
        assert np.array_equal(np.asarray(trials[f"steps={k}"].reconstruction), np.asarray(codec.decompress(want)))


def test_forged_codes_are_the_decoders_only_input(filtered):
    """The decoder reads only the 21 integers: all-zero codes give the unfiltered flow output (and
    cost no extra model call), other codes another output; a code outside int16 cannot be written."""
    codec, img, data, plain = filtered
    f = container.read(data)
    s = DiffCSettings.from_bytes(f.header.params, f.header.params_version, f.header.precision)

    def with_codes(codes):
        t = s.with_filter(STEPS, codes)
        return container.write(container.Header(**{**f.header.__dict__, "params": t.to_bytes()}), f.segments)

    zero = with_codes((0,) * 21)
    assert np.array_equal(np.asarray(codec.decompress(zero)), np.asarray(codec.decompress(plain)))
    assert s.with_filter(STEPS, (0,) * 21).filter_for(STEPS) is None
    other = with_codes(tuple(c + 64 for c in s.filter_codes))
    assert not np.array_equal(np.asarray(codec.decompress(other)), np.asarray(codec.decompress(data)))
    with pytest.raises(ValueError, match="21 integers in -32768..32767"):
        s.with_filter(STEPS, (40000,) * 21)
    with pytest.raises(ValueError, match="filter_steps must be"):
        s.with_filter(SETTINGS["grid_steps"] + 1, s.filter_codes)
    with pytest.raises(ValueError, match="version 5"):
        DiffCSettings(**SETTINGS, filter_steps=3, filter_codes=s.filter_codes)


def test_filter_fit_recovers_a_known_filter():
    """choose_codes on a target made by a known filter recovers it (to the 1/256 code step), and the
    encoder's decision is made on the 8-bit output: a filter that would not improve it is all zeros."""
    torch.manual_seed(0)
    base = torch.rand(1, 3, 24, 32) * 1.6 - 0.8
    d = 0.1 * torch.randn(1, 3, 24, 32)
    codes = tuple(int(v) for v in torch.randint(-120, 120, (21,)))
    target = output_filter.apply(d, base, codes)
    fitted = output_filter.fit_codes(d, base, target.double())
    assert max(abs(a - b) for a, b in zip(fitted, codes)) <= 1
    assert output_filter.choose_codes(d, base, base) == (0,) * 21  # nothing to correct


def _golden_v5_bytes() -> bytes:
    return DiffCCodec(PixelGaussian(), precision="float32", **SETTINGS).compress(photo_crop(), steps=10)


def test_golden_v5_filter_bitstream():
    check_golden("diffc_v5_filter_pixel_gaussian_32x48", _golden_v5_bytes(), 5,
                 DiffCCodec(PixelGaussian(), recon_steps=4, precision="float32", **SETTINGS))


def make_golden() -> None:  # pragma: no cover - run by hand when the v5 golden file is (re)made
    """`cd tests && PYTHONPATH=../python python -c "import test_diffc_filter as t; t.make_golden()"`."""
    data = _golden_v5_bytes()
    codec = DiffCCodec(PixelGaussian(), recon_steps=4, precision="float32", **SETTINGS)
    name = "diffc_v5_filter_pixel_gaussian_32x48"
    (GOLDEN / f"{name}.fdc").write_bytes(data)
    md5 = lambda img: hashlib.md5(np.asarray(img).tobytes()).hexdigest()  # noqa: E731
    meta = {"fdc_md5": hashlib.md5(data).hexdigest(),
            **{f"{m}_pixels_md5": md5(codec.decompress(data, method=m)) for m in ("denoise", "flow", "ancestral")},
            "made_by": "tests/test_diffc_filter.py::_golden_v5_bytes (PixelGaussian, SETTINGS: pfr b = 8, margin 3; "
                       "steps=10, the output filter fitted with recon_steps 20); container v2, DiffC parameters v5; "
                       "pixels decoded with recon_steps=4 (flow through the filter)",
            "bytes": len(data)}
    (GOLDEN / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")


"""The composite "switch by log-SNR" denoiser, its registry files, and the model-kl switch choice."""

import json

import numpy as np
import pytest
import torch
from fastdiffc.cli import main
from fastdiffc.errors import ModelMismatchError, ModelNotFoundError
from fastdiffc.experiments.model_kl import choose_switch, format_table, measure
from fastdiffc.models import registry
from fastdiffc.models.composite import CompositeDenoiser
from fastdiffc.models.gaussian import GaussianDenoiser
from fastdiffc.models.registry import content_hash, list_models, load_model, save_composite
from fastdiffc.models.unet import UNet, UNetConfig, UNetDenoiser
from fastdiffc.pipelines.diffc import DiffCCodec, DiffCSettings, encode
from PIL import Image

TINY = UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4, attn_head_dim=8)
SETTINGS = dict(seed=3, schedule="linear", logsnr_min=-6.0, logsnr_max=6.0, grid_steps=6, bits_per_chunk=8,
                margin=2.0)  # grid λ = -6, -4, ..., 6


def _save_tiny_unet(path, seed):
    torch.manual_seed(seed)
    UNetDenoiser(UNet(TINY)).save(path)


@pytest.fixture
def weights(tmp_path):
    GaussianDenoiser.power_law((0.05, 0.01, 0.004), exponent=2.0, mean=(0.1, -0.05, 0.02)).save(
        tmp_path / "gauss.safetensors")
    _save_tiny_unet(tmp_path / "tiny.safetensors", 0)
    _save_tiny_unet(tmp_path / "tiny2.safetensors", 1)
    return tmp_path


@pytest.fixture
def parts(weights):
    return load_model("gauss", weights), load_model("tiny", weights), load_model("tiny2", weights)


def _image(h=12, w=16, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))  # blocky, so the models have something to predict


# ----------------------------------------------------------------------------- routing


def test_part_index_boundaries(parts):
    comp = CompositeDenoiser(parts, [-1.0, 2.0])
    lam = torch.tensor([-5.0, -1.0, -1.0000001, 1.999, 2.0, 9.0], dtype=torch.float64)
    assert comp.part_index(lam, 6).tolist() == [0, 1, 0, 1, 2, 2]
    assert comp.part_index(2.0, 3).tolist() == [2, 2, 2]


def test_switch_compared_in_the_dtype_of_logsnr(parts):
    # 0.1 is not a float32 number: the float32 grid value 0.1 must still count as >= the switch 0.1.
    comp = CompositeDenoiser(parts[:2], [0.1])
    f32 = torch.tensor([0.1, np.nextafter(np.float32(0.1), np.float32(0))], dtype=torch.float32)
    assert comp.part_index(f32, 2).tolist() == [1, 0]
    f64 = torch.tensor([0.1, np.nextafter(0.1, 0)], dtype=torch.float64)
    assert comp.part_index(f64, 2).tolist() == [1, 0]


def test_mixed_batch_is_bit_identical_to_the_parts_on_their_elements(parts):
    gauss, tiny, tiny2 = parts
    comp = CompositeDenoiser(parts, [-1.0, 2.0])
    torch.manual_seed(5)
    z = torch.randn(6, 3, 8, 8)
    lam = torch.tensor([3.0, -4.0, 0.5, -2.0, 2.5, 1.0])
    out = comp(z, lam)
    assert out.shape == z.shape and out.dtype == z.dtype
    for part, idx in ((gauss, [1, 3]), (tiny, [2, 5]), (tiny2, [0, 4])):
        i = torch.tensor(idx)
        assert torch.equal(out[i], part(z[i], lam[i]))
    # A uniform batch passes straight through (scalar or per-element λ).
    assert torch.equal(comp(z, -3.0), gauss(z, -3.0))
    assert torch.equal(comp(z, torch.full((6,), 5.0)), tiny2(z, torch.full((6,), 5.0)))


def test_bad_construction_and_inputs(parts):
    with pytest.raises(ValueError, match="need 1 switch"):
        CompositeDenoiser(parts[:2], [0.0, 1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        CompositeDenoiser(parts, [1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        CompositeDenoiser(parts[:2], [float("inf")])
    with pytest.raises(ValueError, match="at least 2 parts"):
        CompositeDenoiser(parts[:1], [])
    comp = CompositeDenoiser(parts[:2], [0.0])
    with pytest.raises(ValueError, match="3 values for a batch of 2"):
        comp(torch.zeros(2, 3, 4, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        comp(torch.zeros(2, 3, 4, 4), torch.tensor([0.0, float("nan")]))
    assert comp(torch.zeros(0, 3, 4, 4), 1.0).shape == (0, 3, 4, 4)  # an empty batch is not an error


def test_mixed_batch_parts_get_the_routed_logsnr(parts):
    seen = []

    def spy(i):
        def part(z, lam, cond=None):
            seen.append((i, lam))
            return parts[i](z, lam, cond)
        return part

    comp = CompositeDenoiser([spy(0), spy(1)], [0.0])
    comp(torch.randn(3, 3, 4, 4), [-1.0, 0.5, -0.25])  # a list λ: one value per element, routed as given
    (i0, lam0), (i1, lam1) = seen
    assert (i0, i1) == (0, 1)
    assert lam0.tolist() == [-1.0, -0.25] and lam1.tolist() == [0.5]


def test_shipped_composites_load():
    # The shipped composites record their parts' hashes: replacing a part's weights without
    # re-saving the composite (scripts/make_hybrid.py) must fail here, not in users' hands.
    shipped = [m for m in list_models() if m.cls == "composite"]
    assert shipped, "no composite model is shipped"
    for info in shipped:
        assert registry.composite_status(info) == "ok", info.name
        assert isinstance(load_model(info.name), CompositeDenoiser)


# ----------------------------------------------------------------------------- registry


def test_registry_round_trip(weights, parts):
    h = save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [0.5])
    assert h == content_hash(weights / "hy.safetensors")
    info = {m.name: m for m in list_models(weights)}["hy"]
    assert info.cls == "composite" and info.config["parts"] == ["gauss", "tiny"]
    hashes = [f"{content_hash(weights / f'{p}.safetensors'):016x}" for p in ("gauss", "tiny")]
    assert info.config["part_hashes"] == hashes
    comp = load_model("hy", weights)
    assert isinstance(comp, CompositeDenoiser)
    assert comp.name == "hy" and comp.content_hash == h and comp.switch_logsnr == (0.5,)
    assert [p.name for p in comp.parts] == ["gauss", "tiny"]
    assert isinstance(comp.parts[0].content_hash, int) and isinstance(comp.parts[0].tensor_digest(), str)
    z = torch.randn(2, 3, 8, 8)
    lam = torch.tensor([0.49, 0.5])
    out = comp(z, lam)
    assert torch.equal(out[:1], parts[0](z[:1], lam[:1])) and torch.equal(out[1:], parts[1](z[1:], lam[1:]))
    # Re-saving the same composite gives the same bytes (the bitstream identity is stable).
    assert save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [0.5]) == h
    assert save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [1.0]) != h


def test_refuses_missing_or_changed_part(weights):
    save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [0.5])
    _save_tiny_unet(weights / "tiny.safetensors", 7)  # same name, different weights
    with pytest.raises(ModelMismatchError, match="part 'tiny' of hash [0-9a-f]{16}.*re-save"):
        load_model("hy", weights)
    assert "changed" in registry.composite_status({m.name: m for m in list_models(weights)}["hy"])
    save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [0.5])  # re-saving accepts the new part
    assert isinstance(load_model("hy", weights), CompositeDenoiser)
    (weights / "tiny.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="needs part 'tiny'"):
        load_model("hy", weights)
    with pytest.raises(ModelNotFoundError, match="needs part 'tiny'"):
        save_composite(weights / "hy2.safetensors", ["gauss", "tiny"], [0.5])


def test_save_composite_checks_expected_part_hashes(weights):
    want = [content_hash(weights / f"{p}.safetensors") for p in ("gauss", "tiny")]
    save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [0.5], expect_hashes=want)
    with pytest.raises(ModelMismatchError, match="part 'tiny' .* not the expected"):
        save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [0.5], expect_hashes=[want[0], want[1] ^ 1])


def test_bad_composite_files(weights):
    from safetensors.torch import save_file

    save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [0.5])
    with pytest.raises(ValueError, match="itself a composite"):
        save_composite(weights / "nest.safetensors", ["hy", "tiny"], [0.5])
    with pytest.raises(ValueError, match="its own parts"):
        save_composite(weights / "tiny2.safetensors", ["gauss", "tiny2"], [0.5])
    cfg = {"class": "composite", "version": 1, "parts": ["gauss", "tiny"], "part_hashes": ["abc", "def"],
           "switch_logsnr": [0.5]}
    save_file({}, str(weights / "bad.safetensors"), metadata={"fastdiffc_config": json.dumps(cfg)})
    with pytest.raises(ValueError, match="16-hex-digit"):
        load_model("bad", weights)
    cfg.update(part_hashes=["0" * 16] * 2, switch_logsnr=[])
    save_file({}, str(weights / "bad.safetensors"), metadata={"fastdiffc_config": json.dumps(cfg)})
    with pytest.raises(ValueError, match="need 1 switch"):
        load_model("bad", weights)


def test_cli_models_lists_composite(weights, monkeypatch, capsys):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(registry, "retired_weights_dir", lambda: None)  # only these weights
    save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [0.5])
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["hy"]["class"] == "composite" and rows["hy"]["parts"] == ["gauss", "tiny"]
    assert rows["hy"]["switch_logsnr"] == [0.5] and rows["hy"]["status"] == "ok"
    _save_tiny_unet(weights / "tiny.safetensors", 9)
    assert main(["models"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("hy ")][0]
    assert "gauss | λ>=0.5: tiny" in line and "REFUSES TO LOAD: part 'tiny' changed" in line


# ----------------------------------------------------------------------------- DiffC through a composite


def test_diffc_round_trip_through_composite(weights, parts):
    save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [0.0])
    comp = load_model("hy", weights)
    img = _image()
    data, enc = DiffCCodec(comp, **SETTINGS).encode_image(img, steps=6)
    # Decoding with a freshly loaded composite reproduces the sender's latent bit for bit.
    z, lam, *_ = DiffCCodec(load_model("hy", weights), **SETTINGS).decode_latent(data)
    assert lam == 6.0 and torch.equal(z, enc.z)
    # Steps starting below the switch (λ = -6, -4, -2) are exactly the Gaussian model's steps.
    alone = encode(parts[0], _tensor(img), DiffCSettings(**SETTINGS))
    assert enc.segments[:3] == alone.segments[:3] and enc.segments[3:] != alone.segments[3:]
    # Same bytes at another torch thread count.
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if old > 1 else 2)
        assert DiffCCodec(comp, **SETTINGS).compress(img, steps=6) == data
    finally:
        torch.set_num_threads(old)
    # A composite with another switch is another model: the decoder refuses the file.
    save_composite(weights / "hy.safetensors", ["gauss", "tiny"], [2.0])
    with pytest.raises(ModelMismatchError, match="written with model 'hy'"):
        DiffCCodec(load_model("hy", weights), **SETTINGS).decode_latent(data)


def _tensor(img):
    from fastdiffc.image_io import prepare_image

    return prepare_image(img).tensor


# ----------------------------------------------------------------------------- switch choice


def test_choose_switch_on_synthetic_tables():
    lam = [-6.0, -4.0, -2.0, 0.0, 2.0, 4.0]
    low = [1.0, 2.0, 3.0, 9.0, 20.0, 50.0]
    high = [2.0, 2.5, 3.5, 5.0, 10.0, 20.0]
    c = choose_switch(lam, low, high, lam_end=6.0)
    assert (c.index, c.switch_logsnr) == (3, 0.0)
    assert c.total_bpp == pytest.approx(1 + 2 + 3 + 5 + 10 + 20)
    assert c.low_only_bpp == pytest.approx(sum(low)) and c.high_only_bpp == pytest.approx(sum(high))
    # One model better everywhere: no switch inside the grid.
    assert choose_switch(lam, high, low, lam_end=6.0).switch_logsnr == 6.0
    assert choose_switch(lam, low, [v / 2 for v in low]).index == 0
    # Ties go to the lowest switch; a local loss is accepted when the later gain outweighs it.
    assert choose_switch([0.0, 1.0], [1.0, 1.0], [1.0, 1.0]).index == 0
    assert choose_switch([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 1.0, 9.0], [5.0, 1.0, 1.5, 1.0]).index == 1
    # Exhaustive check on random tables.
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(1, 9))
        lo, hi = rng.random(k), rng.random(k)
        c = choose_switch(np.arange(k, dtype=float), lo, hi)
        best = min(range(k + 1), key=lambda s: (lo[:s].sum() + hi[s:].sum(), s))
        assert c.index == best and c.total_bpp == pytest.approx(lo[:best].sum() + hi[best:].sum())
    with pytest.raises(ValueError, match="equal-length"):
        choose_switch([0.0, 1.0], [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="increasing"):
        choose_switch([1.0, 0.0], [1.0, 1.0], [1.0, 2.0])


def test_measure_is_the_encoders_kl_per_pixel(parts):
    settings = DiffCSettings(**SETTINGS)
    images = [("a", _tensor(_image(8, 12, 1))), ("b", _tensor(_image(12, 8, 2)))]
    r = measure({"gauss": parts[0], "tiny": parts[1]}, images, settings)
    assert r["logsnr"] == settings.grid()
    enc = encode(parts[1], images[1][1], settings)
    assert r["per_image"]["tiny"]["b"] == [b / 96 for b in enc.kl_bits]
    assert np.allclose(r["mean"]["gauss"], np.mean([r["per_image"]["gauss"][n] for n in "ab"], axis=0))


def test_cli_model_kl_writes_composite(weights, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(registry, "retired_weights_dir", lambda: None)  # only these weights
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_image(16, 12, i)).save(folder / f"im{i}.png")
    out = weights / "hy.safetensors"
    assert main(["experiments", "model-kl", "--models", "gauss,tiny", "--images", str(folder), "--grid-steps", "4",
                 "--max-size", "12", "--json", "--write-composite", str(out)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["image_sizes"] == {"im0": [12, 9], "im1": [12, 9]} and len(r["mean"]["gauss"]) == 4
    comp = load_model("hy", weights)
    assert comp.switch_logsnr == (r["switch"]["switch_logsnr"],)
    assert r["composite"]["content_hash"] == f"{comp.content_hash:016x}"
    table = format_table(r)
    assert len([ln for ln in table.splitlines() if ln[:4].strip().isdigit()]) == 4
    assert f"recommended switch: gauss for λ < {r['switch']['switch_logsnr']:g}" in table
    assert main(["experiments", "model-kl", "--models", "gauss,tiny,tiny2", "--images", str(folder),
                 "--write-composite", str(out)]) == 1
    assert "exactly two models" in capsys.readouterr().err
    # Refused before any measurement: a part as the output, overwriting a non-composite model,
    # tuning on the development evaluation photos.
    for target, extra, message in [(weights / "tiny.safetensors", [], "its own parts"),
                                   (weights / "tiny2.safetensors", [], "refusing to overwrite"),
                                   (out, ["--dev-images"], "held-out photos")]:
        src = extra or ["--images", str(folder)]
        assert main(["experiments", "model-kl", "--models", "gauss,tiny", *src, "--write-composite",
                     str(target)]) == 1
        assert message in capsys.readouterr().err


def test_cli_model_kl_measures_the_parts_it_records(weights, monkeypatch, capsys, tmp_path):
    # The shipped folder and the composite's folder hold different 'tiny' models: the switch
    # must be measured on (and record) the files next to the composite.
    monkeypatch.setattr(registry, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(registry, "retired_weights_dir", lambda: None)  # only these weights
    other = tmp_path / "other"
    other.mkdir()
    for name in ("gauss", "tiny"):
        (other / f"{name}.safetensors").write_bytes((weights / f"{name}.safetensors").read_bytes())
    _save_tiny_unet(other / "tiny.safetensors", 5)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(_image(16, 12, 0)).save(folder / "im0.png")
    assert main(["experiments", "model-kl", "--models", "gauss,tiny", "--images", str(folder), "--grid-steps", "4",
                 "--max-size", "12", "--json", "--write-composite", str(other / "hy.safetensors")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model_hashes"]["tiny"] == f"{content_hash(other / 'tiny.safetensors'):016x}"
    assert r["model_hashes"]["tiny"] != f"{content_hash(weights / 'tiny.safetensors'):016x}"
    assert load_model("hy", other).parts[1].content_hash == content_hash(other / "tiny.safetensors")

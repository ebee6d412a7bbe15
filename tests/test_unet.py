import pytest
import torch
from fastdiffc.diffusion.vp import alpha_sigma
from fastdiffc.models.unet import UNet, UNetConfig, UNetDenoiser, file_content_hash, load_unet, read_config

TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4, attn_head_dim=8)


def _randomise(net, seed=0):
    """Zero-initialised output layers make a fresh net predict v = 0; perturb them so tests see real outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("hw", [(37, 29), (1, 1), (16, 16), (5, 70)])
def test_any_size_keeps_shape(hw):
    torch.manual_seed(0)
    net = _randomise(UNet(UNetConfig(**TINY))).eval()
    z = torch.randn(2, 3, *hw)
    out = net(z, torch.tensor([0.0, 3.0]))
    assert out.shape == z.shape
    assert torch.isfinite(out).all()


def test_fresh_net_denoiser_is_alpha_z():
    """conv_out starts at zero, so v̂ = 0 and the Denoiser protocol returns x̂0 = α z exactly."""
    den = UNetDenoiser(UNet(UNetConfig(**TINY)))
    z = torch.randn(1, 3, 13, 11)
    lam = torch.tensor([1.5])
    a, _ = alpha_sigma(lam)
    torch.testing.assert_close(den(z, lam), a * z, rtol=0, atol=1e-6)


def test_batch_elements_are_independent():
    torch.manual_seed(1)
    net = _randomise(UNet(UNetConfig(**TINY))).eval()
    z = torch.randn(3, 3, 24, 20)
    lam = torch.tensor([-2.0, 0.5, 4.0])
    with torch.inference_mode():
        full = net(z, lam)
        single = net(z[1:2], lam[1:2])
    torch.testing.assert_close(full[1:2], single, rtol=1e-4, atol=1e-5)


def test_logsnr_changes_output():
    torch.manual_seed(2)
    net = _randomise(UNet(UNetConfig(**TINY))).eval()
    z = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(net(z, torch.tensor([-5.0])), net(z, torch.tensor([5.0])))


def test_cond_channels():
    torch.manual_seed(3)
    net = _randomise(UNet(UNetConfig(cond_channels=2, **TINY))).eval()
    z, c = torch.randn(1, 3, 17, 9), torch.randn(1, 2, 17, 9)
    out = net(z, torch.tensor([0.0]), c)
    assert out.shape == z.shape
    assert not torch.allclose(out, net(z, torch.tensor([0.0]), torch.zeros_like(c)))
    with pytest.raises(ValueError, match="cond"):
        net(z, torch.tensor([0.0]))
    plain = UNet(UNetConfig(**TINY))
    with pytest.raises(ValueError, match="without conditioning"):
        plain(z, torch.tensor([0.0]), c)


def test_bad_input_shape():
    net = UNet(UNetConfig(**TINY))
    with pytest.raises(ValueError, match="expected z"):
        net(torch.randn(1, 1, 8, 8), torch.tensor([0.0]))


def test_bad_config():
    with pytest.raises(ValueError, match="prediction"):
        UNetConfig(prediction="score")
    with pytest.raises(ValueError, match="unknown UNet config"):
        UNetConfig.from_dict({"base_chanels": 4})


def test_eps_prediction_wrapper():
    torch.manual_seed(4)
    net = _randomise(UNet(UNetConfig(prediction="eps", **TINY))).eval()
    den = UNetDenoiser(net)
    z, lam = torch.randn(1, 3, 8, 8), torch.tensor([2.0])
    a, s = alpha_sigma(lam)
    torch.testing.assert_close(den(z, lam), (z - s * net(z, lam)) / a)


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(5)
    net = _randomise(UNet(UNetConfig(**TINY))).eval()
    path = tmp_path / "m.safetensors"
    UNetDenoiser(net).save(path, {"note": "test"})
    meta = read_config(path)
    assert meta["class"] == "unet" and meta["base_channels"] == 8 and meta["note"] == "test"
    loaded = UNetDenoiser.load(path)
    assert loaded.name == "m"
    assert isinstance(loaded.content_hash, int) and 0 <= loaded.content_hash < 2**64
    assert loaded.content_hash == file_content_hash(path)
    z, lam = torch.randn(2, 3, 19, 23), torch.tensor([0.3, -1.0])
    for (ka, a), (kb, b) in zip(loaded.net.state_dict().items(), net.state_dict().items()):
        assert ka == kb and torch.equal(a, b)  # bit-exact weights
    with torch.inference_mode():  # loaded models run channels_last: same maths, other summation order
        torch.testing.assert_close(loaded(z, lam), UNetDenoiser(net)(z, lam), rtol=1e-5, atol=1e-6)
    # a different set of weights gives a different content hash
    _randomise(net, seed=9)
    other = tmp_path / "o.safetensors"
    save = UNetDenoiser(net)
    save.save(other)
    assert file_content_hash(other) != loaded.content_hash


def test_load_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(ValueError, match="fastdiffc_config"):
        load_unet(p)
    save_file({"w": torch.zeros(2)}, str(p), metadata={"fastdiffc_config": '{"class": "gaussian"}'})
    with pytest.raises(ValueError, match="not 'unet'"):
        load_unet(p)


def test_bench_unet_json(capsys):
    import json

    from fastdiffc.cli import main

    assert main(["bench", "unet", "--json", "--height", "32", "--width", "48", "--repeats", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["params"] > 100_000 and r["flops_per_pixel"] > 1000
    assert r["seconds"] > 0 and r["seconds_768x512"] is None  # only reported at 768x512


def test_enable_compile_keeps_outputs():
    torch.manual_seed(6)
    den = UNetDenoiser(_randomise(UNet(UNetConfig(**TINY))).eval())
    z, lam = torch.randn(1, 3, 16, 16), torch.tensor([1.0])
    with torch.inference_mode():
        want = den(z, lam)
        got = den.enable_compile()(z, lam)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_channels_last_matches_nchw():
    torch.manual_seed(7)
    den = UNetDenoiser(_randomise(UNet(UNetConfig(**TINY))).eval())
    z, lam = torch.randn(2, 3, 21, 18), torch.tensor([0.5, 3.0])
    with torch.inference_mode():
        want = den(z, lam)
        got = den.use_channels_last()(z, lam)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_label_and_scalar_conditioning():
    """DIRAC's conditioning: labels and scalars steer the output; wrong shapes are clear errors."""
    cfg = UNetConfig(**{**TINY, "num_labels": 3, "scalar_features": 2, "cond_channels": 3, "prediction": "x"})
    torch.manual_seed(0)
    net = UNet(cfg).eval()
    for p in net.parameters():  # zero-initialised output layers would hide the conditioning
        torch.nn.init.normal_(p, std=0.05)
    z, c, lam = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.tensor([0.0, 0.0])
    label, scalars = torch.tensor([0, 1]), torch.zeros(2, 2)
    with torch.no_grad():
        a = net(z, lam, c, label, scalars)
        b = net(z, lam, c, torch.tensor([2, 1]), scalars)
        d = net(z, lam, c, label, torch.ones(2, 2))
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    assert not torch.allclose(a, d)
    with pytest.raises(ValueError, match="label"):
        net(z, lam, c, None, scalars)
    with pytest.raises(ValueError, match="out of range"):
        net(z, lam, c, torch.tensor([0, 3]), scalars)
    with pytest.raises(ValueError, match="scalars"):
        net(z, lam, c, label, torch.zeros(2, 3))

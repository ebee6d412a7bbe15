import json

import fastdiffc
import pytest
import torch
from fastdiffc.cli import main
from fastdiffc.models.registry import content_hash, list_models, load_model
from fastdiffc.models.unet import UNet, UNetConfig, UNetDenoiser
from safetensors.torch import save_file

TINY = UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4, attn_head_dim=8)


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    UNetDenoiser(UNet(TINY)).save(tmp_path / "tiny.safetensors")
    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))  # no config: not a model
    save_file({"w": torch.zeros(3)}, str(tmp_path / "future.safetensors"),
              metadata={"fastdiffc_config": json.dumps({"class": "hyperprior9000"})})
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    return tmp_path


def test_list_models(weights):
    infos = list_models(weights)
    assert [(m.name, m.cls) for m in infos] == [("future", "hyperprior9000"), ("tiny", "unet")]
    assert infos[1].config["base_channels"] == 8


def test_load_model_sets_identity(weights):
    m = load_model("tiny", weights)
    assert isinstance(m, UNetDenoiser)
    assert m.name == "tiny"
    assert m.content_hash == content_hash(weights / "tiny.safetensors")
    assert 0 <= m.content_hash < 2**64
    z = torch.randn(1, 3, 9, 9)
    assert m(z, torch.tensor([0.0])).shape == z.shape


def test_unknown_name_lists_available(weights):
    with pytest.raises(fastdiffc.ModelNotFoundError, match=r"no model named 'nope'; available: future, tiny"):
        load_model("nope", weights)
    with pytest.raises(fastdiffc.ModelNotFoundError, match="cannot load"):
        load_model("future", weights)


def test_content_hash_tracks_bytes(weights):
    p = weights / "tiny.safetensors"
    h = content_hash(p)
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    assert content_hash(p) != h


def test_package_level_load_model_error():
    with pytest.raises(fastdiffc.ModelNotFoundError, match="available"):
        fastdiffc.load_model("definitely-not-a-model")


def test_cli_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {m.name for m in list_models()} == {r["name"] for r in rows}
    for r in rows:
        assert len(r["content_hash"]) == 16


def test_default_diffc_model_is_a_shipped_model():
    from fastdiffc.models.registry import default_model_name, list_models

    name = default_model_name("diffc")
    assert name in {m.name for m in list_models()}


def test_default_model_for_unknown_pipeline_is_a_clear_error():
    from fastdiffc.errors import ModelNotFoundError
    from fastdiffc.models.registry import default_model_name

    with pytest.raises(ModelNotFoundError, match="no default model for pipeline 'nope'"):
        default_model_name("nope")


@pytest.mark.parametrize("name, holder", [
    ("diffc_v1_hybrid20261122_32x48", "hybrid-20261122"),  # the first hybrid default (2026-11-30, built 11-22)
    ("diffc_v4_hybrid20261130_32x48", "hybrid-20261130"),  # the default 2026-11-30 … 2026-12-03
    ("diffc_v4_hybrid20261203_32x48", "hybrid-20261203"),  # the third UNet's (2026-12-03, the same day replaced)
    ("diffc_v4_hybrid20261203b_32x48", "hybrid-20261203b"),  # the fourth UNet's (2026-12-03, replaced the next session)
    ("diffc_v4_hybrid_unet5_32x48", "hybrid-20261203c"),  # the fifth UNet's (2026-12-03, replaced the next session)
    ("diffc_v4_hybrid_unet6_32x48", "hybrid"),  # today's (the sixth UNet: the fifth trained 81 minutes more, bfloat16)
])
def test_diffc_defaults_decode_their_files(name, holder):
    """As for CDC below: a DiffC file names 'hybrid' with the hash of the default that wrote it and
    decodes through whichever shipped file has that hash (a retired one: hybrid-20261122 /
    unet-20261122, hybrid-20261130 / unet-20261130, hybrid-20261203 / unet-20261203,
    hybrid-20261203b / unet-20261203b, hybrid-20261203c / unet-20261203c, in fastdiffc-retired).
    Written and decoded by that release on this machine; the RCC replay is bit-exact, the model calls
    are float32 maths, hence ≤ 2 grey levels."""
    from pathlib import Path

    import numpy as np
    from fastdiffc import container, load_codec
    from fastdiffc.models.registry import load_model
    from PIL import Image

    golden = Path(__file__).parent / "golden"
    data = (golden / f"{name}.fdc").read_bytes()
    header = container.read(data).header
    assert header.model_name == "hybrid" and header.model_hash == load_model(holder).content_hash
    codec = load_codec("diffc", recon_steps=4)
    for method in ("denoise", "flow"):  # flow: a version-5 file's output filter (golden files from v5 on)
        if method == "flow" and not (golden / f"{name}_flow.png").exists():
            assert header.params_version < 5
            continue
        out = np.asarray(codec.decompress(data, method=method), dtype=np.int16)
        want = np.asarray(Image.open(golden / f"{name}_{method}.png"), dtype=np.int16)
        assert np.abs(out - want).max() <= 2, method


@pytest.mark.parametrize("name, holder", [
    ("cdc_v1_cdc20261202_48x64", "cdc-20261202"),   # the first default (retired 2026-12-02)
    ("cdc_v1_cdc20261202b_48x64", "cdc-20261202b"),  # the second (2026-12-02 … 2026-12-03)
    ("cdc_v1_cdc20261203_48x64", "cdc"),             # today's default
])
def test_cdc_defaults_decode_their_files(name, holder):
    """A CDC file names 'cdc' with the content hash of the default that wrote it; after a
    retrained model takes the name, it decodes through the retired one (found by hash).
    Tolerance as for every decode after the entropy decoder (float maths): ≤ 3 grey levels,
    ≤ 0.5 on average; the latents themselves are bit-exact."""
    from pathlib import Path

    import numpy as np
    from fastdiffc import container, load_codec
    from fastdiffc.models.registry import load_model
    from PIL import Image

    golden = Path(__file__).parent / "golden"
    data = (golden / f"{name}.fdc").read_bytes()
    ref = container.read(data).header.model("decoder")
    assert ref.name == "cdc" and ref.hash == load_model(holder).content_hash
    assert (ref.hash == load_model("cdc").content_hash) == (holder == "cdc")
    codec = load_codec("cdc")
    for k in (0, 2):
        want = np.asarray(Image.open(golden / f"{name}_s{k}.png"), dtype=np.int16)
        diff = np.abs(np.asarray(codec.decompress(data, decode_steps=k), dtype=np.int16) - want)
        assert diff.max() <= 3 and diff.mean() <= 0.5, (k, diff.max(), diff.mean())


def make_cdc_golden(name: str) -> None:  # pragma: no cover - run by hand before the CDC default changes
    """Write a golden CDC file of the shipped default and its decodes at 0 and 2 steps:
    `python -c "import tests.test_registry as t; t.make_cdc_golden('cdc_v1_cdc20261203_48x64')"`."""
    from pathlib import Path

    from fastdiffc import load_codec
    from PIL import Image

    golden = Path(__file__).parent / "golden"
    sample = Path(__file__).parent.parent / "python" / "fastdiffc" / "samples" / "sample.png"
    im = Image.open(sample).convert("RGB").crop((120, 40, 184, 88))
    codec = load_codec("cdc", seed=11)
    data = codec.compress(im, level=2)
    (golden / f"{name}.fdc").write_bytes(data)
    for k in (0, 2):
        codec.decompress(data, decode_steps=k).save(golden / f"{name}_s{k}.png")


def make_diffc_golden(name: str) -> None:  # pragma: no cover - run by hand before the DiffC default changes
    """Write a golden DiffC file of the shipped default (8 steps, tree codebook, the output filter) and its
    denoise and flow decodes (the flow one through the filter):
    `python -c "import tests.test_registry as t; t.make_diffc_golden('diffc_v4_hybrid20261130_32x48')"`."""
    from pathlib import Path

    from fastdiffc import load_codec
    from PIL import Image

    golden = Path(__file__).parent / "golden"
    sample = Path(__file__).parent.parent / "python" / "fastdiffc" / "samples" / "sample.png"
    im = Image.open(sample).convert("RGB").crop((120, 40, 168, 72))
    codec = load_codec("diffc", seed=5, recon_steps=4, precision="float32")
    data = codec.compress(im, steps=8)
    (golden / f"{name}.fdc").write_bytes(data)
    codec.decompress(data, method="denoise").save(golden / f"{name}_denoise.png")
    codec.decompress(data, method="flow").save(golden / f"{name}_flow.png")


def test_retired_defaults_are_listed_and_load():
    from fastdiffc.models.registry import list_models, load_model

    names = {m.name for m in list_models()}
    assert {"gaussian", "hybrid", "hybrid-20261122", "unet-20261122", "hybrid-20261130", "unet-20261130",
            "hybrid-20261203", "unet-20261203", "dirac-20261202", "dirac-20261202b", "dirac-20261203",
            "dirac-20261203b", "hybrid-20261203b", "unet-20261203b", "dirac-20261203c",
            "hybrid-20261203c", "unet-20261203c",
            "cdc-20261202", "cdc-20261202b"} <= names
    old = load_model("hybrid-20261122")
    assert old.content_hash == 0x95229263A07DB4BD


def test_retired_defaults_live_in_their_own_package_and_are_found_by_hash():
    """Replaced defaults move to the fastdiffc-retired package (retired/): the main wheel carries only
    today's defaults and what they need, and a file written by a retired default decodes through it
    by its hash; without the package the error names the package to install."""
    from pathlib import Path

    from fastdiffc import load_codec
    from fastdiffc.errors import ModelMismatchError, ModelNotFoundError
    from fastdiffc.models import registry

    retired = registry.retired_weights_dir()
    assert retired is not None, "the tests need the retired defaults: pip install ./retired (or PYTHONPATH=retired)"
    main = {p.stem for p in registry.WEIGHTS_DIR.glob("*.safetensors")}
    # Today's defaults, plus cdc-20261202: the CDC model the shipped DIRAC model's cdc base was trained on.
    assert main == {"cdc", "cdc-20261202", "dirac", "gaussian", "hybrid", "unet"}
    assert "cdc-20261202" == registry.load_model("dirac").spec.cdc_model
    old = {p.stem for p in retired.glob("*.safetensors")}
    assert {"hybrid-20261122", "unet-20261122", "dirac-20261203", "unet-20261203", "dirac-20261203b",
            "unet-20261203b", "hybrid-20261203b", "dirac-20261203c", "unet-20261203c",
            "hybrid-20261203c"} <= old
    assert not old & main
    # A retired hybrid lives in the retired folder; its gaussian part is today's, in the main one.
    hybrid_old = next(m for m in registry.list_models() if m.name == "hybrid-20261122")
    assert hybrid_old.path.parent == retired and registry.composite_status(hybrid_old) == "ok"
    data = (Path(__file__).parent / "golden" / "diffc_v1_hybrid20261122_32x48.fdc").read_bytes()
    assert load_codec("diffc", recon_steps=2).decompress(data, method="denoise").size == (48, 32)
    registry_without = pytest.MonkeyPatch()
    try:
        registry_without.setattr(registry, "retired_weights_dir", lambda: None)
        assert "hybrid-20261122" not in {m.name for m in registry.list_models()}
        # 'hybrid' exists with other weights: a mismatch, and the message says where old weights are.
        with pytest.raises(ModelMismatchError, match="pip install fastdiffc-retired"):
            load_codec("diffc", recon_steps=2).decompress(data, method="denoise")
        with pytest.raises(ModelNotFoundError, match="fastdiffc-retired"):
            registry.load_model("dirac-20261203")
    finally:
        registry_without.undo()

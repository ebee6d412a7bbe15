"""Package foundation: native modules import, CUDA module reports devices, CLI basics."""

import json
import subprocess
import sys

import fastdiffc
import pytest
from fastdiffc.cli import main


def test_core_module_imports_and_reports_threads():
    from fastdiffc import _core

    assert _core.openmp_max_threads() >= 1
    assert isinstance(_core.compiler(), str) and _core.compiler()


def test_cuda_module_imports_and_reports_zero_devices_without_gpu():
    from fastdiffc import _cuda

    n = _cuda.device_count()
    assert isinstance(n, int) and n >= 0
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        assert n == 0
    assert _cuda.runtime_version() >= 12000


def test_openmp_threads_follow_env():
    code = "import fastdiffc._core as c; print(c.openmp_max_threads())"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "1"


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastdiffc {fastdiffc.__version__}"


def test_doctor_text_lists_modules(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "_core          loaded" in out
    assert "_cuda          loaded" in out
    assert "CUDA devices" in out
    assert fastdiffc.__version__ in out


def test_doctor_json(capsys):
    assert main(["doctor", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fastdiffc"] == fastdiffc.__version__
    assert info["core"]["loaded"] is True and info["core"]["openmp_threads"] >= 1
    assert info["cuda"]["loaded"] is True and info["cuda"]["devices"] >= 0
    assert isinstance(info["triton_usable"], bool)


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastdiffc", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("fastdiffc ")


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: fastdiffc" in capsys.readouterr().err


def test_kernels_package_importable():
    import fastdiffc.kernels as k

    assert isinstance(k.triton_available(), bool)

#!/usr/bin/env bash
# Developer build: compile the native modules into python/fastdiffc/ with plain CMake
# (incremental, ~seconds), for working from a source tree on PYTHONPATH=python.
# Users and CI install the wheel instead (pip install . / pip wheel .).
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=${FASTDIFFC_CUDA:-AUTO}
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DFASTDIFFC_CUDA="$cuda" \
  -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DPython_EXECUTABLE="$(command -v python)" >/dev/null
cmake --build build/dev
cmake --install build/dev >/dev/null
# fastdiffc.kernels lives at the top level in the source tree (see pyproject wheel.packages).
[ -e python/fastdiffc/kernels ] || ln -s ../../kernels python/fastdiffc/kernels
echo "built: $(ls python/fastdiffc/*.so | xargs -n1 basename | tr '\n' ' ')"

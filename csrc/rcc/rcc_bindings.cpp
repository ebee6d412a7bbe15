// pybind11 bindings of the CPU RCC core (fastdiffc._core.rcc_*). Validates every argument,
// converts C++ std::invalid_argument into Python ValueError, and releases the GIL while computing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/translate.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "rcc/rcc_cpu.h"

namespace py = pybind11;

namespace fastdiffc {

namespace {

using rcc::Scheme;

Scheme parse_scheme(const std::string& s) {
  if (s == "pfr") return Scheme::kPfr;
  if (s == "importance") return Scheme::kImportance;
  throw py::value_error("unknown RCC scheme '" + s + "' (expected 'pfr' or 'importance')");
}

uint32_t checked_step(uint64_t step) {
  if (step >= rng::kStepLimit) throw py::value_error("step must be in [0, 2^28), got " + std::to_string(step));
  return static_cast<uint32_t>(step);
}

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using IndexArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

void require_1d(const py::buffer_info& info, const char* name) {
  if (info.ndim != 1) throw py::value_error(std::string(name) + " must be one-dimensional");
}

using bindings::translate;

py::array_t<int64_t> py_permutation(uint64_t seed, uint64_t step, int64_t dim) {
  rcc::check_step_args(dim, step);
  py::array_t<int64_t> out(dim);
  int64_t* p = out.mutable_data();
  const uint32_t s = checked_step(step);
  {
    py::gil_scoped_release release;
    translate([&] { rcc::permutation(seed, s, dim, p); return 0; });
  }
  return out;
}

py::array_t<int64_t> py_select(FloatArray mu_perm, int64_t chunks, int bits, uint64_t seed, uint64_t step,
                               const std::string& scheme) {
  const py::buffer_info info = mu_perm.request();
  require_1d(info, "mu_perm");
  const int64_t dim = info.shape[0];
  translate([&] { rcc::check_select_args(dim, chunks, bits, step); return 0; });
  const Scheme sc = parse_scheme(scheme);
  const float* mu = mu_perm.data();
  for (int64_t j = 0; j < dim; ++j) {
    if (!std::isfinite(mu[j])) throw py::value_error("mu contains NaN or infinity");
  }
  py::array_t<int64_t> out(chunks);
  int64_t* idx = out.mutable_data();
  const uint32_t s = checked_step(step);
  {
    py::gil_scoped_release release;
    translate([&] { rcc::select(mu, dim, chunks, bits, seed, s, sc, idx); return 0; });
  }
  return out;
}

py::array_t<double> py_chunk_scores(FloatArray mu_perm, int64_t chunks, int bits, uint64_t seed, uint64_t step,
                                    const std::string& scheme, int64_t chunk) {
  const py::buffer_info info = mu_perm.request();
  require_1d(info, "mu_perm");
  const int64_t dim = info.shape[0];
  translate([&] { rcc::check_select_args(dim, chunks, bits, step); return 0; });
  const Scheme sc = parse_scheme(scheme);
  py::array_t<double> out(int64_t{1} << bits);
  double* p = out.mutable_data();
  const float* mu = mu_perm.data();
  const uint32_t s = checked_step(step);
  py::gil_scoped_release release;
  translate([&] { rcc::chunk_scores(mu, dim, chunks, bits, seed, s, sc, chunk, p); return 0; });
  return out;
}

py::array_t<float> py_chosen(IndexArray indices, int64_t dim, int bits, uint64_t seed, uint64_t step) {
  const py::buffer_info info = indices.request();
  require_1d(info, "indices");
  const int64_t chunks = info.shape[0];
  translate([&] { rcc::check_select_args(dim, chunks, bits, step); return 0; });
  const int64_t* idx = indices.data();
  for (int64_t c = 0; c < chunks; ++c) {
    if (idx[c] < 0 || idx[c] >= (int64_t{1} << bits))
      throw py::value_error("candidate index " + std::to_string(idx[c]) + " out of range for bits_per_chunk " +
                            std::to_string(bits));
  }
  py::array_t<float> out(dim);
  float* p = out.mutable_data();
  const uint32_t s = checked_step(step);
  {
    py::gil_scoped_release release;
    translate([&] { rcc::chosen_candidates(idx, chunks, dim, seed, s, p); return 0; });
  }
  return out;
}

double py_generate(int64_t count, int64_t length, uint64_t seed) {
  py::gil_scoped_release release;
  return translate([&] { return rcc::generate_normals_checksum(count, length, seed); });
}

py::array_t<float> py_normal_stream(uint64_t seed, uint32_t domain, int64_t n, uint32_t stream) {
  translate([&] {
    if (n < 0 || n >= rcc::kDimLimit) throw std::invalid_argument("n must be in [0, 2^31), got " + std::to_string(n));
    return 0;
  });
  py::array_t<float> out(n);
  float* p = out.mutable_data();
  {
    py::gil_scoped_release release;
    translate([&] { rcc::normal_stream(seed, domain, stream, n, p); return 0; });
  }
  return out;
}

py::array_t<float> py_normal_table() {
  py::array_t<float> out(rng::kNormalTableSize);
  std::copy(rcc::normal_table(), rcc::normal_table() + rng::kNormalTableSize, out.mutable_data());
  return out;
}

py::array_t<int64_t> py_tree_select(FloatArray mu_perm, int64_t chunks, int depth, int level_bits, int beam,
                                    uint64_t seed, uint64_t step) {
  const py::buffer_info info = mu_perm.request();
  require_1d(info, "mu_perm");
  const int64_t dim = info.shape[0];
  translate([&] { rcc::check_tree_args(dim, chunks, depth, level_bits, beam, step); return 0; });
  const float* mu = mu_perm.data();
  for (int64_t j = 0; j < dim; ++j) {
    if (!std::isfinite(mu[j])) throw py::value_error("mu contains NaN or infinity");
  }
  py::array_t<int64_t> out({chunks, static_cast<int64_t>(depth)});
  int64_t* p = out.mutable_data();
  const uint32_t s = checked_step(step);
  {
    py::gil_scoped_release release;
    translate([&] { rcc::tree_select(mu, dim, chunks, depth, level_bits, beam, seed, s, p); return 0; });
  }
  return out;
}

py::array_t<float> py_tree_chosen(IndexArray paths, int64_t dim, int level_bits, uint64_t seed, uint64_t step) {
  const py::buffer_info info = paths.request();
  if (info.ndim != 2) throw py::value_error("paths must be two-dimensional (chunks, depth)");
  const int64_t chunks = info.shape[0];
  const int depth = static_cast<int>(info.shape[1]);
  translate([&] { rcc::check_tree_args(dim, chunks, depth, level_bits, 1, step); return 0; });
  py::array_t<float> out(dim);
  float* p = out.mutable_data();
  const int64_t* d = paths.data();
  const uint32_t s = checked_step(step);
  {
    py::gil_scoped_release release;
    translate([&] { rcc::tree_chosen(d, chunks, depth, level_bits, dim, seed, s, p); return 0; });
  }
  return out;
}

py::tuple py_philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed) {
  const rng::Philox4 r = rng::philox4x32_10(c0, c1, c2, c3, seed);
  return py::make_tuple(r.v[0], r.v[1], r.v[2], r.v[3]);
}

}  // namespace

void register_rcc(py::module_& m) {
  m.def("rcc_permutation", &py_permutation, py::arg("seed"), py::arg("step"), py::arg("dim"),
        "Shared permutation of range(dim) for (seed, step), int64 array.");
  m.def("rcc_select", &py_select, py::arg("mu_perm"), py::arg("chunks"), py::arg("bits"), py::arg("seed"),
        py::arg("step"), py::arg("scheme"),
        "Chosen candidate index of each of `chunks` chunks of mu (given in permuted order).");
  m.def("rcc_chunk_scores", &py_chunk_scores, py::arg("mu_perm"), py::arg("chunks"), py::arg("bits"),
        py::arg("seed"), py::arg("step"), py::arg("scheme"), py::arg("chunk"),
        "Selection scores of every candidate of one chunk (tests).");
  m.def("rcc_tree_select", &py_tree_select, py::arg("mu_perm"), py::arg("chunks"), py::arg("depth"),
        py::arg("level_bits"), py::arg("beam"), py::arg("seed"), py::arg("step"),
        "Tree-codebook RCC: the beam-searched path (chunks, depth) of every chunk.");
  m.def("rcc_tree_chosen", &py_tree_chosen, py::arg("paths"), py::arg("dim"), py::arg("level_bits"),
        py::arg("seed"), py::arg("step"), "Tree-codebook RCC: the leaves of the given paths, in permuted order.");
  m.def("rcc_chosen", &py_chosen, py::arg("indices"), py::arg("dim"), py::arg("bits"), py::arg("seed"),
        py::arg("step"), "The chosen candidates in permuted order, float32 (dim,).");
  m.def("rcc_generate_checksum", &py_generate, py::arg("count"), py::arg("length"), py::arg("seed"),
        "Bare Philox + table-normal generation of count x length normals (benchmark limit); returns their sum.");
  m.def("normal_stream", &py_normal_stream, py::arg("seed"), py::arg("domain"), py::arg("n"), py::arg("stream") = 0,
        "n float32 standard normals of Philox stream (seed, domain 3..15, stream), table transform.");
  m.def("rcc_normal_table", &py_normal_table, "The 65,536-entry float32 inverse-CDF table.");
  m.def("rcc_set_simd_path", [](const std::string& path) { translate([&] { rcc::set_simd_path(path); return 0; }); },
        py::arg("path"),
        "Force the RCC hot loop's SIMD path: 'auto' (default), 'avx512', 'avx2' or 'baseline' (tests/benchmarks); "
        "ValueError for a path this CPU lacks.");
  m.def("rcc_simd_path", &rcc::simd_path, "The SIMD path the next RCC call will run: 'avx512', 'avx2' or 'baseline'.");
  m.def("rcc_last_simd_path", &rcc::last_simd_path,
        "The SIMD path the last rcc_select / rcc_chunk_scores / rcc_generate_checksum call ran ('' before any).");
  m.def("rcc_simd_paths", &rcc::simd_paths, "The SIMD paths this CPU and build support, best first.");
  m.def("philox4x32_10", &py_philox, py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("seed"),
        "One Philox4x32-10 block (4 words) for counter (c0..c3) and 64-bit key seed.");
}

}  // namespace fastdiffc

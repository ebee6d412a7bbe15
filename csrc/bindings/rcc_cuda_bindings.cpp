// pybind11 bindings of the CUDA RCC launcher (fastdiffc._cuda.rcc_*). Argument validation and the
// launch plan are host code: they work, and are tested, without a GPU.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/translate.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda/rcc_cuda.h"

namespace py = pybind11;

namespace fastdiffc::cuda {

namespace {

using bindings::translate;

py::dict py_plan(int64_t dim, int64_t chunks, int bits, uint64_t step) {
  const RccLaunchPlan p = translate([&] { return plan_rcc_launch(dim, chunks, bits, step); });
  py::dict d;
  d["dim"] = p.dim;
  d["chunks"] = p.chunks;
  d["candidates"] = p.candidates;
  d["threads_per_block"] = p.threads_per_block;
  d["blocks_per_chunk"] = p.blocks_per_chunk;
  d["chunks_per_launch"] = p.chunks_per_launch;
  d["launches"] = p.launches;
  d["blocks_per_launch"] = p.blocks_per_launch;
  d["max_chunk_length"] = p.max_chunk_length;
  d["scratch_bytes"] = p.scratch_bytes;
  return d;
}

py::array_t<int64_t> py_select(py::array_t<float, py::array::c_style | py::array::forcecast> mu_perm, int64_t chunks,
                               int bits, uint64_t seed, uint64_t step, const std::string& scheme) {
  const py::buffer_info info = mu_perm.request();
  if (info.ndim != 1) throw py::value_error("mu_perm must be one-dimensional");
  const int64_t dim = info.shape[0];
  translate([&] { return plan_rcc_launch(dim, chunks, bits, step); });
  int scheme_id = -1;
  if (scheme == "pfr") scheme_id = 0;
  if (scheme == "importance") scheme_id = 1;
  if (scheme_id < 0) throw py::value_error("unknown RCC scheme '" + scheme + "' (expected 'pfr' or 'importance')");
  const float* mu = mu_perm.data();
  for (int64_t j = 0; j < dim; ++j) {
    if (!std::isfinite(mu[j])) throw py::value_error("mu contains NaN or infinity");
  }
  py::array_t<int64_t> out(chunks);
  int64_t* idx = out.mutable_data();
  {
    py::gil_scoped_release release;
    translate([&] {
      rcc_select(mu, dim, chunks, bits, seed, static_cast<uint32_t>(step), scheme_id, idx);
      return 0;
    });
  }
  return out;
}

py::array_t<int64_t> py_tree_select(py::array_t<float, py::array::c_style | py::array::forcecast> mu_perm,
                                    int64_t chunks, int depth, int level_bits, int beam, uint64_t seed, uint64_t step) {
  const py::buffer_info info = mu_perm.request();
  if (info.ndim != 1) throw py::value_error("mu_perm must be one-dimensional");
  const int64_t dim = info.shape[0];
  if (step >= (uint64_t{1} << 28)) throw py::value_error("step must be in [0, 2^28)");
  const float* mu = mu_perm.data();
  for (int64_t j = 0; j < dim; ++j) {
    if (!std::isfinite(mu[j])) throw py::value_error("mu contains NaN or infinity");
  }
  py::array_t<int64_t> out({chunks, static_cast<int64_t>(depth > 0 ? depth : 1)});
  int64_t* p = out.mutable_data();
  {
    py::gil_scoped_release release;
    translate([&] {
      rcc_tree_select(mu, dim, chunks, depth, level_bits, beam, seed, static_cast<uint32_t>(step), p);
      return 0;
    });
  }
  return out;
}

}  // namespace

void register_rcc_cuda(py::module_& m) {
  m.def("rcc_tree_select", &py_tree_select, py::arg("mu_perm"), py::arg("chunks"), py::arg("depth"),
        py::arg("level_bits"), py::arg("beam"), py::arg("seed"), py::arg("step"),
        "Tree-codebook RCC selection on the GPU: the same paths as _core.rcc_tree_select.");
  m.def("rcc_plan_launch", &py_plan, py::arg("dim"), py::arg("chunks"), py::arg("bits"), py::arg("step") = 0,
        "Launch plan of the RCC scoring kernel (validation, grid sizes, batching); host only.");
  m.def("rcc_chunk_offset", [](int64_t c, int64_t dim, int64_t chunks) {
          return translate([&] { return rcc_chunk_offset(c, dim, chunks); });
        },
        py::arg("chunk"), py::arg("dim"), py::arg("chunks"), "64-bit start offset of a chunk, as the kernels compute it.");
  m.def("rcc_select", &py_select, py::arg("mu_perm"), py::arg("chunks"), py::arg("bits"), py::arg("seed"),
        py::arg("step"), py::arg("scheme"),
        "Chosen candidate per chunk on the GPU (RuntimeError without a device); same indices as _core.rcc_select.");
  m.attr("kMaxBlocksPerLaunch") = kMaxBlocksPerLaunch;
}

}  // namespace fastdiffc::cuda

// fastdiffc._cuda: GPU implementations of the native core. Importable on machines
// without a GPU; device_count() then returns 0.
#include <pybind11/pybind11.h>

#include "cuda/api.h"

namespace py = pybind11;

#ifndef FASTDIFFC_VERSION
#define FASTDIFFC_VERSION "dev"
#endif

namespace fastdiffc::cuda {
void register_rcc_cuda(py::module_& m);
}

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastdiffc CUDA kernels";
  m.attr("__version__") = FASTDIFFC_VERSION;
  m.def("device_count", &fastdiffc::cuda::device_count,
        "Number of usable CUDA devices (0 without a GPU or driver).");
  m.def("runtime_version", &fastdiffc::cuda::runtime_version);
  fastdiffc::cuda::register_rcc_cuda(m);
}

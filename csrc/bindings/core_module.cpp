// fastdiffc._core: CPU native code (reverse channel coding, Philox RNG).
#include <pybind11/pybind11.h>

#include <omp.h>

#include <string>

namespace py = pybind11;

#ifndef FASTDIFFC_VERSION
#define FASTDIFFC_VERSION "dev"
#endif

namespace fastdiffc {
// Each component registers its functions here; defined in its own .cpp file.
void register_rcc(py::module_& m);
}  // namespace fastdiffc

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastdiffc native CPU core";
  m.attr("__version__") = FASTDIFFC_VERSION;
  m.def("openmp_max_threads", []() { return omp_get_max_threads(); },
        "Threads OpenMP will use (honours OMP_NUM_THREADS).");
  m.def("set_openmp_threads", [](int n) {
          if (n < 1) throw py::value_error("thread count must be >= 1, got " + std::to_string(n));
          omp_set_num_threads(n);
        }, py::arg("n"), "Threads for later OpenMP regions started from this thread (fastdiffc --threads).");
  m.def("compiler", []() {
#if defined(__clang__)
    return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("gcc ") + __VERSION__;
#else
    return std::string("unknown");
#endif
  });
  fastdiffc::register_rcc(m);
}

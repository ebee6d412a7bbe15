// Placeholder registration; the RCC implementation replaces this file's body.
#include <pybind11/pybind11.h>
namespace py = pybind11;
namespace fastdiffc {
void register_rcc(py::module_& m) { (void)m; }
}  // namespace fastdiffc

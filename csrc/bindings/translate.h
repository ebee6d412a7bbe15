// Shared by the pybind11 modules: native argument checks throw std::invalid_argument, which
// Python callers should see as ValueError (not RuntimeError).
#pragma once

#include <pybind11/pybind11.h>

#include <stdexcept>

namespace fastdiffc::bindings {

template <typename F>
auto translate(F&& f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    throw pybind11::value_error(e.what());
  }
}

}  // namespace fastdiffc::bindings

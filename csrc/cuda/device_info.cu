// Device queries for fastdiffc._cuda. No pybind11 here: plain C ABI-ish functions
// called from csrc/bindings/cuda_module.cpp.
#include <cuda_runtime.h>

#include "cuda/api.h"

namespace fastdiffc::cuda {

int device_count() {
  int n = 0;
  // No driver or no device: report 0 instead of failing, so the module imports
  // everywhere and callers fall back to the CPU.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

}  // namespace fastdiffc::cuda

// Host-side entry points of the CUDA kernels (implemented in .cu files, called
// from the pybind11 module, which never includes CUDA headers).
#pragma once

namespace fastdiffc::cuda {

int device_count();     // 0 when no driver/device is present
int runtime_version();  // CUDA runtime the module was built with (e.g. 13000)

}  // namespace fastdiffc::cuda

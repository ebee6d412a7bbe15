// Host-side API of the CUDA RCC kernels (implemented in rcc_cuda.cu; no CUDA headers here).
// The launch plan (validation, grid sizing, 64-bit chunk offsets, batching of very large steps)
// is plain host code and runs, and is tested, on machines without a GPU.
#pragma once

#include <cstdint>

namespace fastdiffc::cuda {

struct RccLaunchPlan {
  int64_t dim = 0;
  int64_t chunks = 0;
  int64_t candidates = 0;          // 2^bits
  int threads_per_block = 0;       // candidates per CUDA block (multiple of 32, <= 256)
  int64_t blocks_per_chunk = 0;    // ceil(candidates / threads_per_block)
  int64_t chunks_per_launch = 0;   // chunks handled by one launch of the scoring kernel
  int64_t launches = 0;            // ceil(chunks / chunks_per_launch); 1 unless the step is enormous
  int64_t blocks_per_launch = 0;   // grid size of a full launch
  int64_t max_chunk_length = 0;    // longest chunk (dimensions)
  int64_t scratch_bytes = 0;       // device scratch per launch (arrival offsets + per-block winners)
};

// Largest grid (blocks) one scoring launch may use: bounds device scratch memory, and stays far
// below CUDA's 2^31 - 1 grid limit.
constexpr int64_t kMaxBlocksPerLaunch = int64_t{1} << 22;

// Validates (dim, chunks, bits, step) exactly as the CPU path does; throws std::invalid_argument.
RccLaunchPlan plan_rcc_launch(int64_t dim, int64_t chunks, int bits, uint64_t step);

// Start of chunk c (64-bit arithmetic, the function the kernels use).
int64_t rcc_chunk_offset(int64_t c, int64_t dim, int64_t chunks);

// Candidate selection on the current device: the same indices as fastdiffc::rcc::select.
// Throws std::invalid_argument for bad arguments, std::runtime_error without a device or on a CUDA error.
void rcc_select(const float* mu_perm, int64_t dim, int64_t chunks, int bits, uint64_t seed, uint32_t step,
                int scheme, int64_t* indices);

// Tree-codebook selection (scheme "tree") on the current device: the same paths[chunks * depth] as
// fastdiffc::rcc::tree_select. Throws like rcc_select.
void rcc_tree_select(const float* mu_perm, int64_t dim, int64_t chunks, int depth, int level_bits, int beam,
                     uint64_t seed, uint32_t step, int64_t* paths);

}  // namespace fastdiffc::cuda

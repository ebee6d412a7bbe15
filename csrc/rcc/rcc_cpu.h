// CPU implementation of RCC (docs/design.md §5): permutation, candidate selection, chosen candidates.
// Plain C++ (no pybind11); arguments are validated by the callers in rcc_bindings.cpp and
// again here (check_* throw std::invalid_argument), so no entry point reads out of bounds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rcc/rcc_common.h"

namespace fastdiffc::rcc {

// The 65,536 float32 normal quantiles (built once, thread-safe).
const float* normal_table();

void check_step_args(int64_t dim, uint64_t step);
void check_select_args(int64_t dim, int64_t chunks, int bits, uint64_t step);

// perm[0..dim): shared permutation of the dimensions for (seed, step).
void permutation(uint64_t seed, uint32_t step, int64_t dim, int64_t* perm);

// indices[0..chunks): chosen candidate per chunk; mu_perm is mu in permuted order.
void select(const float* mu_perm, int64_t dim, int64_t chunks, int bits, uint64_t seed, uint32_t step,
            Scheme scheme, int64_t* indices);

// scores[0..2^bits): score of every candidate of one chunk (for tests against the reference).
void chunk_scores(const float* mu_perm, int64_t dim, int64_t chunks, int bits, uint64_t seed, uint32_t step,
                  Scheme scheme, int64_t chunk, double* scores);

// out[0..dim): the chosen candidate of each chunk laid out in permuted order.
void chosen_candidates(const int64_t* indices, int64_t chunks, int64_t dim, uint64_t seed, uint32_t step,
                       float* out);

// out[0..n): n standard normals (the table transform) of stream `stream` in `domain` (3..15):
// Philox counter (j / 8, stream, 0, domain << 28), normal j = table[16-bit half j % 8 of the block].
// The shared randomness of the pipelines besides RCC (DiffC's z_0 and sampler noise).
void normal_stream(uint64_t seed, uint32_t domain, uint32_t stream, int64_t n, float* out);

// Bare generation loop (the benchmark's speed limit): normals of candidates 0..count-1 of
// chunk 0 at step 0, each of `length` positions, summed so the work cannot be optimised away.
double generate_normals_checksum(int64_t count, int64_t length, uint64_t seed);

// ---- tree codebook (scheme "tree"; reference: python/fastdiffc/rcc_tree.py) -----------------
void check_tree_args(int64_t dim, int64_t chunks, int depth, int level_bits, int beam, uint64_t step);

// paths[chunks * depth]: the beam-searched leaf of every chunk's tree (digits, level order).
void tree_select(const float* mu_perm, int64_t dim, int64_t chunks, int depth, int level_bits, int beam,
                 uint64_t seed, uint32_t step, int64_t* paths);

// out[0..dim): the leaves of the given paths, (g_1 + ... + g_depth) / sqrt(depth), in permuted order.
void tree_chosen(const int64_t* paths, int64_t chunks, int depth, int level_bits, int64_t dim, uint64_t seed,
                 uint32_t step, float* out);

// SIMD path of the hot loop: "auto" (default: the best this CPU has), "avx512" (hardware gathers),
// "avx2" or "baseline" (x86-64 SSE2; the only path off x86 or with FASTDIFFC_NO_CLONES). Forcing a
// path the CPU lacks throws std::invalid_argument. Every path computes identical bits; tests compare
// them and check with last_simd_path that the forced path is the one that ran.
void set_simd_path(const std::string& name);
std::string simd_path();                  // the path the next call will run
std::string last_simd_path();             // the path the last select / chunk_scores / generate ran ("" before any)
std::vector<std::string> simd_paths();    // the paths this CPU and build support, best first

}  // namespace fastdiffc::rcc

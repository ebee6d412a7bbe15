// RCC definitions shared by the CPU implementation and the CUDA kernels (docs/design.md §5).
// Every formula here has a twin in python/fastdiffc/rcc_numpy.py; the three agree bit for bit.
#pragma once

#include <cstdint>

#include "rng/detmath.h"
#include "rng/philox.h"

namespace fastdiffc::rcc {

constexpr int kMaxBits = 20;                  // at most 2^20 candidates per chunk
constexpr int64_t kDimLimit = int64_t{1} << 31;  // dimensions are 31-bit integers
constexpr int kArrivalFractionBits = 28;      // exponentials as fixed point, units of 2^-28
constexpr int kLanes = 16;                    // dot products: 16 interleaved double lanes + fixed tree

enum class Scheme : int { kPfr = 0, kImportance = 1 };

// start of chunk c when dim positions are split into n near-equal chunks: floor(c * dim / n).
FASTDIFFC_HD int64_t chunk_start(int64_t c, int64_t dim, int64_t n) { return (c * dim) / n; }

// Exponential variate E_i of candidate i in chunk c as an integer in units of 2^-28 (>= 1), so
// that sums of them (the PFR arrival times) are exact in any summation order.
FASTDIFFC_HD uint64_t arrival_increment_from_words(uint32_t r0, uint32_t r1) {
  const uint64_t u52 = (static_cast<uint64_t>(r1) << 20) | (r0 >> 12);
  // u in (0, 1), >= 2^-53: always a normal double. int64 conversions: exact, and vectorisable.
  const double u = (static_cast<double>(static_cast<int64_t>(u52)) * 2.0 + 1.0) * 0x1p-53;
  const double e = -rng::det_log_normal(u);
  return static_cast<uint64_t>(static_cast<int64_t>(floor(e * static_cast<double>(int64_t{1} << kArrivalFractionBits)))) +
         1u;
}

FASTDIFFC_HD uint64_t arrival_increment(uint64_t seed, uint32_t step, uint32_t chunk, uint32_t candidate) {
  const rng::Philox4 r = rng::philox4x32_10(0u, candidate, chunk,
                                            rng::counter_word3(rng::kDomainSelection, step), seed);
  return arrival_increment_from_words(r.v[0], r.v[1]);
}

// The random part of a candidate's score: log T_i (pfr, T_i = sum of increments up to i) or log E_i.
FASTDIFFC_HD double arrival_log_term(uint64_t fixed_point_time) {
  // times are >= 1 and < 2^53: exact conversion to a normal double
  return rng::det_log_normal(static_cast<double>(static_cast<int64_t>(fixed_point_time)));
}

// Fixed reduction tree of the 16 lanes: halves added pairwise, as in rcc_numpy.lane_dot.
FASTDIFFC_HD double reduce_lanes(const double* acc) {
  double a8[8], a4[4];
  for (int l = 0; l < 8; ++l) a8[l] = acc[l] + acc[l + 8];
  for (int l = 0; l < 4; ++l) a4[l] = a8[l] + a8[l + 4];
  const double a2_0 = a4[0] + a4[2];
  const double a2_1 = a4[1] + a4[3];
  return a2_0 + a2_1;
}

// The normal at position j of a Philox block's 4 words: word (j >> 1) & 3, low half for even j.
FASTDIFFC_HD uint32_t normal_index(const uint32_t w[4], int j_in_block) {
  return (w[(j_in_block >> 1) & 3] >> ((j_in_block & 1) * 16)) & 0xFFFFu;
}

// ---- tree codebook (scheme "tree", python/fastdiffc/rcc_tree.py) ----------------------------
constexpr uint32_t kDomainTreeNormals = 14;   // increments of tree nodes: (block, key lo, key hi, 14 << 28 | step)
constexpr uint32_t kDomainTreeKeys = 15;      // node keys: (digit, parent lo, parent hi, 15 << 28 | step)
constexpr uint32_t kTreeRootKeyHi = 0xFFFFFFFFu;  // root key of chunk c: (c, 0xFFFFFFFF)
constexpr int kTreeMaxLevels = 64;
constexpr int kTreeMaxBeam = 4096;
constexpr int kTreeMaxLevelBits = 8;

struct TreeKey {
  uint32_t lo, hi;
};

FASTDIFFC_HD TreeKey tree_root_key(uint32_t chunk) { return TreeKey{chunk, kTreeRootKeyHi}; }

FASTDIFFC_HD TreeKey tree_child_key(TreeKey parent, uint32_t digit, uint64_t seed, uint32_t step) {
  const rng::Philox4 r =
      rng::philox4x32_10(digit, parent.lo, parent.hi, rng::counter_word3(kDomainTreeKeys, step), seed);
  return TreeKey{r.v[0], r.v[1]};
}

// Beam order: larger running sum first, then the lower (parent rank * K + digit).
FASTDIFFC_HD bool tree_beam_before(double s, int64_t flat, double s2, int64_t flat2) {
  return s > s2 || (s == s2 && flat < flat2);
}

// Leaf choice: smaller |S - target| first, then the lower flat index.
FASTDIFFC_HD bool tree_leaf_before(double s, int64_t flat, double s2, int64_t flat2, double target) {
  const double a = s > target ? s - target : target - s;
  const double b = s2 > target ? s2 - target : target - s2;
  return a < b || (a == b && flat < flat2);
}

}  // namespace fastdiffc::rcc

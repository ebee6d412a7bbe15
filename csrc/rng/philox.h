// Philox4x32-10 (Salmon et al., SC'11) for C++ and CUDA alike.
//
// Counter layout used throughout fastdiffc's RCC (docs/design.md §5), one index per 32-bit word, so no
// index is ever folded into an overflowing 32-bit offset:
//   c0 = position block (8 normals per block), c1 = candidate, c2 = chunk, c3 = domain << 28 | step.
// The key is the 64-bit seed (k0 = low word, k1 = high word).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTDIFFC_HD __host__ __device__ __forceinline__
#else
#define FASTDIFFC_HD inline __attribute__((always_inline))
#endif

namespace fastdiffc::rng {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

constexpr uint32_t kDomainCandidates = 0;   // normals of candidate i of chunk c
constexpr uint32_t kDomainSelection = 1;    // exponential variates of the selection rule
constexpr uint32_t kDomainPermutation = 2;  // sort keys of the shared permutation
// Domains 3..15 are normal streams outside RCC (rcc::normal_stream): counter (block, stream, 0, domain << 28).
constexpr uint32_t kDomainLatent = 3;       // DiffC's initial latent z_0
constexpr uint32_t kDomainSampler = 4;      // DiffC's ancestral-sampling noise, one stream per sampler step
constexpr uint32_t kFirstStreamDomain = 3;
constexpr uint32_t kDomainLimit = 16;       // the domain occupies the top 4 bits of c3
constexpr uint32_t kStepLimit = 1u << 28;   // step occupies the low 28 bits of c3

FASTDIFFC_HD uint32_t counter_word3(uint32_t domain, uint32_t step) { return (domain << 28) | step; }

struct Philox4 {
  uint32_t v[4];
};

// One Philox4x32-10 block: 4 uniformly distributed 32-bit words.
FASTDIFFC_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed) {
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return Philox4{{c0, c1, c2, c3}};
}

}  // namespace fastdiffc::rng

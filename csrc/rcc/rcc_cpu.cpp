// CPU RCC: OpenMP over (chunk × candidate block) tasks. The hot loop (Philox + table normals +
// lane-ordered dot product) is compiled three times — baseline x86-64, AVX2 (both from one portable
// body) and AVX-512 with hardware gathers — and picked at run time, so the shipped module needs no
// -march=native yet uses the machine's SIMD. All versions give identical bits; set_simd_path forces
// one (tests compare them) and last_simd_path reports which one the last call actually ran.
#include "rcc/rcc_cpu.h"

#include <omp.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <atomic>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastdiffc::rcc {

namespace {

constexpr int kBatchBlocks = 16;                        // Philox blocks per batch = dot-product lanes
constexpr int kBatchNormals = kBatchBlocks * 8;         // 128 normals per batch
constexpr int64_t kCandidateBlock = 256;                // candidates per task
// Below this much work (normals) a parallel region costs more than it saves, especially on a
// busy machine where waking the OpenMP team takes milliseconds.
constexpr int64_t kParallelWork = int64_t{1} << 16;
static_assert(kBatchBlocks == kLanes, "one dot-product lane per Philox block of a batch");

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FASTDIFFC_NO_CLONES)
#define FASTDIFFC_HAVE_SIMD_PATHS 1  // baseline, AVX2 and AVX-512 versions of the hot loop
#else
#define FASTDIFFC_HAVE_SIMD_PATHS 0  // the baseline version only
#endif

// GCC/Clang vector extensions: the 16 Philox blocks of a batch run in SIMD lanes, lowered to
// AVX2 or SSE by the function they are inlined into (AVX-512 has its own path with hardware gathers).
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef uint64_t u64x16 __attribute__((vector_size(128)));

// The ten Philox4x32-10 rounds on 16 counters at once (one per SIMD lane), keyed by the 64-bit
// seed; shared by every vectorised generator so the bijection is written once.
FASTDIFFC_HD void philox_rounds16(uint64_t seed, u32x16& x0, u32x16& x1, u32x16& x2, u32x16& x3) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const u64x16 m0 = u64x16{} + static_cast<uint64_t>(rng::kPhiloxM0);
  const u64x16 m1 = u64x16{} + static_cast<uint64_t>(rng::kPhiloxM1);
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += rng::kPhiloxW0;
      k1 += rng::kPhiloxW1;
    }
    const u64x16 p0 = __builtin_convertvector(x0, u64x16) * m0;
    const u64x16 p1 = __builtin_convertvector(x2, u64x16) * m1;
    const u32x16 n0 = __builtin_convertvector(p1 >> 32, u32x16) ^ x1 ^ k0;
    const u32x16 n2 = __builtin_convertvector(p0 >> 32, u32x16) ^ x3 ^ k1;
    x1 = __builtin_convertvector(p1, u32x16);
    x3 = __builtin_convertvector(p0, u32x16);
    x0 = n0;
    x2 = n2;
  }
}

// Philox4x32-10 of blocks first_block .. first_block + 15 of (candidate, chunk, word3): w[k][b] is
// word k of block b.
FASTDIFFC_HD void philox_batch(uint64_t seed, uint32_t word3, uint32_t chunk, uint32_t candidate,
                               uint32_t first_block, u32x16 w[4]) {
  u32x16 x0 = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  x0 += first_block;
  u32x16 x1 = u32x16{} + candidate, x2 = u32x16{} + chunk, x3 = u32x16{} + word3;
  philox_rounds16(seed, x0, x1, x2, x3);
  w[0] = x0;
  w[1] = x1;
  w[2] = x2;
  w[3] = x3;
}

// <mu_c, eps_i>. Lane b of the 16 accumulates the positions of Philox block b (mod 16) in
// increasing order; then the fixed tree. mu is in "batch order": for batch q, word k, half h,
// block b, mu[128 q + 16 (2k + h) + b] = mu_c[128 q + 8 b + 2 k + h] (zero padded).
// The portable body, inlined into a baseline and an AVX2 function (dot_baseline, dot_avx2).
FASTDIFFC_HD double dot_portable(const float* table, const double* mu, int64_t len, uint64_t seed, uint32_t word3,
                                 uint32_t chunk, uint32_t candidate) {
  double acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = 0.0;
  for (int64_t j0 = 0; j0 < len; j0 += kBatchNormals) {
    u32x16 w[4];
    philox_batch(seed, word3, chunk, candidate, static_cast<uint32_t>(j0 >> 3), w);
    const double* m = mu + j0;
    // Blocks past the end of the chunk are skipped (their positions would add exact zeros).
    const int blocks = static_cast<int>(std::min<int64_t>(kBatchBlocks, (len - j0 + 7) >> 3));
    for (int k = 0; k < 4; ++k) {
      for (int h = 0; h < 2; ++h) {
        const u32x16 idx = (w[k] >> (16 * h)) & 0xFFFFu;
        const double* mm = m + 16 * (2 * k + h);
        for (int b = 0; b < blocks; ++b) acc[b] = acc[b] + static_cast<double>(table[idx[b]]) * mm[b];
      }
    }
  }
  return reduce_lanes(acc);
}

// Bare generation of count candidates x padded positions (the benchmark limit): sum of normals.
FASTDIFFC_HD double generate_portable(const float* table, int64_t i0, int64_t i1, int64_t padded, uint64_t seed) {
  float acc[kLanes] = {};
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j0 = 0; j0 < padded; j0 += kBatchNormals) {
      u32x16 w[4];
      philox_batch(seed, 0u, 0u, static_cast<uint32_t>(i), static_cast<uint32_t>(j0 >> 3), w);
      for (int k = 0; k < 4; ++k) {
        for (int h = 0; h < 2; ++h) {
          const u32x16 idx = (w[k] >> (16 * h)) & 0xFFFFu;
          for (int b = 0; b < kLanes; ++b) acc[b] += table[idx[b]];
        }
      }
    }
  }
  double total = 0.0;
  for (int l = 0; l < kLanes; ++l) total += acc[l];
  return total;
}

double dot_baseline(const float* table, const double* mu, int64_t len, uint64_t seed, uint32_t word3, uint32_t chunk,
                    uint32_t candidate) {
  return dot_portable(table, mu, len, seed, word3, chunk, candidate);
}

double generate_baseline(const float* table, int64_t i0, int64_t i1, int64_t padded, uint64_t seed) {
  return generate_portable(table, i0, i1, padded, seed);
}

#if FASTDIFFC_HAVE_SIMD_PATHS
__attribute__((target("avx2"))) double dot_avx2(const float* table, const double* mu, int64_t len, uint64_t seed,
                                                uint32_t word3, uint32_t chunk, uint32_t candidate) {
  return dot_portable(table, mu, len, seed, word3, chunk, candidate);
}

__attribute__((target("avx2"))) double generate_avx2(const float* table, int64_t i0, int64_t i1, int64_t padded,
                                                     uint64_t seed) {
  return generate_portable(table, i0, i1, padded, seed);
}

// The same sums with AVX-512 hardware gathers from the table (16 lanes = two 8-double registers).
__attribute__((target("avx512f"))) double dot_avx512(const float* table, const double* mu, int64_t len,
                                                     uint64_t seed, uint32_t word3, uint32_t chunk,
                                                     uint32_t candidate) {
  __m512d lo_acc = _mm512_setzero_pd(), hi_acc = _mm512_setzero_pd();
  for (int64_t j0 = 0; j0 < len; j0 += kBatchNormals) {
    u32x16 w[4];
    philox_batch(seed, word3, chunk, candidate, static_cast<uint32_t>(j0 >> 3), w);
    const double* m = mu + j0;
    // Lanes (blocks) past the end of the chunk gather nothing and add exact zeros.
    const int64_t blocks = std::min<int64_t>(kBatchBlocks, (len - j0 + 7) >> 3);
    const __mmask16 live = static_cast<__mmask16>((1u << blocks) - 1u);
    for (int k = 0; k < 4; ++k) {
      for (int h = 0; h < 2; ++h) {
        const u32x16 idx = (w[k] >> (16 * h)) & 0xFFFFu;
        __m512i vi;
        __builtin_memcpy(&vi, &idx, sizeof(vi));
        const __m512 e = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, vi, table, 4);
        const __m512d e_lo = _mm512_cvtps_pd(_mm512_castps512_ps256(e));
        const __m512d e_hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
        const double* mm = m + 16 * (2 * k + h);
        lo_acc = _mm512_add_pd(lo_acc, _mm512_mul_pd(e_lo, _mm512_loadu_pd(mm)));
        hi_acc = _mm512_add_pd(hi_acc, _mm512_mul_pd(e_hi, _mm512_loadu_pd(mm + 8)));
      }
    }
  }
  alignas(64) double acc[kLanes];
  _mm512_store_pd(acc, lo_acc);
  _mm512_store_pd(acc + 8, hi_acc);
  return reduce_lanes(acc);
}

__attribute__((target("avx512f"))) double generate_avx512(const float* table, int64_t i0, int64_t i1,
                                                          int64_t padded, uint64_t seed) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j0 = 0; j0 < padded; j0 += kBatchNormals) {
      u32x16 w[4];
      philox_batch(seed, 0u, 0u, static_cast<uint32_t>(i), static_cast<uint32_t>(j0 >> 3), w);
      for (int k = 0; k < 4; ++k) {
        for (int h = 0; h < 2; ++h) {
          const u32x16 idx = (w[k] >> (16 * h)) & 0xFFFFu;
          __m512i vi;
          __builtin_memcpy(&vi, &idx, sizeof(vi));
          acc = _mm512_add_ps(acc, _mm512_i32gather_ps(vi, table, 4));
        }
      }
    }
  }
  alignas(64) float a[kLanes];
  _mm512_store_ps(a, acc);
  double total = 0.0;
  for (int l = 0; l < kLanes; ++l) total += a[l];
  return total;
}
#endif

// Arrival increments of candidates first .. first + n - 1 (n <= kCandidateBlock) of one chunk:
// Philox in 16 candidate lanes, then the deterministic log, in loops the compiler vectorises.
__attribute__((target_clones("avx512f", "avx2", "default")))
void arrival_increments(uint64_t seed, uint32_t step, uint32_t chunk, int64_t first, int64_t n, uint64_t* out) {
  const uint32_t word3 = rng::counter_word3(rng::kDomainSelection, step);
  alignas(64) uint32_t r0[kCandidateBlock], r1[kCandidateBlock];
  for (int64_t i0 = 0; i0 < n; i0 += 16) {
    u32x16 x0 = u32x16{}, x2 = u32x16{} + chunk, x3 = u32x16{} + word3;
    u32x16 x1 = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    x1 += static_cast<uint32_t>(first + i0);
    philox_rounds16(seed, x0, x1, x2, x3);
    for (int l = 0; l < 16; ++l) {
      r0[i0 + l] = x0[l];
      r1[i0 + l] = x1[l];
    }
  }
  for (int64_t i = 0; i < n; ++i) out[i] = arrival_increment_from_words(r0[i], r1[i]);
}

// log_terms[i] = log of the arrival time (pfr: running sum from t_before) of n candidates.
__attribute__((target_clones("avx512f", "avx2", "default")))
void arrival_log_terms(const uint64_t* inc, int64_t n, Scheme scheme, uint64_t t_before, double* out) {
  alignas(64) uint64_t t[kCandidateBlock];
  uint64_t run = t_before;
  for (int64_t i = 0; i < n; ++i) {
    run = scheme == Scheme::kPfr ? run + inc[i] : inc[i];
    t[i] = run;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = arrival_log_term(t[i]);
}

using DotFn = double (*)(const float*, const double*, int64_t, uint64_t, uint32_t, uint32_t, uint32_t);
using GenFn = double (*)(const float*, int64_t, int64_t, int64_t, uint64_t);

// SIMD paths of the hot loop, best first; kSimdNames[p] is path p's name.
enum SimdPath : int { kAvx512 = 0, kAvx2 = 1, kBaseline = 2, kSimdPaths = 3 };
constexpr const char* kSimdNames[kSimdPaths] = {"avx512", "avx2", "baseline"};

std::atomic<int> g_simd_override{-1};  // -1: the best path this CPU supports, else a SimdPath
std::atomic<int> g_last_path{-1};      // the path the last hot-loop call ran (-1: none yet)

bool cpu_supports(int path) {
#if FASTDIFFC_HAVE_SIMD_PATHS
  if (path == kAvx512) return __builtin_cpu_supports("avx512f");
  if (path == kAvx2) return __builtin_cpu_supports("avx2");
#endif
  return path == kBaseline;
}

int current_path() {
  const int o = g_simd_override.load();
  if (o >= 0) return o;  // set_simd_path accepts only paths the CPU supports
  for (int p = 0; p < kSimdPaths; ++p) {
    if (cpu_supports(p)) return p;
  }
  return kBaseline;
}

// The function the caller will run, recorded as the path that ran.
DotFn dot_fn() {
  const int p = current_path();
  g_last_path.store(p);
#if FASTDIFFC_HAVE_SIMD_PATHS
  if (p == kAvx512) return &dot_avx512;
  if (p == kAvx2) return &dot_avx2;
#endif
  return &dot_baseline;
}

GenFn gen_fn() {
  const int p = current_path();
  g_last_path.store(p);
#if FASTDIFFC_HAVE_SIMD_PATHS
  if (p == kAvx512) return &generate_avx512;
  if (p == kAvx2) return &generate_avx2;
#endif
  return &generate_baseline;
}

struct Best {
  double score;
  int64_t index;
};

// Best (score, index) over candidates [i0, i1) of one chunk, given their fixed-point arrival
// increments inc[0 .. i1-i0); pfr times continue from t_before.
Best score_block(DotFn dot, const float* table, const double* mu, int64_t len, uint64_t seed, uint32_t step,
                 uint32_t chunk, int64_t i0, int64_t i1, Scheme scheme, const uint64_t* inc, uint64_t t_before,
                 double* scores_out) {
  const uint32_t word3 = rng::counter_word3(rng::kDomainCandidates, step);
  Best best{std::numeric_limits<double>::infinity(), -1};
  alignas(64) double log_t[kCandidateBlock];
  for (int64_t b0 = i0; b0 < i1; b0 += kCandidateBlock) {
    const int64_t b1 = std::min(i1, b0 + kCandidateBlock);
    arrival_log_terms(inc + (b0 - i0), b1 - b0, scheme, t_before, log_t);
    for (int64_t i = b0; i < b1; ++i) {
      const double s = log_t[i - b0] - dot(table, mu, len, seed, word3, chunk, static_cast<uint32_t>(i));
      if (scores_out) scores_out[i - i0] = s;
      if (s < best.score || best.index < 0) best = Best{s, i};  // strict: ties keep the lower index
    }
    if (scheme == Scheme::kPfr) {
      for (int64_t i = b0; i < b1; ++i) t_before += inc[i - i0];
    }
  }
  return best;
}

// mu of positions [lo, hi) in double, in batch order (see dot_portable), zero padded to whole batches.
std::vector<double> chunk_mu(const float* mu_perm, int64_t lo, int64_t hi) {
  const int64_t len = hi - lo;
  const int64_t padded = std::max<int64_t>(1, (len + kBatchNormals - 1) / kBatchNormals) * kBatchNormals;
  std::vector<double> m(static_cast<size_t>(padded), 0.0);
  for (int64_t j = 0; j < len; ++j) {
    const int64_t q = j / kBatchNormals, r = j % kBatchNormals;
    const int64_t b = r >> 3, k = (r >> 1) & 3, h = r & 1;
    m[static_cast<size_t>(q * kBatchNormals + 16 * (2 * k + h) + b)] = static_cast<double>(mu_perm[lo + j]);
  }
  return m;
}

}  // namespace

const float* normal_table() {
  static const std::unique_ptr<float[]> table = [] {
    std::unique_ptr<float[]> t(new float[rng::kNormalTableSize]);
    rng::build_normal_table(t.get());
    return t;
  }();
  return table.get();
}

void check_step_args(int64_t dim, uint64_t step) {
  if (dim < 1 || dim >= kDimLimit) throw std::invalid_argument("dim must be in [1, 2^31), got " + std::to_string(dim));
  if (step >= rng::kStepLimit) throw std::invalid_argument("step must be in [0, 2^28), got " + std::to_string(step));
}

void check_select_args(int64_t dim, int64_t chunks, int bits, uint64_t step) {
  check_step_args(dim, step);
  if (chunks < 1 || chunks > dim)
    throw std::invalid_argument("chunks must be in [1, dim], got " + std::to_string(chunks));
  if (bits < 1 || bits > kMaxBits)
    throw std::invalid_argument("bits_per_chunk must be in [1, 20], got " + std::to_string(bits));
}

void permutation(uint64_t seed, uint32_t step, int64_t dim, int64_t* perm) {
  check_step_args(dim, step);
  // Sort the packed values (33-bit Philox key << 31 | j): distinct, so the order is unique and
  // equals rcc_numpy.permutation's np.sort. LSD radix sort on the 33 key bits (the index bits are
  // already ascending and the passes are stable): O(dim), 4 passes of 9 bits.
  const size_t n = static_cast<size_t>(dim);
  std::vector<uint64_t> packed(n), tmp(n);
  const uint32_t word3 = rng::counter_word3(rng::kDomainPermutation, step);
  const int64_t pairs = (dim + 1) / 2;
#pragma omp parallel for schedule(static) if (dim >= kParallelWork)
  for (int64_t p = 0; p < pairs; ++p) {
    const rng::Philox4 r = rng::philox4x32_10(static_cast<uint32_t>(p), 0u, 0u, word3, seed);
    for (int h = 0; h < 2; ++h) {
      const int64_t j = 2 * p + h;
      if (j >= dim) break;
      const uint64_t k = (static_cast<uint64_t>(r.v[2 * h + 1]) << 32) | r.v[2 * h];
      packed[static_cast<size_t>(j)] = ((k >> 31) << 31) | static_cast<uint64_t>(j);
    }
  }
  constexpr int kDigitBits = 9;
  constexpr size_t kBuckets = size_t{1} << kDigitBits;
  size_t count[kBuckets];
  for (int shift = 31; shift < 64; shift += kDigitBits) {
    std::fill(count, count + kBuckets, size_t{0});
    for (size_t j = 0; j < n; ++j) ++count[(packed[j] >> shift) & (kBuckets - 1)];
    size_t run = 0;
    for (size_t b = 0; b < kBuckets; ++b) {
      const size_t c = count[b];
      count[b] = run;
      run += c;
    }
    for (size_t j = 0; j < n; ++j) tmp[count[(packed[j] >> shift) & (kBuckets - 1)]++] = packed[j];
    packed.swap(tmp);
  }
  const uint64_t mask = (uint64_t{1} << 31) - 1;
  for (size_t k = 0; k < n; ++k) perm[k] = static_cast<int64_t>(packed[k] & mask);
}

void select(const float* mu_perm, int64_t dim, int64_t chunks, int bits, uint64_t seed, uint32_t step,
            Scheme scheme, int64_t* indices) {
  check_select_args(dim, chunks, bits, step);
  const float* table = normal_table();
  const int64_t n_cand = int64_t{1} << bits;
  const int64_t blocks = (n_cand + kCandidateBlock - 1) / kCandidateBlock;
  const bool parallel = n_cand * dim >= kParallelWork;
  const DotFn dot = dot_fn();
  // Chunks are processed in batches so the per-candidate increments stay within ~16 MB.
  const int64_t batch = std::max<int64_t>(1, (int64_t{1} << 21) / n_cand);
  std::vector<uint64_t> inc(static_cast<size_t>(std::min(batch, chunks) * n_cand));
  std::vector<uint64_t> t_before(static_cast<size_t>(std::min(batch, chunks) * blocks));
  std::vector<Best> best(static_cast<size_t>(std::min(batch, chunks) * blocks));
  for (int64_t c0 = 0; c0 < chunks; c0 += batch) {
    const int64_t c1 = std::min(chunks, c0 + batch);
    const int64_t tasks = (c1 - c0) * blocks;
    // Phase 1: each candidate's fixed-point arrival increment and each block's sum; then per-chunk
    // exclusive prefix sums, so every task knows the arrival time before its first candidate.
    // Integer sums: exact in any order.
#pragma omp parallel for schedule(static) if (parallel && tasks > 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t c = c0 + task / blocks, blk = task % blocks;
      const int64_t i0 = blk * kCandidateBlock, i1 = std::min(n_cand, i0 + kCandidateBlock);
      uint64_t* out = inc.data() + (c - c0) * n_cand;
      arrival_increments(seed, step, static_cast<uint32_t>(c), i0, i1 - i0, out + i0);
      uint64_t sum = 0;
      for (int64_t i = i0; i < i1; ++i) sum += out[i];
      t_before[static_cast<size_t>(task)] = sum;
    }
    for (int64_t c = 0; c < c1 - c0; ++c) {
      uint64_t run = 0;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const size_t k = static_cast<size_t>(c * blocks + blk);
        const uint64_t sum = t_before[k];
        t_before[k] = run;
        run += sum;
      }
    }
    // Phase 2: score every candidate, best per task.
#pragma omp parallel if (parallel && tasks > 1)
    {
      std::vector<double> mu;
      int64_t mu_chunk = -1;
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t c = c0 + task / blocks, blk = task % blocks;
        if (c != mu_chunk) {
          mu = chunk_mu(mu_perm, chunk_start(c, dim, chunks), chunk_start(c + 1, dim, chunks));
          mu_chunk = c;
        }
        const int64_t i0 = blk * kCandidateBlock, i1 = std::min(n_cand, i0 + kCandidateBlock);
        best[static_cast<size_t>(task)] =
            score_block(dot, table, mu.data(), chunk_start(c + 1, dim, chunks) - chunk_start(c, dim, chunks), seed,
                        step, static_cast<uint32_t>(c),
                        i0, i1, scheme, inc.data() + (c - c0) * n_cand + i0, t_before[static_cast<size_t>(task)],
                        nullptr);
      }
    }
    // Phase 3: per chunk, blocks in ascending order with a strict comparison: ties -> lowest index.
    for (int64_t c = c0; c < c1; ++c) {
      Best b = best[static_cast<size_t>((c - c0) * blocks)];
      for (int64_t blk = 1; blk < blocks; ++blk) {
        const Best& o = best[static_cast<size_t>((c - c0) * blocks + blk)];
        if (o.score < b.score) b = o;
      }
      indices[c] = b.index;
    }
  }
}

void chunk_scores(const float* mu_perm, int64_t dim, int64_t chunks, int bits, uint64_t seed, uint32_t step,
                  Scheme scheme, int64_t chunk, double* scores) {
  check_select_args(dim, chunks, bits, step);
  if (chunk < 0 || chunk >= chunks) throw std::invalid_argument("chunk out of range");
  const int64_t lo = chunk_start(chunk, dim, chunks), hi = chunk_start(chunk + 1, dim, chunks);
  std::vector<double> mu = chunk_mu(mu_perm, lo, hi);
  const int64_t n_cand = int64_t{1} << bits;
  std::vector<uint64_t> inc(static_cast<size_t>(n_cand));
  for (int64_t i0 = 0; i0 < n_cand; i0 += kCandidateBlock)
    arrival_increments(seed, step, static_cast<uint32_t>(chunk), i0, std::min(kCandidateBlock, n_cand - i0),
                       inc.data() + i0);
  score_block(dot_fn(), normal_table(), mu.data(), hi - lo, seed, step,
              static_cast<uint32_t>(chunk), 0, n_cand, scheme, inc.data(), 0, scores);
}

void chosen_candidates(const int64_t* indices, int64_t chunks, int64_t dim, uint64_t seed, uint32_t step,
                       float* out) {
  check_step_args(dim, step);
  if (chunks < 1 || chunks > dim) throw std::invalid_argument("chunks must be in [1, dim]");
  for (int64_t c = 0; c < chunks; ++c) {
    if (indices[c] < 0 || indices[c] >= (int64_t{1} << kMaxBits))
      throw std::invalid_argument("candidate index out of range: " + std::to_string(indices[c]));
  }
  const float* table = normal_table();
  const uint32_t step_word = rng::counter_word3(rng::kDomainCandidates, step);
#pragma omp parallel for schedule(dynamic, 16) if (dim >= kParallelWork)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = chunk_start(c, dim, chunks), hi = chunk_start(c + 1, dim, chunks);
    const uint32_t cand = static_cast<uint32_t>(indices[c]);
    for (int64_t j = 0; j < hi - lo; j += 8) {
      const rng::Philox4 r = rng::philox4x32_10(static_cast<uint32_t>(j >> 3), cand, static_cast<uint32_t>(c),
                                                step_word, seed);
      for (int k = 0; k < 8 && j + k < hi - lo; ++k) out[lo + j + k] = table[normal_index(r.v, k)];
    }
  }
}

void normal_stream(uint64_t seed, uint32_t domain, uint32_t stream, int64_t n, float* out) {
  if (domain < rng::kFirstStreamDomain || domain >= rng::kDomainLimit)
    throw std::invalid_argument("normal stream domain must be in [3, 16) (0..2 are RCC's), got " +
                                std::to_string(domain));
  if (n < 0 || n >= kDimLimit) throw std::invalid_argument("normal stream length must be in [0, 2^31)");
  const float* table = normal_table();
  const uint32_t word3 = rng::counter_word3(domain, 0);
  const int64_t blocks = (n + 7) / 8;
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (int64_t b = 0; b < blocks; ++b) {
    const rng::Philox4 r = rng::philox4x32_10(static_cast<uint32_t>(b), stream, 0u, word3, seed);
    for (int k = 0; k < 8 && b * 8 + k < n; ++k) out[b * 8 + k] = table[normal_index(r.v, k)];
  }
}

double generate_normals_checksum(int64_t count, int64_t length, uint64_t seed) {
  if (count < 1 || length < 1 || length >= kDimLimit || count > (int64_t{1} << 32))
    throw std::invalid_argument("count and length must be positive (length < 2^31, count <= 2^32)");
  const float* table = normal_table();
  const int64_t blocks = (count + kCandidateBlock - 1) / kCandidateBlock;
  const int64_t padded = (length + kBatchNormals - 1) / kBatchNormals * kBatchNormals;
  const GenFn gen = gen_fn();
  double total = 0.0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total) if (count * length >= kParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kCandidateBlock, i1 = std::min(count, i0 + kCandidateBlock);
    total += gen(table, i0, i1, padded, seed);
  }
  return total;
}

void set_simd_path(const std::string& name) {
  if (name == "auto") {
    g_simd_override.store(-1);
    return;
  }
  for (int p = 0; p < kSimdPaths; ++p) {
    if (name != kSimdNames[p]) continue;
    if (!cpu_supports(p)) throw std::invalid_argument("this CPU (or build) has no " + name + " path");
    g_simd_override.store(p);
    return;
  }
  throw std::invalid_argument("SIMD path must be auto, avx512, avx2 or baseline, got '" + name + "'");
}

std::string simd_path() { return kSimdNames[current_path()]; }

std::string last_simd_path() {
  const int p = g_last_path.load();
  return p < 0 ? std::string() : std::string(kSimdNames[p]);
}

std::vector<std::string> simd_paths() {
  std::vector<std::string> out;
  for (int p = 0; p < kSimdPaths; ++p) {
    if (cpu_supports(p)) out.emplace_back(kSimdNames[p]);
  }
  return out;
}

}  // namespace fastdiffc::rcc

// ---------------------------------------------------------------- tree codebook (scheme "tree")
namespace fastdiffc::rcc {

void check_tree_args(int64_t dim, int64_t chunks, int depth, int level_bits, int beam, uint64_t step) {
  check_step_args(dim, step);
  if (chunks < 1 || chunks > dim)
    throw std::invalid_argument("chunks must be in [1, dim], got " + std::to_string(chunks));
  if (depth < 1 || depth > kTreeMaxLevels)
    throw std::invalid_argument("tree depth must be in [1, 64], got " + std::to_string(depth));
  if (level_bits < 1 || level_bits > kTreeMaxLevelBits)
    throw std::invalid_argument("bits per tree level must be in [1, 8], got " + std::to_string(level_bits));
  if (beam < 1 || beam > kTreeMaxBeam)
    throw std::invalid_argument("tree beam must be in [1, 4096], got " + std::to_string(beam));
}

namespace {

struct TreeNode {
  double sum;
  TreeKey key;
  int64_t flat;  // parent rank * K + digit (the tie-break order)
  int64_t parent;
};

// Beam search of one chunk; the per-level child dot products run in parallel when `parallel`.
void tree_chunk_search(const float* table, DotFn dot, const float* mu_perm, int64_t lo, int64_t hi, uint32_t chunk,
                       int depth, int level_bits, int beam, uint64_t seed, uint32_t step, bool parallel,
                       int64_t* path) {
  const int64_t len = hi - lo;
  const std::vector<double> mu = chunk_mu(mu_perm, lo, hi);
  // |mu_c|^2 with the lane order of every dot product (float32 squares are exact in double).
  double acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = 0.0;
  for (int64_t j = 0; j < static_cast<int64_t>(mu.size()); ++j) {
    // batch order: position 128 q + 16 (2k + h) + b belongs to lane b
    acc[j % kLanes] = acc[j % kLanes] + mu[static_cast<size_t>(j)] * mu[static_cast<size_t>(j)];
  }
  const double target = reduce_lanes(acc) * std::sqrt(static_cast<double>(depth));
  const int64_t k = int64_t{1} << level_bits;
  const uint32_t word3 = rng::counter_word3(kDomainTreeNormals, step);
  std::vector<TreeNode> front{TreeNode{0.0, tree_root_key(chunk), 0, -1}};
  std::vector<std::vector<int64_t>> digits_of;  // per level: the digit and parent of every kept node
  std::vector<std::vector<int64_t>> parent_of;
  std::vector<TreeNode> children;
  for (int level = 0; level < depth; ++level) {
    const int64_t n = static_cast<int64_t>(front.size()) * k;
    children.resize(static_cast<size_t>(n));
#pragma omp parallel for schedule(dynamic, 8) if (parallel)
    for (int64_t i = 0; i < n; ++i) {
      const TreeNode& par = front[static_cast<size_t>(i / k)];
      const TreeKey key = tree_child_key(par.key, static_cast<uint32_t>(i % k), seed, step);
      const double d = dot(table, mu.data(), len, seed, word3, key.hi, key.lo);
      children[static_cast<size_t>(i)] = TreeNode{par.sum + d, key, i, i / k};
    }
    const bool last = level == depth - 1;
    const int64_t keep = last ? 1 : std::min<int64_t>(beam, n);
    auto before = [&](const TreeNode& a, const TreeNode& b) {
      return last ? tree_leaf_before(a.sum, a.flat, b.sum, b.flat, target)
                  : tree_beam_before(a.sum, a.flat, b.sum, b.flat);
    };
    std::partial_sort(children.begin(), children.begin() + keep, children.end(), before);
    children.resize(static_cast<size_t>(keep));
    std::vector<int64_t> dg(static_cast<size_t>(keep)), pa(static_cast<size_t>(keep));
    for (int64_t r = 0; r < keep; ++r) {
      dg[static_cast<size_t>(r)] = children[static_cast<size_t>(r)].flat % k;
      pa[static_cast<size_t>(r)] = children[static_cast<size_t>(r)].parent;
    }
    digits_of.push_back(std::move(dg));
    parent_of.push_back(std::move(pa));
    front.swap(children);
  }
  int64_t r = 0;
  for (int level = depth - 1; level >= 0; --level) {
    path[level] = digits_of[static_cast<size_t>(level)][static_cast<size_t>(r)];
    r = parent_of[static_cast<size_t>(level)][static_cast<size_t>(r)];
  }
}

}  // namespace

void tree_select(const float* mu_perm, int64_t dim, int64_t chunks, int depth, int level_bits, int beam,
                 uint64_t seed, uint32_t step, int64_t* paths) {
  check_tree_args(dim, chunks, depth, level_bits, beam, step);
  const float* table = normal_table();
  const DotFn dot = dot_fn();
  const int64_t work_per_level = static_cast<int64_t>(beam) * (int64_t{1} << level_bits);
  const int threads = omp_get_max_threads();
  // Many chunks: one chunk per task; few: parallel over a level's children inside each chunk.
  const bool across = chunks >= 2 * threads && dim * work_per_level >= kParallelWork;
  const bool within = !across && dim / chunks * work_per_level >= kParallelWork;
#pragma omp parallel for schedule(dynamic, 1) if (across)
  for (int64_t c = 0; c < chunks; ++c) {
    tree_chunk_search(table, dot, mu_perm, chunk_start(c, dim, chunks), chunk_start(c + 1, dim, chunks),
                      static_cast<uint32_t>(c), depth, level_bits, beam, seed, step, within, paths + c * depth);
  }
}

void tree_chosen(const int64_t* paths, int64_t chunks, int depth, int level_bits, int64_t dim, uint64_t seed,
                 uint32_t step, float* out) {
  check_tree_args(dim, chunks, depth, level_bits, 1, step);
  for (int64_t i = 0; i < chunks * depth; ++i) {
    if (paths[i] < 0 || paths[i] >= (int64_t{1} << level_bits))
      throw std::invalid_argument("tree digit out of range: " + std::to_string(paths[i]));
  }
  const float* table = normal_table();
  const uint32_t word3 = rng::counter_word3(kDomainTreeNormals, step);
  const double inv = 1.0 / std::sqrt(static_cast<double>(depth));
#pragma omp parallel for schedule(dynamic, 4) if (dim * depth >= kParallelWork)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = chunk_start(c, dim, chunks), hi = chunk_start(c + 1, dim, chunks);
    std::vector<double> acc(static_cast<size_t>(hi - lo), 0.0);
    TreeKey key = tree_root_key(static_cast<uint32_t>(c));
    for (int level = 0; level < depth; ++level) {
      key = tree_child_key(key, static_cast<uint32_t>(paths[c * depth + level]), seed, step);
      for (int64_t j = 0; j < hi - lo; j += 8) {
        const rng::Philox4 r = rng::philox4x32_10(static_cast<uint32_t>(j >> 3), key.lo, key.hi, word3, seed);
        for (int q = 0; q < 8 && j + q < hi - lo; ++q)
          acc[static_cast<size_t>(j + q)] = acc[static_cast<size_t>(j + q)] + static_cast<double>(table[normal_index(r.v, q)]);
      }
    }
    for (int64_t j = 0; j < hi - lo; ++j) out[lo + j] = static_cast<float>(acc[static_cast<size_t>(j)] * inv);
  }
}

}  // namespace fastdiffc::rcc

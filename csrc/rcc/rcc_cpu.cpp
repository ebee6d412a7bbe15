// CPU RCC: OpenMP over (chunk × candidate block) tasks; the hot loop (Philox + table normals +
// lane-ordered dot product) is compiled for AVX-512, AVX2 and baseline x86-64 and picked at run
// time (GCC target_clones), so the shipped module is portable yet uses the machine's SIMD.
#include "rcc/rcc_cpu.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastdiffc::rcc {

namespace {

constexpr int kBlockWidth = 8;                       // Philox blocks per batch (SIMD lanes)
constexpr int kBatchNormals = kBlockWidth * 8;       // 64 normals per batch
constexpr int64_t kCandidateBlock = 256;             // candidates per task
// Below this much work (normals) a parallel region costs more than it saves, especially on a
// busy machine where waking the OpenMP team takes milliseconds.
constexpr int64_t kParallelWork = int64_t{1} << 16;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FASTDIFFC_NO_CLONES)
#define FASTDIFFC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTDIFFC_CLONES
#endif

struct Best {
  double score;
  int64_t index;
};

// GCC/Clang vector extensions: the 8 Philox blocks of a batch run in SIMD lanes, lowered to
// AVX-512, AVX2 or SSE by each target_clones variant of the calling function.
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint64_t u64x8 __attribute__((vector_size(64)));

// 64 normals of one candidate at positions [first_block * 8, first_block * 8 + 64).
FASTDIFFC_HD void batch_normals(const float* table, uint64_t seed, uint32_t step_word, uint32_t chunk,
                                uint32_t candidate, uint32_t first_block, float* eps) {
  u32x8 x0 = {0, 1, 2, 3, 4, 5, 6, 7};
  x0 += first_block;
  u32x8 x1 = u32x8{} + candidate, x2 = u32x8{} + chunk, x3 = u32x8{} + step_word;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const u64x8 m0 = u64x8{} + static_cast<uint64_t>(rng::kPhiloxM0);
  const u64x8 m1 = u64x8{} + static_cast<uint64_t>(rng::kPhiloxM1);
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += rng::kPhiloxW0;
      k1 += rng::kPhiloxW1;
    }
    const u64x8 p0 = __builtin_convertvector(x0, u64x8) * m0;
    const u64x8 p1 = __builtin_convertvector(x2, u64x8) * m1;
    const u32x8 n0 = __builtin_convertvector(p1 >> 32, u32x8) ^ x1 ^ k0;
    const u32x8 n2 = __builtin_convertvector(p0 >> 32, u32x8) ^ x3 ^ k1;
    x1 = __builtin_convertvector(p1, u32x8);
    x3 = __builtin_convertvector(p0, u32x8);
    x0 = n0;
    x2 = n2;
  }
  const u32x8 w[4] = {x0, x1, x2, x3};
  for (int b = 0; b < kBlockWidth; ++b) {
    for (int k = 0; k < 4; ++k) {
      eps[b * 8 + 2 * k] = table[w[k][b] & 0xFFFFu];
      eps[b * 8 + 2 * k + 1] = table[w[k][b] >> 16];
    }
  }
}

// <mu_c, eps_i> with mu_c given in double, zero padded to a multiple of 64.
FASTDIFFC_HD double candidate_dot(const float* table, const double* mu, int64_t padded, uint64_t seed,
                                  uint32_t step_word, uint32_t chunk, uint32_t candidate) {
  double acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = 0.0;
  alignas(64) float eps[kBatchNormals];
  for (int64_t j0 = 0; j0 < padded; j0 += kBatchNormals) {
    batch_normals(table, seed, step_word, chunk, candidate, static_cast<uint32_t>(j0 >> 3), eps);
    const double* m = mu + j0;
    for (int q = 0; q < kBatchNormals; q += kLanes) {
      for (int l = 0; l < kLanes; ++l) acc[l] = acc[l] + static_cast<double>(eps[q + l]) * m[q + l];
    }
  }
  return reduce_lanes(acc);
}

// Best (score, index) over candidates [i0, i1) of one chunk; pfr times continue from t_before.
FASTDIFFC_CLONES
Best score_block(const float* table, const double* mu, int64_t padded, uint64_t seed, uint32_t step,
                 uint32_t chunk, int64_t i0, int64_t i1, Scheme scheme, uint64_t t_before, double* scores_out) {
  const uint32_t step_word = rng::counter_word3(rng::kDomainCandidates, step);
  Best best{std::numeric_limits<double>::infinity(), -1};
  uint64_t t = t_before;
  for (int64_t i = i0; i < i1; ++i) {
    const uint32_t cand = static_cast<uint32_t>(i);
    const uint64_t inc = arrival_increment(seed, step, chunk, cand);
    t = scheme == Scheme::kPfr ? t + inc : inc;
    const double s = arrival_log_term(t) - candidate_dot(table, mu, padded, seed, step_word, chunk, cand);
    if (scores_out) scores_out[i - i0] = s;
    if (s < best.score || best.index < 0) best = Best{s, i};  // strict: ties keep the lower index
  }
  return best;
}

FASTDIFFC_CLONES
double generate_block(const float* table, int64_t i0, int64_t i1, int64_t length, uint64_t seed) {
  const uint32_t step_word = rng::counter_word3(rng::kDomainCandidates, 0);
  float acc[kLanes] = {};
  alignas(64) float eps[kBatchNormals];
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j0 = 0; j0 < length; j0 += kBatchNormals) {
      batch_normals(table, seed, step_word, 0u, static_cast<uint32_t>(i), static_cast<uint32_t>(j0 >> 3), eps);
      for (int q = 0; q < kBatchNormals; q += kLanes) {
        for (int l = 0; l < kLanes; ++l) acc[l] += eps[q + l];
      }
    }
  }
  double total = 0.0;
  for (int l = 0; l < kLanes; ++l) total += acc[l];
  return total;
}

// mu of chunk c in double, zero padded to a multiple of 64 (padding adds exact zeros to the lanes).
std::vector<double> chunk_mu(const float* mu_perm, int64_t lo, int64_t hi) {
  const int64_t len = hi - lo;
  const int64_t padded = (len + kBatchNormals - 1) / kBatchNormals * kBatchNormals;
  std::vector<double> m(static_cast<size_t>(std::max<int64_t>(padded, kBatchNormals)), 0.0);
  for (int64_t j = 0; j < len; ++j) m[static_cast<size_t>(j)] = static_cast<double>(mu_perm[lo + j]);
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
  std::vector<uint64_t> packed(static_cast<size_t>(dim));
  const uint32_t word3 = rng::counter_word3(rng::kDomainPermutation, step);
  const int64_t pairs = (dim + 1) / 2;
#pragma omp parallel for schedule(static) if (dim >= kParallelWork)
  for (int64_t p = 0; p < pairs; ++p) {
    const rng::Philox4 r = rng::philox4x32_10(static_cast<uint32_t>(p), 0u, 0u, word3, seed);
    for (int h = 0; h < 2; ++h) {
      const int64_t j = 2 * p + h;
      if (j >= dim) break;
      const uint64_t key = (static_cast<uint64_t>(r.v[2 * h + 1]) << 32) | r.v[2 * h];
      // 33 random bits above the 31-bit index: distinct values, ties broken by index.
      packed[static_cast<size_t>(j)] = ((key >> 31) << 31) | static_cast<uint64_t>(j);
    }
  }
  std::sort(packed.begin(), packed.end());
  const uint64_t mask = (uint64_t{1} << 31) - 1;
  for (int64_t k = 0; k < dim; ++k) perm[k] = static_cast<int64_t>(packed[static_cast<size_t>(k)] & mask);
}

void select(const float* mu_perm, int64_t dim, int64_t chunks, int bits, uint64_t seed, uint32_t step,
            Scheme scheme, int64_t* indices) {
  check_select_args(dim, chunks, bits, step);
  const float* table = normal_table();
  const int64_t n_cand = int64_t{1} << bits;
  const int64_t blocks = (n_cand + kCandidateBlock - 1) / kCandidateBlock;
  const int64_t tasks = chunks * blocks;
  // Phase 1 (pfr): each block's sum of fixed-point increments, then per-chunk exclusive prefix
  // sums, so every task knows the arrival time before its first candidate. Integer sums: exact.
  const bool parallel = n_cand * dim >= kParallelWork;
  std::vector<uint64_t> t_before(static_cast<size_t>(tasks), 0);
  if (scheme == Scheme::kPfr) {
#pragma omp parallel for schedule(static) if (parallel && tasks > 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t c = task / blocks, blk = task % blocks;
      const int64_t i0 = blk * kCandidateBlock, i1 = std::min(n_cand, i0 + kCandidateBlock);
      uint64_t s = 0;
      for (int64_t i = i0; i < i1; ++i)
        s += arrival_increment(seed, step, static_cast<uint32_t>(c), static_cast<uint32_t>(i));
      t_before[static_cast<size_t>(task)] = s;
    }
    for (int64_t c = 0; c < chunks; ++c) {
      uint64_t run = 0;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const size_t k = static_cast<size_t>(c * blocks + blk);
        const uint64_t s = t_before[k];
        t_before[k] = run;
        run += s;
      }
    }
  }
  // Phase 2: score every candidate, best per task.
  std::vector<Best> best(static_cast<size_t>(tasks));
#pragma omp parallel if (parallel && tasks > 1)
  {
    std::vector<double> mu;
    int64_t mu_chunk = -1;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t c = task / blocks, blk = task % blocks;
      const int64_t lo = chunk_start(c, dim, chunks), hi = chunk_start(c + 1, dim, chunks);
      if (c != mu_chunk) {
        mu = chunk_mu(mu_perm, lo, hi);
        mu_chunk = c;
      }
      const int64_t i0 = blk * kCandidateBlock, i1 = std::min(n_cand, i0 + kCandidateBlock);
      best[static_cast<size_t>(task)] =
          score_block(table, mu.data(), static_cast<int64_t>(mu.size()), seed, step, static_cast<uint32_t>(c), i0,
                      i1, scheme, t_before[static_cast<size_t>(task)], nullptr);
    }
  }
  // Phase 3: per chunk, blocks in ascending order with a strict comparison: ties -> lowest index.
  for (int64_t c = 0; c < chunks; ++c) {
    Best b = best[static_cast<size_t>(c * blocks)];
    for (int64_t blk = 1; blk < blocks; ++blk) {
      const Best& o = best[static_cast<size_t>(c * blocks + blk)];
      if (o.score < b.score) b = o;
    }
    indices[c] = b.index;
  }
}

void chunk_scores(const float* mu_perm, int64_t dim, int64_t chunks, int bits, uint64_t seed, uint32_t step,
                  Scheme scheme, int64_t chunk, double* scores) {
  check_select_args(dim, chunks, bits, step);
  if (chunk < 0 || chunk >= chunks) throw std::invalid_argument("chunk out of range");
  const int64_t lo = chunk_start(chunk, dim, chunks), hi = chunk_start(chunk + 1, dim, chunks);
  std::vector<double> mu = chunk_mu(mu_perm, lo, hi);
  score_block(normal_table(), mu.data(), static_cast<int64_t>(mu.size()), seed, step,
              static_cast<uint32_t>(chunk), 0, int64_t{1} << bits, scheme, 0, scores);
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

double generate_normals_checksum(int64_t count, int64_t length, uint64_t seed) {
  if (count < 1 || length < 1 || length >= kDimLimit || count > (int64_t{1} << 32))
    throw std::invalid_argument("count and length must be positive (length < 2^31, count <= 2^32)");
  const float* table = normal_table();
  const int64_t blocks = (count + kCandidateBlock - 1) / kCandidateBlock;
  double total = 0.0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total) if (count * length >= kParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * kCandidateBlock, i1 = std::min(count, i0 + kCandidateBlock);
    total += generate_block(table, i0, i1, length, seed);
  }
  return total;
}

}  // namespace fastdiffc::rcc

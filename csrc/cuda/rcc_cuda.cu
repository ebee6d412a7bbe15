// CUDA RCC candidate selection (docs/design.md §5): per step one scoring launch over all chunks (a grid
// of chunks x candidate blocks, one thread per candidate), block argmin reductions with ties to the
// lowest index, and the same Philox / table normals / lane-ordered dot products / fixed-point
// arrival times as the CPU (csrc/rcc/rcc_common.h), so both select identical indices.
// Compiled with --fmad=false: no FMA contraction, as on the CPU.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/api.h"
#include "cuda/rcc_cuda.h"
#include "rcc/rcc_common.h"

namespace fastdiffc::cuda {

namespace {

constexpr int kMaxThreads = 256;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
  }
}

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(int64_t n) {
    check(cudaMalloc(reinterpret_cast<void**>(&ptr), static_cast<size_t>(n > 0 ? n : 1) * sizeof(T)), "cudaMalloc");
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

struct Launch {
  int64_t dim, chunks, chunk_base, blocks_per_chunk, n_cand;
  uint64_t seed;
  uint32_t step;
  int scheme;
};

// Block-local indices of this thread: chunk, candidate, and whether the candidate exists.
__device__ __forceinline__ void locate(const Launch& L, int64_t& chunk, int64_t& blk, int64_t& cand) {
  const int64_t block = static_cast<int64_t>(blockIdx.x);
  chunk = L.chunk_base + block / L.blocks_per_chunk;
  blk = block % L.blocks_per_chunk;
  cand = blk * static_cast<int64_t>(blockDim.x) + threadIdx.x;
}

// Kernel 1 (pfr): sum of the fixed-point arrival increments of each candidate block.
__global__ void arrival_block_sums(Launch L, unsigned long long* sums) {
  __shared__ unsigned long long part[kMaxThreads / 32];
  int64_t chunk, blk, cand;
  locate(L, chunk, blk, cand);
  unsigned long long v = 0;
  if (cand < L.n_cand)
    v = rcc::arrival_increment(L.seed, L.step, static_cast<uint32_t>(chunk), static_cast<uint32_t>(cand));
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xFFFFFFFFu, v, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long s = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += part[w];
    sums[blockIdx.x] = s;  // integer sums: exact in any order
  }
}

// Kernel 2 (pfr): exclusive prefix over each chunk's blocks, one thread per chunk.
__global__ void arrival_block_prefix(Launch L, int64_t chunks_here, unsigned long long* sums) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= chunks_here) return;
  unsigned long long run = 0;
  for (int64_t b = 0; b < L.blocks_per_chunk; ++b) {
    const int64_t k = c * L.blocks_per_chunk + b;
    const unsigned long long s = sums[k];
    sums[k] = run;
    run += s;
  }
}

__device__ __forceinline__ bool better(double s, long long i, double s2, long long i2) {
  return s < s2 || (s == s2 && i < i2);
}

// Kernel 3: score every candidate of every chunk in this launch; best (score, index) per block.
__global__ void score_candidates(Launch L, const float* __restrict__ mu, const float* __restrict__ table,
                                 const unsigned long long* __restrict__ t_before, double* best_score,
                                 long long* best_index) {
  __shared__ unsigned long long scan[kMaxThreads];
  __shared__ double wscore[kMaxThreads / 32];
  __shared__ long long windex[kMaxThreads / 32];
  int64_t chunk, blk, cand;
  locate(L, chunk, blk, cand);
  const bool live = cand < L.n_cand;
  const uint32_t c32 = static_cast<uint32_t>(chunk), i32 = static_cast<uint32_t>(cand);

  // Arrival time of this candidate: exact integer (inclusive scan within the block + block offset).
  unsigned long long inc = live ? rcc::arrival_increment(L.seed, L.step, c32, i32) : 0ull;
  unsigned long long t = inc;
  if (L.scheme == static_cast<int>(rcc::Scheme::kPfr)) {
    scan[threadIdx.x] = inc;
    __syncthreads();
    for (unsigned o = 1; o < blockDim.x; o <<= 1) {
      const unsigned long long add = threadIdx.x >= o ? scan[threadIdx.x - o] : 0ull;
      __syncthreads();
      scan[threadIdx.x] += add;
      __syncthreads();
    }
    t = t_before[blockIdx.x] + scan[threadIdx.x];
  }

  double score = CUDART_INF;
  long long index = 0x7FFFFFFFFFFFFFFFLL;  // loses every comparison
  if (live) {
    const int64_t lo = rcc::chunk_start(chunk, L.dim, L.chunks), hi = rcc::chunk_start(chunk + 1, L.dim, L.chunks);
    const int64_t len = hi - lo;
    const uint32_t word3 = rng::counter_word3(rng::kDomainCandidates, L.step);
    double acc[rcc::kLanes];
#pragma unroll
    for (int l = 0; l < rcc::kLanes; ++l) acc[l] = 0.0;
    // Lane b takes the positions of Philox block b of every 128-position batch, in increasing
    // order (the CPU's and rcc_numpy.lane_dot's order); then the fixed tree.
    for (int64_t j0 = 0; j0 < len; j0 += 128) {
#pragma unroll
      for (int b = 0; b < rcc::kLanes; ++b) {
        const int64_t jb = j0 + 8 * b;
        if (jb < len) {
          const rng::Philox4 r = rng::philox4x32_10(static_cast<uint32_t>(jb >> 3), i32, c32, word3, L.seed);
#pragma unroll
          for (int pos = 0; pos < 8; ++pos) {
            if (jb + pos < len) {
              const float e = table[rcc::normal_index(r.v, pos)];
              acc[b] = acc[b] + static_cast<double>(e) * static_cast<double>(mu[lo + jb + pos]);
            }
          }
        }
      }
    }
    score = rcc::arrival_log_term(t) - rcc::reduce_lanes(acc);
    index = static_cast<long long>(cand);
  }

  // Block argmin: warp shuffles, then the warps' winners; ties go to the lower index.
  for (int o = 16; o > 0; o >>= 1) {
    const double s2 = __shfl_down_sync(0xFFFFFFFFu, score, o);
    const long long i2 = __shfl_down_sync(0xFFFFFFFFu, index, o);
    if (better(s2, i2, score, index)) {
      score = s2;
      index = i2;
    }
  }
  if ((threadIdx.x & 31) == 0) {
    wscore[threadIdx.x >> 5] = score;
    windex[threadIdx.x >> 5] = index;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = wscore[0];
    long long i = windex[0];
    for (unsigned w = 1; w < blockDim.x / 32; ++w) {
      if (better(wscore[w], windex[w], s, i)) {
        s = wscore[w];
        i = windex[w];
      }
    }
    best_score[blockIdx.x] = s;
    best_index[blockIdx.x] = i;
  }
}

// Kernel 4: each chunk's winner over its blocks (ascending, ties to the lower index).
__global__ void reduce_chunks(Launch L, int64_t chunks_here, const double* best_score, const long long* best_index,
                              long long* out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= chunks_here) return;
  double s = best_score[c * L.blocks_per_chunk];
  long long i = best_index[c * L.blocks_per_chunk];
  for (int64_t b = 1; b < L.blocks_per_chunk; ++b) {
    const int64_t k = c * L.blocks_per_chunk + b;
    if (better(best_score[k], best_index[k], s, i)) {
      s = best_score[k];
      i = best_index[k];
    }
  }
  out[c] = i;
}

// The normal table on the current device, uploaded once per device.
const float* device_table() {
  static std::mutex lock;
  static std::vector<float*> tables;
  std::lock_guard<std::mutex> guard(lock);
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (static_cast<int>(tables.size()) <= dev) tables.resize(static_cast<size_t>(dev) + 1, nullptr);
  if (!tables[static_cast<size_t>(dev)]) {
    std::vector<float> host(rng::kNormalTableSize);
    rng::build_normal_table(host.data());
    float* d = nullptr;
    check(cudaMalloc(reinterpret_cast<void**>(&d), host.size() * sizeof(float)), "cudaMalloc(table)");
    check(cudaMemcpy(d, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy(table)");
    tables[static_cast<size_t>(dev)] = d;
  }
  return tables[static_cast<size_t>(dev)];
}

}  // namespace

int64_t rcc_chunk_offset(int64_t c, int64_t dim, int64_t chunks) {
  if (chunks < 1 || dim < 1 || c < 0 || c > chunks) throw std::invalid_argument("chunk offset arguments out of range");
  return rcc::chunk_start(c, dim, chunks);
}

RccLaunchPlan plan_rcc_launch(int64_t dim, int64_t chunks, int bits, uint64_t step) {
  if (dim < 1 || dim >= rcc::kDimLimit) throw std::invalid_argument("dim must be in [1, 2^31), got " + std::to_string(dim));
  if (step >= rng::kStepLimit) throw std::invalid_argument("step must be in [0, 2^28), got " + std::to_string(step));
  if (chunks < 1 || chunks > dim) throw std::invalid_argument("chunks must be in [1, dim], got " + std::to_string(chunks));
  if (bits < 1 || bits > rcc::kMaxBits)
    throw std::invalid_argument("bits_per_chunk must be in [1, 20], got " + std::to_string(bits));
  RccLaunchPlan p;
  p.dim = dim;
  p.chunks = chunks;
  p.candidates = int64_t{1} << bits;
  const int64_t threads = p.candidates < kMaxThreads ? p.candidates : kMaxThreads;
  p.threads_per_block = static_cast<int>(threads < 32 ? 32 : threads);
  p.blocks_per_chunk = (p.candidates + p.threads_per_block - 1) / p.threads_per_block;
  p.chunks_per_launch = kMaxBlocksPerLaunch / p.blocks_per_chunk;
  if (p.chunks_per_launch > chunks) p.chunks_per_launch = chunks;
  p.launches = (chunks + p.chunks_per_launch - 1) / p.chunks_per_launch;
  p.blocks_per_launch = p.chunks_per_launch * p.blocks_per_chunk;
  p.max_chunk_length = (dim + chunks - 1) / chunks;  // chunk lengths are floor or ceil of dim / chunks
  p.scratch_bytes = p.blocks_per_launch * static_cast<int64_t>(sizeof(unsigned long long) + sizeof(double) +
                                                               sizeof(long long)) +
                    p.chunks_per_launch * static_cast<int64_t>(sizeof(long long));
  return p;
}

void rcc_select(const float* mu_perm, int64_t dim, int64_t chunks, int bits, uint64_t seed, uint32_t step,
                int scheme, int64_t* indices) {
  const RccLaunchPlan p = plan_rcc_launch(dim, chunks, bits, step);
  if (scheme != static_cast<int>(rcc::Scheme::kPfr) && scheme != static_cast<int>(rcc::Scheme::kImportance))
    throw std::invalid_argument("unknown RCC scheme id " + std::to_string(scheme));
  if (device_count() <= 0) throw std::runtime_error("fastdiffc._cuda: no CUDA device available (use backend='cpp')");

  const float* table = device_table();
  DeviceBuffer<float> mu(dim);
  check(cudaMemcpy(mu.ptr, mu_perm, static_cast<size_t>(dim) * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy(mu)");
  DeviceBuffer<unsigned long long> t_before(p.blocks_per_launch);
  DeviceBuffer<double> best_score(p.blocks_per_launch);
  DeviceBuffer<long long> best_index(p.blocks_per_launch);
  DeviceBuffer<long long> out(p.chunks_per_launch);
  std::vector<long long> host_out(static_cast<size_t>(p.chunks_per_launch));

  for (int64_t base = 0; base < chunks; base += p.chunks_per_launch) {
    const int64_t here = chunks - base < p.chunks_per_launch ? chunks - base : p.chunks_per_launch;
    const Launch L{dim, chunks, base, p.blocks_per_chunk, p.candidates, seed, step, scheme};
    const unsigned grid = static_cast<unsigned>(here * p.blocks_per_chunk);
    const unsigned threads = static_cast<unsigned>(p.threads_per_block);
    const unsigned chunk_grid = static_cast<unsigned>((here + 127) / 128);
    if (scheme == static_cast<int>(rcc::Scheme::kPfr)) {
      arrival_block_sums<<<grid, threads>>>(L, t_before.ptr);
      check(cudaGetLastError(), "arrival_block_sums");
      arrival_block_prefix<<<chunk_grid, 128>>>(L, here, t_before.ptr);
      check(cudaGetLastError(), "arrival_block_prefix");
    }
    score_candidates<<<grid, threads>>>(L, mu.ptr, table, t_before.ptr, best_score.ptr, best_index.ptr);
    check(cudaGetLastError(), "score_candidates");
    reduce_chunks<<<chunk_grid, 128>>>(L, here, best_score.ptr, best_index.ptr, out.ptr);
    check(cudaGetLastError(), "reduce_chunks");
    check(cudaMemcpy(host_out.data(), out.ptr, static_cast<size_t>(here) * sizeof(long long), cudaMemcpyDeviceToHost),
          "cudaMemcpy(indices)");
    for (int64_t c = 0; c < here; ++c) indices[base + c] = static_cast<int64_t>(host_out[static_cast<size_t>(c)]);
  }
}

}  // namespace fastdiffc::cuda

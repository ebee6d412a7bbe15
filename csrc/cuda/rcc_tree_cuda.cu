// CUDA tree-codebook RCC selection (scheme "tree", python/fastdiffc/rcc_tree.py): per chunk and
// level one launch scores every child of the beam (one thread per child, the CPU's lane-ordered
// dot product over the node's Philox increment); node keys, the beam order and the leaf choice
// are the shared __host__ __device__ functions of csrc/rcc/rcc_common.h, run on the host, so the
// paths equal fastdiffc::rcc::tree_select's. Compiled with --fmad=false like rcc_cuda.cu.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/api.h"
#include "cuda/rcc_cuda.h"
#include "rcc/rcc_common.h"

namespace fastdiffc::cuda {

namespace {

void check_tree(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
  }
}

// dots[i] = <mu[lo, lo + len), increment of node keys[i]> in the lane order of rcc_numpy.lane_dot.
__global__ void tree_child_dots(const float* __restrict__ mu, int64_t lo, int64_t len,
                                const unsigned* __restrict__ key_lo, const unsigned* __restrict__ key_hi, int64_t n,
                                uint64_t seed, uint32_t step, const float* __restrict__ table, double* dots) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint32_t word3 = rng::counter_word3(rcc::kDomainTreeNormals, step);
  const uint32_t klo = key_lo[i], khi = key_hi[i];
  double acc[rcc::kLanes];
#pragma unroll
  for (int l = 0; l < rcc::kLanes; ++l) acc[l] = 0.0;
  for (int64_t j0 = 0; j0 < len; j0 += 128) {
#pragma unroll
    for (int b = 0; b < rcc::kLanes; ++b) {
      const int64_t jb = j0 + 8 * b;
      if (jb < len) {
        const rng::Philox4 r = rng::philox4x32_10(static_cast<uint32_t>(jb >> 3), klo, khi, word3, seed);
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
  dots[i] = rcc::reduce_lanes(acc);
}

const float* tree_device_table() {
  static float* d = nullptr;  // uploaded once (device 0 / the current device at first use)
  if (!d) {
    std::vector<float> host(rng::kNormalTableSize);
    rng::build_normal_table(host.data());
    check_tree(cudaMalloc(reinterpret_cast<void**>(&d), host.size() * sizeof(float)), "cudaMalloc(table)");
    check_tree(cudaMemcpy(d, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy(table)");
  }
  return d;
}

struct Node {
  double sum;
  rcc::TreeKey key;
  int64_t flat, parent;
};

}  // namespace

void rcc_tree_select(const float* mu_perm, int64_t dim, int64_t chunks, int depth, int level_bits, int beam,
                     uint64_t seed, uint32_t step, int64_t* paths) {
  if (dim < 1 || dim >= rcc::kDimLimit) throw std::invalid_argument("dim must be in [1, 2^31)");
  if (step >= rng::kStepLimit) throw std::invalid_argument("step must be in [0, 2^28)");
  if (chunks < 1 || chunks > dim) throw std::invalid_argument("chunks must be in [1, dim]");
  if (depth < 1 || depth > rcc::kTreeMaxLevels) throw std::invalid_argument("tree depth must be in [1, 64]");
  if (level_bits < 1 || level_bits > rcc::kTreeMaxLevelBits) throw std::invalid_argument("bits per level in [1, 8]");
  if (beam < 1 || beam > rcc::kTreeMaxBeam) throw std::invalid_argument("tree beam must be in [1, 4096]");
  if (device_count() <= 0) throw std::runtime_error("fastdiffc._cuda: no CUDA device available (use backend='cpp')");
  const float* table = tree_device_table();
  const int64_t k = int64_t{1} << level_bits;
  const int64_t max_children = static_cast<int64_t>(beam) * k;
  float* mu = nullptr;
  unsigned *klo = nullptr, *khi = nullptr;
  double* dots = nullptr;
  check_tree(cudaMalloc(reinterpret_cast<void**>(&mu), static_cast<size_t>(dim) * sizeof(float)), "cudaMalloc(mu)");
  check_tree(cudaMemcpy(mu, mu_perm, static_cast<size_t>(dim) * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy(mu)");
  check_tree(cudaMalloc(reinterpret_cast<void**>(&klo), static_cast<size_t>(max_children) * sizeof(unsigned)), "cudaMalloc");
  check_tree(cudaMalloc(reinterpret_cast<void**>(&khi), static_cast<size_t>(max_children) * sizeof(unsigned)), "cudaMalloc");
  check_tree(cudaMalloc(reinterpret_cast<void**>(&dots), static_cast<size_t>(max_children) * sizeof(double)), "cudaMalloc");
  std::vector<unsigned> hlo(static_cast<size_t>(max_children)), hhi(static_cast<size_t>(max_children));
  std::vector<double> hdots(static_cast<size_t>(max_children));
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = rcc::chunk_start(c, dim, chunks), len = rcc::chunk_start(c + 1, dim, chunks) - lo;
    // |mu_c|^2 in the lane order (lane = Philox block mod 16 of each 128-position batch).
    double acc[rcc::kLanes] = {};
    for (int64_t j = 0; j < len; ++j) {
      const double m = static_cast<double>(mu_perm[lo + j]);
      acc[(j % 128) >> 3] = acc[(j % 128) >> 3] + m * m;
    }
    const double target = rcc::reduce_lanes(acc) * std::sqrt(static_cast<double>(depth));
    std::vector<Node> front{Node{0.0, rcc::tree_root_key(static_cast<uint32_t>(c)), 0, -1}};
    std::vector<std::vector<int64_t>> digit_of, parent_of;
    for (int level = 0; level < depth; ++level) {
      const int64_t n = static_cast<int64_t>(front.size()) * k;
      std::vector<Node> children(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        const rcc::TreeKey key = rcc::tree_child_key(front[static_cast<size_t>(i / k)].key,
                                                     static_cast<uint32_t>(i % k), seed, step);
        hlo[static_cast<size_t>(i)] = key.lo;
        hhi[static_cast<size_t>(i)] = key.hi;
        children[static_cast<size_t>(i)] = Node{0.0, key, i, i / k};
      }
      check_tree(cudaMemcpy(klo, hlo.data(), static_cast<size_t>(n) * sizeof(unsigned), cudaMemcpyHostToDevice), "cudaMemcpy");
      check_tree(cudaMemcpy(khi, hhi.data(), static_cast<size_t>(n) * sizeof(unsigned), cudaMemcpyHostToDevice), "cudaMemcpy");
      tree_child_dots<<<static_cast<unsigned>((n + 127) / 128), 128>>>(mu, lo, len, klo, khi, n, seed, step, table, dots);
      check_tree(cudaGetLastError(), "tree_child_dots");
      check_tree(cudaMemcpy(hdots.data(), dots, static_cast<size_t>(n) * sizeof(double), cudaMemcpyDeviceToHost),
                 "cudaMemcpy(dots)");
      for (int64_t i = 0; i < n; ++i)
        children[static_cast<size_t>(i)].sum = front[static_cast<size_t>(i / k)].sum + hdots[static_cast<size_t>(i)];
      const bool last = level == depth - 1;
      const int64_t keep = last ? 1 : std::min<int64_t>(beam, n);
      std::partial_sort(children.begin(), children.begin() + keep, children.end(), [&](const Node& a, const Node& b) {
        return last ? rcc::tree_leaf_before(a.sum, a.flat, b.sum, b.flat, target)
                    : rcc::tree_beam_before(a.sum, a.flat, b.sum, b.flat);
      });
      children.resize(static_cast<size_t>(keep));
      std::vector<int64_t> dg(static_cast<size_t>(keep)), pa(static_cast<size_t>(keep));
      for (int64_t r = 0; r < keep; ++r) {
        dg[static_cast<size_t>(r)] = children[static_cast<size_t>(r)].flat % k;
        pa[static_cast<size_t>(r)] = children[static_cast<size_t>(r)].parent;
      }
      digit_of.push_back(std::move(dg));
      parent_of.push_back(std::move(pa));
      front.swap(children);
    }
    int64_t r = 0;
    for (int level = depth - 1; level >= 0; --level) {
      paths[c * depth + level] = digit_of[static_cast<size_t>(level)][static_cast<size_t>(r)];
      r = parent_of[static_cast<size_t>(level)][static_cast<size_t>(r)];
    }
  }
  cudaFree(mu);
  cudaFree(klo);
  cudaFree(khi);
  cudaFree(dots);
}

}  // namespace fastdiffc::cuda

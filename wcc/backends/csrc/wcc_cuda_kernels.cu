// Kernels of the cuda backend: the WCC op of the reference backend (DESIGN 3.4), organised like
// the cpu backend's (csrc/wcc_cpu.cpp) for memory traffic:
//
//   1. wcc_haar_energy   one pass over x: each thread transforms one 2^J x 2^J tile of one image
//                        for a chunk of channels (the Haar transform of a tile depends on that
//                        tile only) and accumulates the channel energy; the chunks' sums are added
//                        in a fixed order (deterministic); the transform is not stored.
//   2. wcc_topk_select   radix select of the k-th largest energy per image (4 passes of 8 bits
//                        over the float's bit pattern, which orders like the value for x >= 0),
//                        then an ordered compaction: kept positions ascending, plus a slot map.
//   3. wcc_haar_gather   a second pass over x that writes only the kept coefficients, with the
//                        activation fake-quant fused (float values, or int8 codes for <= 8 bits).
//   4. wcc_gemm_kept     W @ kept columns: WMMA tensor cores for float16/bfloat16, a tiled SIMT
//                        kernel for float32; for integer codes, int8 with exact int32 sums on
//                        tensor cores (IMMA, sm_75+) or with dp4a (older GPUs).
//   5. wcc_scatter_ihaar scatter fused with the inverse transform, the crop and the bias: each
//                        thread rebuilds one tile of one output channel from the kept values.
//   + wcc_quantize / wcc_quant_backward for training (straight-through, learned-step alpha).
//
// Only the CUDA runtime and the CUDA math headers are used (no torch), so nvcc compiles this file
// alone for any architecture >= sm_75: `python -m wcc.backends.cuda_build --compile-only`.
// Arithmetic: float32 throughout (half inputs are widened on load); the transform uses the
// reference's operation order, so float32 coefficients equal the reference's bit for bit
// (build with -fmad=false: no contraction of the Haar sums or the quantizer).
#include "wcc_cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

namespace {

constexpr int kMaxLevels = 3;  // per-thread tile 8x8 = 64 floats in registers / local memory

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

struct Geo {
  int h, w;      // input size
  int hp, wp;    // padded size
  int ht, wt;    // tiles per column / row
  int64_t p;     // hp * wp
};

__host__ __device__ inline Geo make_geo(int h, int w, int levels) {
  const int m = 1 << levels;
  Geo g;
  g.h = h;
  g.w = w;
  g.hp = (h + m - 1) / m * m;
  g.wp = (w + m - 1) / m * m;
  g.ht = g.hp / m;
  g.wt = g.wp / m;
  g.p = (int64_t)g.hp * g.wp;
  return g;
}

// Global Mallat position of local coefficient (u, v) of tile (ty, tx). In the tile's own Mallat
// layout, (u, v) lies in a band of side s (the largest power of two <= max(u, v), 1 for the LL
// corner); that band sits at (ru, rv) in {0,1}^2 of its level's quadrant, and globally the band
// is ht*s x wt*s with this tile's s x s block at (ty*s, tx*s).
__host__ __device__ __forceinline__ int highest_bit(int t) {  // t > 0
#ifdef __CUDA_ARCH__
  return 31 - __clz(t);
#else
  return 31 - __builtin_clz((unsigned int)t);
#endif
}

// The tile helpers below are __host__ __device__ so that the host self-test (WCC_HOST_SELFTEST,
// tests/test_backend_cuda.py) runs this very code on the CPU against the reference transform.
__host__ __device__ __forceinline__ int64_t mallat_pos(const Geo& g, int ty, int tx, int u, int v) {
  const int t = u > v ? u : v;
  const int s = t > 0 ? (1 << highest_bit(t)) : 1;
  const int ru = u >= s, rv = v >= s;
  const int row = ru * g.ht * s + ty * s + (u - ru * s);
  const int col = rv * g.wt * s + tx * s + (v - rv * s);
  return (int64_t)row * g.wp + col;
}

// In-place forward transform of an M x M tile (row-major), levels = log2(M). Same operations
// in the same order as wcc.haar._forward_levels.
template <int L>
__host__ __device__ __forceinline__ void fwd_tile(float* t) {
  constexpr int M = 1 << L;
  float tmp[M * M];
#pragma unroll
  for (int l = 0, h = M; l < L; ++l, h >>= 1) {
    const int h2 = h >> 1;
#pragma unroll
    for (int i = 0; i < M / 2; ++i) {
#pragma unroll
      for (int j = 0; j < M / 2; ++j) {
        if (i < h2 && j < h2) {
          const float a = t[(2 * i) * M + 2 * j], b = t[(2 * i) * M + 2 * j + 1];
          const float c = t[(2 * i + 1) * M + 2 * j], d = t[(2 * i + 1) * M + 2 * j + 1];
          tmp[i * M + j] = (a + b + c + d) * 0.5f;
          tmp[i * M + j + h2] = (a - b + c - d) * 0.5f;
          tmp[(i + h2) * M + j] = (a + b - c - d) * 0.5f;
          tmp[(i + h2) * M + j + h2] = (a - b - c + d) * 0.5f;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int j = 0; j < M; ++j)
        if (i < h && j < h) t[i * M + j] = tmp[i * M + j];
  }
}

// In-place inverse (the transpose), as wcc.haar._inverse_levels.
template <int L>
__host__ __device__ __forceinline__ void inv_tile(float* t) {
  constexpr int M = 1 << L;
  float tmp[M * M];
#pragma unroll
  for (int l = L - 1; l >= 0; --l) {
    const int h = M >> l, h2 = h >> 1;
#pragma unroll
    for (int i = 0; i < M / 2; ++i) {
#pragma unroll
      for (int j = 0; j < M / 2; ++j) {
        if (i < h2 && j < h2) {
          const float ll = t[i * M + j], hb = t[i * M + j + h2];
          const float vb = t[(i + h2) * M + j], db = t[(i + h2) * M + j + h2];
          tmp[(2 * i) * M + 2 * j] = (ll + hb + vb + db) * 0.5f;
          tmp[(2 * i) * M + 2 * j + 1] = (ll - hb + vb - db) * 0.5f;
          tmp[(2 * i + 1) * M + 2 * j] = (ll + hb - vb - db) * 0.5f;
          tmp[(2 * i + 1) * M + 2 * j + 1] = (ll - hb - vb + db) * 0.5f;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
      for (int j = 0; j < M; ++j)
        if (i < h && j < h) t[i * M + j] = tmp[i * M + j];
  }
}

template <typename T, int L>
__device__ __forceinline__ void load_tile(const T* plane, const Geo& g, int ty, int tx, float* t) {
  constexpr int M = 1 << L;
#pragma unroll
  for (int i = 0; i < M; ++i) {
    const int r = ty * M + i;
#pragma unroll
    for (int j = 0; j < M; ++j) {
      const int c = tx * M + j;
      t[i * M + j] = (r < g.h && c < g.w) ? to_f<T>(plane[(int64_t)r * g.w + c]) : 0.0f;  // zero padding
    }
  }
}

// Signed fake-quant code of the reference: round-half-even(clamp(c / alpha, -1, 1) * n).
__host__ __device__ __forceinline__ float quant_code(float c, float alpha, float n) {
  const float u = c / alpha;
  return rintf(fminf(fmaxf(u, -1.0f), 1.0f) * n);
}

// The per-tile kernels give each thread one tile of one image and a chunk of channels: a thread
// per tile alone is too few threads (8 images of 128x256 at J=3 are 4096 tiles) to hide memory
// latency. Thread ids run over tiles fastest, so neighbouring threads read neighbouring tiles.
struct TileWork {
  int64_t img, chunk;
  int ty, tx;
};

__host__ __device__ __forceinline__ TileWork tile_work(int64_t id, const Geo& g, int64_t chunks) {
  const int64_t tiles = (int64_t)g.ht * g.wt;
  TileWork t;
  const int64_t tile = id % tiles;
  t.chunk = (id / tiles) % chunks;
  t.img = id / (tiles * chunks);
  t.ty = (int)(tile / g.wt);
  t.tx = (int)(tile % g.wt);
  return t;
}

// ------------------------------------------------------------------------------ 1. energy

// partial[chunk][img][pos] = sum over the chunk's channels of coeff^2 (or straight into score
// when there is one chunk); reduce_partials_kernel then sums the chunks in a fixed order, so the
// score, and with it the kept set, is deterministic.
template <typename T, int L>
__global__ void haar_energy_kernel(const T* __restrict__ x, float* __restrict__ partial, int64_t n, int64_t c,
                                   int64_t chunks, int64_t cpt, Geo g) {
  constexpr int M = 1 << L;
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= n * chunks * g.ht * g.wt) return;
  const TileWork tw = tile_work(id, g, chunks);
  float acc[M * M];
#pragma unroll
  for (int i = 0; i < M * M; ++i) acc[i] = 0.0f;
  float t[M * M];
  const int64_t c_end = min(c, (tw.chunk + 1) * cpt);
  for (int64_t ch = tw.chunk * cpt; ch < c_end; ++ch) {
    load_tile<T, L>(x + (tw.img * c + ch) * g.h * g.w, g, tw.ty, tw.tx, t);
    fwd_tile<L>(t);
#pragma unroll
    for (int i = 0; i < M * M; ++i) acc[i] += t[i] * t[i];
  }
  float* out = partial + (tw.chunk * n + tw.img) * g.p;
#pragma unroll
  for (int u = 0; u < M; ++u)
#pragma unroll
    for (int v = 0; v < M; ++v) out[mallat_pos(g, tw.ty, tw.tx, u, v)] = acc[u * M + v];
}

__global__ void reduce_partials_kernel(const float* __restrict__ partial, float* __restrict__ score, int64_t chunks,
                                       int64_t numel) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= numel) return;
  float acc = 0.0f;
  for (int64_t j = 0; j < chunks; ++j) acc += partial[j * numel + i];
  score[i] = acc;
}

// ------------------------------------------------------------------------------ 3. gather

constexpr int64_t kChannelsPerThread = 8;  // gather / scatter: slot lookups shared by 8 channels

template <typename T, int L>
__global__ void haar_gather_kernel(const T* __restrict__ x, const int32_t* __restrict__ slot_map,
                                   void* __restrict__ out, int mode, float alpha, float qn, int64_t n, int64_t c,
                                   int64_t chunks, Geo g, int64_t k) {
  constexpr int M = 1 << L;
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= n * chunks * g.ht * g.wt) return;
  const TileWork tw = tile_work(id, g, chunks);
  // The slots of this tile's coefficients are the same for every channel: look them up once.
  int32_t slot[M * M];
  bool any = false;
#pragma unroll
  for (int u = 0; u < M; ++u)
#pragma unroll
    for (int v = 0; v < M; ++v) {
      slot[u * M + v] = slot_map[tw.img * g.p + mallat_pos(g, tw.ty, tw.tx, u, v)];
      any |= slot[u * M + v] >= 0;
    }
  if (!any) return;  // a tile without kept positions: skip the transform entirely
  float t[M * M];
  const int64_t c_end = min(c, (tw.chunk + 1) * kChannelsPerThread);
  for (int64_t ch = tw.chunk * kChannelsPerThread; ch < c_end; ++ch) {
    load_tile<T, L>(x + (tw.img * c + ch) * g.h * g.w, g, tw.ty, tw.tx, t);
    fwd_tile<L>(t);
    const int64_t row = (tw.img * c + ch) * k;
#pragma unroll
    for (int i = 0; i < M * M; ++i) {
      if (slot[i] < 0) continue;
      const float v = t[i];
      switch (mode) {
        case WCC_RAW: static_cast<T*>(out)[row + slot[i]] = from_f<T>(v); break;
        case WCC_QUANT: {
          const float q = quant_code(v, alpha, qn) / qn;
          static_cast<T*>(out)[row + slot[i]] = from_f<T>(q * alpha);
          break;
        }
        case WCC_CODES: static_cast<int8_t*>(out)[row + slot[i]] = (int8_t)quant_code(v, alpha, qn); break;
        default: static_cast<float*>(out)[row + slot[i]] = v; break;
      }
    }
  }
}

// ------------------------------------------------------------------------------ 5. scatter + inverse

template <typename T, int L>
__global__ void scatter_ihaar_kernel(const float* __restrict__ vals, const int32_t* __restrict__ slot_map,
                                     const T* __restrict__ bias, T* __restrict__ y, int64_t n, int64_t c,
                                     int64_t chunks, Geo g, int64_t k) {
  constexpr int M = 1 << L;
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= n * chunks * g.ht * g.wt) return;
  const TileWork tw = tile_work(id, g, chunks);
  int32_t slot[M * M];
#pragma unroll
  for (int u = 0; u < M; ++u)
#pragma unroll
    for (int v = 0; v < M; ++v) slot[u * M + v] = slot_map[tw.img * g.p + mallat_pos(g, tw.ty, tw.tx, u, v)];
  float t[M * M];
  const int64_t c_end = min(c, (tw.chunk + 1) * kChannelsPerThread);
  for (int64_t ch = tw.chunk * kChannelsPerThread; ch < c_end; ++ch) {
    const int64_t plane = tw.img * c + ch;
    const float* row = vals + plane * k;
#pragma unroll
    for (int i = 0; i < M * M; ++i) t[i] = slot[i] >= 0 ? row[slot[i]] : 0.0f;
    inv_tile<L>(t);
    const float b = bias != nullptr ? to_f<T>(bias[ch]) : 0.0f;
    T* out = y + plane * g.h * g.w;
#pragma unroll
    for (int i = 0; i < M; ++i) {
      const int r = tw.ty * M + i;
#pragma unroll
      for (int j = 0; j < M; ++j) {
        const int col = tw.tx * M + j;
        if (r < g.h && col < g.w) out[(int64_t)r * g.w + col] = from_f<T>(t[i * M + j] + b);  // the crop
      }
    }
  }
}

// ------------------------------------------------------------------------------ 2. top-k

constexpr int kSelectThreads = 1024;

// Exclusive prefix sum of `flag` over the block (blockDim.x == kSelectThreads); *total gets the sum.
__device__ __forceinline__ int block_exclusive_scan(int flag, int* warp_sums, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = flag;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int other = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += other;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int ws = warp_sums[lane];  // kSelectThreads / 32 == 32 warps
    int wincl = ws;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const int other = __shfl_up_sync(0xffffffffu, wincl, off);
      if (lane >= off) wincl += other;
    }
    warp_sums[lane] = wincl - ws;  // exclusive
    if (lane == 31) *total = wincl;
  }
  __syncthreads();
  const int result = warp_sums[warp] + incl - flag;
  __syncthreads();  // warp_sums is reused by the next call
  return result;
}

__global__ void __launch_bounds__(kSelectThreads) topk_kernel(const float* __restrict__ score, int64_t p, int64_t k,
                                                              int32_t* __restrict__ kept,
                                                              int32_t* __restrict__ slot_map) {
  __shared__ unsigned int hist[256];
  __shared__ unsigned int s_prefix;
  __shared__ long long s_remaining;
  __shared__ int warp_sums[32];
  __shared__ int s_total;
  const int64_t img = blockIdx.x;
  const unsigned int* key = reinterpret_cast<const unsigned int*>(score + img * p);
  unsigned int prefix = 0, mask = 0;
  long long remaining = k;  // how many keys with the current prefix must still be taken
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < p; i += blockDim.x) {
      const unsigned int kk = key[i];
      if ((kk & mask) == prefix) atomicAdd(&hist[(kk >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      long long above = 0;
      int bin = 255;
      for (; bin > 0; --bin) {
        if (above + hist[bin] >= remaining) break;
        above += hist[bin];
      }
      s_prefix = prefix | ((unsigned int)bin << shift);
      s_remaining = remaining - above;
    }
    __syncthreads();
    prefix = s_prefix;
    remaining = s_remaining;
    mask |= 255u << shift;
    __syncthreads();
  }
  // prefix is now the k-th largest key; keep every key above it and the first `remaining` equal
  // ones (ascending position), writing kept positions in ascending order.
  const unsigned int threshold = prefix;
  int64_t base_out = 0;
  long long eq_seen = 0;
  for (int64_t start = 0; start < p; start += blockDim.x) {
    const int64_t i = start + threadIdx.x;
    const unsigned int kk = i < p ? key[i] : 0u;
    const int is_eq = (i < p && kk == threshold) ? 1 : 0;
    const int eq_before = block_exclusive_scan(is_eq, warp_sums, &s_total);
    const int eq_in_chunk = s_total;
    const int take = (i < p) && (kk > threshold || (is_eq && eq_seen + eq_before < remaining)) ? 1 : 0;
    const int pos = block_exclusive_scan(take, warp_sums, &s_total);
    const int taken = s_total;
    if (i < p) {
      const int32_t slot = take ? (int32_t)(base_out + pos) : -1;
      slot_map[img * p + i] = slot;
      if (take) kept[img * k + base_out + pos] = (int32_t)i;
    }
    base_out += taken;
    eq_seen += eq_in_chunk;
    __syncthreads();
  }
}

// ------------------------------------------------------------------------------ 4. GEMMs

// SIMT tile: 64x64 outputs per block of 256 threads (4x4 each), K in steps of 16.
constexpr int kTm = 64, kTn = 64, kTk = 16;

template <typename T>
__global__ void __launch_bounds__(256) gemm_simt_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                                        float* __restrict__ out, int64_t m, int64_t kd, int64_t cols) {
  __shared__ float as[kTk][kTm + 1];
  __shared__ float bs[kTk][kTn + 1];
  const int64_t img = blockIdx.z;
  const T* bimg = b + img * kd * cols;
  const int64_t row0 = (int64_t)blockIdx.y * kTm, col0 = (int64_t)blockIdx.x * kTn;
  const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < kd; k0 += kTk) {
    for (int e = threadIdx.x; e < kTm * kTk; e += 256) {
      const int r = e / kTk, kk = e % kTk;
      const int64_t gr = row0 + r, gk = k0 + kk;
      as[kk][r] = (gr < m && gk < kd) ? to_f<T>(a[gr * kd + gk]) : 0.0f;
    }
    for (int e = threadIdx.x; e < kTk * kTn; e += 256) {
      const int kk = e / kTn, cc = e % kTn;
      const int64_t gk = k0 + kk, gc = col0 + cc;
      bs[kk][cc] = (gk < kd && gc < cols) ? to_f<T>(bimg[gk * cols + gc]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTk; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = as[kk][tr + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = bs[kk][tc + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
  float* oimg = out + img * m * cols;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gr = row0 + tr + 16 * i, gc = col0 + tc + 16 * j;
      if (gr < m && gc < cols) oimg[gr * cols + gc] = acc[i][j];
    }
}

// Tensor-core tile: 64x64 outputs per block of 4 warps (each 32x32 = 2x2 WMMA 16x16x16
// fragments), K in steps of 32; float32 accumulation. Operands are staged in shared memory with
// zero fill, so any M, K and k work (no alignment requirement on the kept count).
constexpr int kWk = 32;

template <typename T>
__device__ __forceinline__ void gemm_wmma_body(const T* __restrict__ a, const T* __restrict__ b,
                                               float* __restrict__ out, int64_t m, int64_t kd, int64_t cols) {
  using namespace nvcuda;
  __shared__ __align__(32) T as[kTm][kWk + 8];
  __shared__ __align__(32) T bs[kWk][kTn + 8];
  __shared__ __align__(32) float cs[4][32][32 + 4];
  const int64_t img = blockIdx.z;
  const T* bimg = b + img * kd * cols;
  const int64_t row0 = (int64_t)blockIdx.y * kTm, col0 = (int64_t)blockIdx.x * kTn;
  const int warp = threadIdx.x / 32, wr = (warp / 2) * 32, wc = (warp % 2) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  const T zero = from_f<T>(0.0f);
  for (int64_t k0 = 0; k0 < kd; k0 += kWk) {
    for (int e = threadIdx.x; e < kTm * kWk; e += 128) {
      const int r = e / kWk, kk = e % kWk;
      const int64_t gr = row0 + r, gk = k0 + kk;
      as[r][kk] = (gr < m && gk < kd) ? a[gr * kd + gk] : zero;
    }
    for (int e = threadIdx.x; e < kWk * kTn; e += 128) {
      const int kk = e / kTn, cc = e % kTn;
      const int64_t gk = k0 + kk, gc = col0 + cc;
      bs[kk][cc] = (gk < kd && gc < cols) ? bimg[gk * cols + gc] : zero;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kWk; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &as[wr + 16 * i][kk], kWk + 8);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &bs[kk][wc + 16 * j], kTn + 8);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&cs[warp][16 * i][16 * j], acc[i][j], 32 + 4, wmma::mem_row_major);
  __syncwarp();
  float* oimg = out + img * m * cols;
  const int lane = threadIdx.x % 32;
  for (int r = 0; r < 32; ++r) {
    const int64_t gr = row0 + wr + r, gc = col0 + wc + lane;
    if (gr < m && gc < cols) oimg[gr * cols + gc] = cs[warp][r][lane];
  }
}

template <typename T> __host__ __device__ constexpr bool is_half() { return false; }
template <> __host__ __device__ constexpr bool is_half<__half>() { return true; }
static_assert(is_half<__half>() && !is_half<float>(), "is_half");  // (also keeps nvcc from calling it unused)

template <typename T>
__global__ void __launch_bounds__(128) gemm_wmma_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                                        float* __restrict__ out, int64_t m, int64_t kd, int64_t cols) {
  // float16 fragments exist from sm_70, bfloat16 ones from sm_80. The host never launches a
  // variant the GPU lacks (it picks the SIMT kernel); the trap only marks the impossible path.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  gemm_wmma_body<T>(a, b, out, m, kd, cols);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  if constexpr (is_half<T>()) {
    gemm_wmma_body<T>(a, b, out, m, kd, cols);
  } else {
    __trap();
  }
#else
  __trap();
#endif
}


// int8 x int8 -> int32 with dp4a: 64x64 outputs per 256 threads (4x4 each), K in steps of 32
// (8 packed int32 words). B's K runs down its columns, so its tile is transposed into words.
constexpr int kIk = 32;

__global__ void __launch_bounds__(256) gemm_int8_kernel(const int8_t* __restrict__ a, const int8_t* __restrict__ b,
                                                        float scale, float* __restrict__ out, int64_t m, int64_t kd,
                                                        int64_t cols) {
  __shared__ int aw[kTm][kIk / 4 + 1];
  __shared__ int bw[kTn][kIk / 4 + 1];
  const int64_t img = blockIdx.z;
  const int8_t* bimg = b + img * kd * cols;
  const int64_t row0 = (int64_t)blockIdx.y * kTm, col0 = (int64_t)blockIdx.x * kTn;
  const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
  int acc[4][4] = {};
  for (int64_t k0 = 0; k0 < kd; k0 += kIk) {
    for (int e = threadIdx.x; e < kTm * (kIk / 4); e += 256) {
      const int r = e / (kIk / 4), wq = e % (kIk / 4);
      unsigned int word = 0;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t gr = row0 + r, gk = k0 + 4 * wq + q;
        const int8_t v = (gr < m && gk < kd) ? a[gr * kd + gk] : (int8_t)0;
        word |= ((unsigned int)(uint8_t)v) << (8 * q);
      }
      aw[r][wq] = (int)word;
    }
    for (int e = threadIdx.x; e < kTn * (kIk / 4); e += 256) {
      const int cc = e % kTn, wq = e / kTn;  // consecutive threads read consecutive columns
      unsigned int word = 0;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t gk = k0 + 4 * wq + q, gc = col0 + cc;
        const int8_t v = (gk < kd && gc < cols) ? bimg[gk * cols + gc] : (int8_t)0;
        word |= ((unsigned int)(uint8_t)v) << (8 * q);
      }
      bw[cc][wq] = (int)word;
    }
    __syncthreads();
#pragma unroll
    for (int wq = 0; wq < kIk / 4; ++wq) {
      int av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = aw[tr + 16 * i][wq];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = bw[tc + 16 * j][wq];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __dp4a(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
  float* oimg = out + img * m * cols;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gr = row0 + tr + 16 * i, gc = col0 + tc + 16 * j;
      if (gr < m && gc < cols) oimg[gr * cols + gc] = (float)acc[i][j] * scale;
    }
}

// int8 x int8 -> int32 on tensor cores (IMMA, WMMA 16x16x16 signed char, sm_75+): the same
// 64x64 block of 4 warps as gemm_wmma_kernel. 8-bit fragments need 32-byte aligned pointers, so
// the operands are staged in 16x16 slabs: A row-major [k-slab][row][16], B column-major
// [k-slab][col-slab][col][16]; every fragment pointer is then a multiple of 256 bytes.
__device__ __forceinline__ void gemm_imma_body(const int8_t* __restrict__ a, const int8_t* __restrict__ b, float scale,
                                               float* __restrict__ out, int64_t m, int64_t kd, int64_t cols) {
  using namespace nvcuda;
  __shared__ __align__(32) signed char as[2][kTm][16];
  __shared__ __align__(32) signed char bs[2][kTn / 16][16][16];
  __shared__ __align__(32) int cs[4][32][32 + 4];
  const int64_t img = blockIdx.z;
  const int8_t* bimg = b + img * kd * cols;
  const int64_t row0 = (int64_t)blockIdx.y * kTm, col0 = (int64_t)blockIdx.x * kTn;
  const int warp = threadIdx.x / 32, wr = (warp / 2) * 32, wc = (warp % 2) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, int> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0);
  for (int64_t k0 = 0; k0 < kd; k0 += 32) {
    for (int e = threadIdx.x; e < kTm * 32; e += 128) {
      const int r = e / 32, kk = e % 32;
      const int64_t gr = row0 + r, gk = k0 + kk;
      as[kk / 16][r][kk % 16] = (gr < m && gk < kd) ? (signed char)a[gr * kd + gk] : (signed char)0;
    }
    for (int e = threadIdx.x; e < 32 * kTn; e += 128) {
      const int kk = e / kTn, cc = e % kTn;  // consecutive threads read consecutive columns
      const int64_t gk = k0 + kk, gc = col0 + cc;
      bs[kk / 16][cc / 16][cc % 16][kk % 16] = (gk < kd && gc < cols) ? (signed char)bimg[gk * cols + gc] : (signed char)0;
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &as[ks][wr + 16 * i][0], 16);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &bs[ks][(wc / 16) + j][0][0], 16);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&cs[warp][16 * i][16 * j], acc[i][j], 32 + 4, wmma::mem_row_major);
  __syncwarp();
  float* oimg = out + img * m * cols;
  const int lane = threadIdx.x % 32;
  for (int r = 0; r < 32; ++r) {
    const int64_t gr = row0 + wr + r, gc = col0 + wc + lane;
    if (gr < m && gc < cols) oimg[gr * cols + gc] = (float)cs[warp][r][lane] * scale;
  }
}

__global__ void __launch_bounds__(128) gemm_imma_kernel(const int8_t* __restrict__ a, const int8_t* __restrict__ b,
                                                        float scale, float* __restrict__ out, int64_t m, int64_t kd,
                                                        int64_t cols) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  gemm_imma_body(a, b, scale, out, m, kd, cols);
#else
  __trap();  // never launched below sm_75: the host picks the dp4a kernel there
#endif
}

// ------------------------------------------------------------------------------ quantizer (training)

template <typename T>
__global__ void quantize_kernel(const T* __restrict__ raw, T* __restrict__ out, int64_t numel, float alpha, float qn) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= numel) return;
  out[i] = from_f<T>(quant_code(to_f<T>(raw[i]), alpha, qn) / qn * alpha);
}

template <typename T>
__global__ void quant_backward_kernel(const T* __restrict__ raw, const float* __restrict__ g, float* __restrict__ g_in,
                                      float* __restrict__ galpha, int64_t numel, float alpha, float qn) {
  __shared__ float partial[32];
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  float term = 0.0f;
  if (i < numel) {
    const float u = to_f<T>(raw[i]) / alpha;
    const float gv = g[i];
    const bool outside = fabsf(u) > 1.0f;
    const float q = rintf(fminf(fmaxf(u, -1.0f), 1.0f) * qn) / qn;
    term = gv * (outside ? copysignf(u != 0.0f ? 1.0f : 0.0f, u) : q - u);
    g_in[i] = outside ? 0.0f : gv;
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) term += __shfl_down_sync(0xffffffffu, term, off);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = term;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = threadIdx.x < (blockDim.x + 31) / 32 ? partial[threadIdx.x] : 0.0f;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (threadIdx.x == 0) atomicAdd(galpha, s);
  }
}


// ------------------------------------------------------------------------------ dispatch helpers

inline unsigned int blocks_for(int64_t work, int threads) { return (unsigned int)((work + threads - 1) / threads); }

int device_major() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return 0;
  return major;
}

#define WCC_DISPATCH_LEVELS(levels, L, ...)     \
  switch (levels) {                             \
    case 1: { constexpr int L = 1; __VA_ARGS__; break; } \
    case 2: { constexpr int L = 2; __VA_ARGS__; break; } \
    case 3: { constexpr int L = 3; __VA_ARGS__; break; } \
    default: return (int)cudaErrorInvalidValue;  \
  }

#define WCC_DISPATCH_DTYPE(dtype, T, ...)                         \
  switch (dtype) {                                                \
    case WCC_F32: { using T = float; __VA_ARGS__; break; }        \
    case WCC_F16: { using T = __half; __VA_ARGS__; break; }       \
    case WCC_BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; } \
    default: return (int)cudaErrorInvalidValue;                   \
  }

}  // namespace

#ifdef WCC_HOST_SELFTEST
// Host self-test: the tile helpers above (the kernels' own code) run on the CPU over a float32
// image stack, so a machine without a GPU can check the Mallat mapping, the transform, its
// inverse and the quantizer against wcc.haar / wcc.quant. Not part of the extension.
extern "C" int wcc_host_selftest(const float* x, int64_t c, int h, int w, int levels, float alpha, float qlevels,
                                 float* coeffs, float* score, float* recon, float* quant) {
  const Geo g = make_geo(h, w, levels);
  const int m = 1 << levels;
  for (int64_t i = 0; i < g.p; ++i) score[i] = 0.0f;
  float t[64];
  for (int64_t ch = 0; ch < c; ++ch) {
    for (int64_t id = 0; id < (int64_t)g.ht * g.wt; ++id) {
      const TileWork tw = tile_work(id, g, 1);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < m; ++j) {
          const int r = tw.ty * m + i, col = tw.tx * m + j;
          t[i * m + j] = (r < h && col < w) ? x[(ch * h + r) * w + col] : 0.0f;
        }
      switch (levels) {
        case 1: fwd_tile<1>(t); break;
        case 2: fwd_tile<2>(t); break;
        case 3: fwd_tile<3>(t); break;
        default: return 1;
      }
      for (int u = 0; u < m; ++u)
        for (int v = 0; v < m; ++v) {
          const int64_t pos = mallat_pos(g, tw.ty, tw.tx, u, v);
          const float val = t[u * m + v];
          coeffs[ch * g.p + pos] = val;
          score[pos] += val * val;
          quant[ch * g.p + pos] = quant_code(val, alpha, qlevels) / qlevels * alpha;
        }
      switch (levels) {
        case 1: inv_tile<1>(t); break;
        case 2: inv_tile<2>(t); break;
        default: inv_tile<3>(t); break;
      }
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < m; ++j) {
          const int r = tw.ty * m + i, col = tw.tx * m + j;
          if (r < h && col < w) recon[(ch * h + r) * w + col] = t[i * m + j];
        }
    }
  }
  return 0;
}
#endif

extern "C" {

int wcc_max_levels(void) { return kMaxLevels; }

int64_t wcc_energy_chunks(int64_t n, int64_t c, int h, int w, int levels) {
  // Enough threads to fill a large GPU (~64K), but at least 8 channels per thread.
  const Geo g = make_geo(h, w, levels);
  const int64_t tiles = n * g.ht * g.wt;
  if (tiles == 0 || c == 0) return 1;
  int64_t chunks = (65536 + tiles - 1) / tiles;
  chunks = chunks < 1 ? 1 : chunks;
  const int64_t max_chunks = (c + 7) / 8;
  return chunks > max_chunks ? max_chunks : chunks;
}

int wcc_haar_energy(const void* x, int dtype, float* score, float* partial, int64_t chunks, int64_t n, int64_t c,
                    int h, int w, int levels, void* stream) {
  const Geo g = make_geo(h, w, levels);
  if (chunks < 1 || (chunks > 1 && partial == nullptr)) return (int)cudaErrorInvalidValue;
  const int64_t work = n * chunks * g.ht * g.wt;
  if (work == 0) return 0;
  const int64_t cpt = (c + chunks - 1) / chunks;
  float* target = chunks == 1 ? score : partial;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  WCC_DISPATCH_DTYPE(dtype, T, WCC_DISPATCH_LEVELS(levels, L,
      haar_energy_kernel<T, L><<<blocks_for(work, 128), 128, 0, s>>>(static_cast<const T*>(x), target, n, c, chunks,
                                                                    cpt, g)));
  if (chunks > 1) {
    const int64_t numel = n * g.p;
    reduce_partials_kernel<<<blocks_for(numel, 256), 256, 0, s>>>(partial, score, chunks, numel);
  }
  return (int)cudaGetLastError();
}

int wcc_topk_select(const float* score, int64_t n, int64_t p, int64_t k, int32_t* kept, int32_t* slot_map,
                    void* stream) {
  if (n == 0) return 0;
  if (k < 1 || k > p) return (int)cudaErrorInvalidValue;
  topk_kernel<<<(unsigned int)n, kSelectThreads, 0, static_cast<cudaStream_t>(stream)>>>(score, p, k, kept, slot_map);
  return (int)cudaGetLastError();
}

int wcc_haar_gather(const void* x, int dtype, const int32_t* slot_map, void* out, int mode, float alpha,
                    float qlevels, int64_t n, int64_t c, int h, int w, int levels, int64_t k, void* stream) {
  const Geo g = make_geo(h, w, levels);
  const int64_t chunks = (c + kChannelsPerThread - 1) / kChannelsPerThread;
  const int64_t work = n * chunks * g.ht * g.wt;
  if (work == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  WCC_DISPATCH_DTYPE(dtype, T, WCC_DISPATCH_LEVELS(levels, L,
      haar_gather_kernel<T, L><<<blocks_for(work, 128), 128, 0, s>>>(static_cast<const T*>(x), slot_map, out, mode,
                                                                    alpha, qlevels, n, c, chunks, g, k)));
  return (int)cudaGetLastError();
}

int wcc_gemm_kept(const void* a, const void* b, int dtype, float* out, int64_t n, int64_t m, int64_t kdim,
                  int64_t cols, void* stream) {
  if (n == 0 || m == 0 || cols == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const dim3 grid((unsigned int)((cols + kTn - 1) / kTn), (unsigned int)((m + kTm - 1) / kTm), (unsigned int)n);
  const int major = device_major();
  // float16 WMMA needs sm_70+, bfloat16 sm_80+; float32 stays on IEEE float32 FMAs (no TF32), as
  // the reference's float32 matmul.
  if (dtype == WCC_F16 && major >= 7) {
    gemm_wmma_kernel<__half><<<grid, 128, 0, s>>>(static_cast<const __half*>(a), static_cast<const __half*>(b), out, m,
                                                 kdim, cols);
  } else if (dtype == WCC_BF16 && major >= 8) {
    gemm_wmma_kernel<__nv_bfloat16><<<grid, 128, 0, s>>>(static_cast<const __nv_bfloat16*>(a),
                                                        static_cast<const __nv_bfloat16*>(b), out, m, kdim, cols);
  } else {
    WCC_DISPATCH_DTYPE(dtype, T,
        gemm_simt_kernel<T><<<grid, 256, 0, s>>>(static_cast<const T*>(a), static_cast<const T*>(b), out, m, kdim, cols));
  }
  return (int)cudaGetLastError();
}

int wcc_gemm_kept_int8(const int8_t* a, const int8_t* b, float scale, float* out, int64_t n, int64_t m,
                       int64_t kdim, int64_t cols, void* stream) {
  if (n == 0 || m == 0 || cols == 0) return 0;
  const dim3 grid((unsigned int)((cols + kTn - 1) / kTn), (unsigned int)((m + kTm - 1) / kTm), (unsigned int)n);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  int dev = 0, major = 0, minor = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (major * 10 + minor >= 75) {  // int8 tensor cores
    gemm_imma_kernel<<<grid, 128, 0, s>>>(a, b, scale, out, m, kdim, cols);
  } else {
    gemm_int8_kernel<<<grid, 256, 0, s>>>(a, b, scale, out, m, kdim, cols);
  }
  return (int)cudaGetLastError();
}

int wcc_scatter_ihaar(const float* vals, const int32_t* slot_map, const void* bias, void* y, int dtype, int64_t n,
                      int64_t c, int h, int w, int levels, int64_t k, void* stream) {
  const Geo g = make_geo(h, w, levels);
  const int64_t chunks = (c + kChannelsPerThread - 1) / kChannelsPerThread;
  const int64_t work = n * chunks * g.ht * g.wt;
  if (work == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  WCC_DISPATCH_DTYPE(dtype, T, WCC_DISPATCH_LEVELS(levels, L,
      scatter_ihaar_kernel<T, L><<<blocks_for(work, 128), 128, 0, s>>>(vals, slot_map, static_cast<const T*>(bias),
                                                                      static_cast<T*>(y), n, c, chunks, g, k)));
  return (int)cudaGetLastError();
}

int wcc_quantize(const void* raw, void* out, int dtype, int64_t numel, float alpha, float qlevels, void* stream) {
  if (numel == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  WCC_DISPATCH_DTYPE(dtype, T,
      quantize_kernel<T><<<blocks_for(numel, 256), 256, 0, s>>>(static_cast<const T*>(raw), static_cast<T*>(out), numel,
                                                               alpha, qlevels));
  return (int)cudaGetLastError();
}

int wcc_quant_backward(const void* raw, int dtype, const float* g, float* g_in, float* galpha, int64_t numel,
                       float alpha, float qlevels, void* stream) {
  if (numel == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  WCC_DISPATCH_DTYPE(dtype, T,
      quant_backward_kernel<T><<<blocks_for(numel, 256), 256, 0, s>>>(static_cast<const T*>(raw), g, g_in, galpha,
                                                                     numel, alpha, qlevels));
  return (int)cudaGetLastError();
}

}  // extern "C"

// Fast CPU kernels of the WCC op (see wcc/backends/cpu.py for the Python side and
// wcc/backends/reference.py for the specification they reproduce).
//
//   y = crop( IWT( scatter_k( W @ Q_a( gather_k( WT( pad(x) ) ) ) ) ) ) + bias
//
// Work is organised in *bands*: B = 2^J input rows of one image. A J-level Haar transform of a
// band depends on that band only, and it produces exactly B * W' coefficients of the Mallat
// pyramid (at level l: B/2^l rows of each detail band, and one row of the final LL band). So:
//
//   pass 1 (per band, all channels): transform, accumulate the channel energy of every position,
//           and store the coefficient -- as its integer quantization code when the activations
//           are quantized (int8 for <= 8 bits: a quarter of the float traffic; the code fully
//           determines the fake-quant value, so nothing is lost), else as the float value;
//   select: per image, the k positions with the largest energy (a selection, not a sort);
//   pass 2 (per band): gather the kept columns of the band (C_in x k_b, cache-resident),
//           GEMM with the weight (on int8 codes with int32 sums when both the activations and
//           the weight come as codes), then for each output channel scatter into a zeroed band
//           and inverse-transform it straight into the cropped output rows (+ bias).
//
// Input is read once, the code buffer written and read once, the output written once.
//
// Coefficient positions are numbered in *band order*: band b's coefficients occupy
// [b * Pb, (b + 1) * Pb) with Pb = B * W', and inside a band the layout is
//   level 1: H rows, V rows, D rows; level 2: H, V, D; ...; level J: H, V, D; then the LL row,
// each band section row-major. `keep_indices` maps band order to the Mallat layout.
//
// Every elementwise formula follows the reference's operation order so that coefficients,
// quantized values and reconstructions are bit-identical to it; only the GEMM's and the
// energy sum's accumulation order differ. (Built with -ffp-contract=off: a fused multiply-add
// would round differently.)
//
// Also here: the unsigned activation fake-quant of QuantConv2d as one fused pass (inference).

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <c10/core/Allocator.h>
#include <torch/library.h>

#if defined(__linux__)
#include <sys/mman.h>  // madvise: transparent huge pages are a Linux feature
#define WCC_HUGE_PAGES 1
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif


namespace {

// ----------------------------------------------------------------------------------------------
// Geometry of the band decomposition.

struct Geo {
  int64_t N, C, H, W, J, B, Hp, Wp, nb, Pb;
  std::vector<int64_t> off;  // off[3 * (l - 1) + t]: section of level l (1..J), band t (H, V, D)
  int64_t ll_off;            // the final LL row

  Geo(int64_t n, int64_t c, int64_t h, int64_t w, int64_t levels)
      : N(n), C(c), H(h), W(w), J(levels), B(int64_t(1) << levels) {
    Hp = (H + B - 1) / B * B;
    Wp = (W + B - 1) / B * B;
    nb = Hp / B;
    Pb = B * Wp;
    int64_t pos = 0;
    for (int64_t l = 1; l <= J; ++l) {
      const int64_t sz = (B >> l) * (Wp >> l);
      for (int t = 0; t < 3; ++t) {
        off.push_back(pos);
        pos += sz;
      }
    }
    ll_off = pos;
    TORCH_INTERNAL_ASSERT(pos + (Wp >> J) == Pb);
  }
  int64_t sec(int64_t l, int t) const { return off[3 * (l - 1) + t]; }
  int64_t P() const { return nb * Pb; }
  // Scratch (elements) that analysis/synthesis need: two padded rows, one zero row, and two
  // ping-pong LL buffers (level-1 LL is B/2 x W'/2, level-2 LL a quarter of that).
  int64_t work_size() const { return 3 * Wp + Pb / 4 + Pb / 16 + 2 * Wp; }
};

// ----------------------------------------------------------------------------------------------
// SIMD through GCC/Clang vector extensions, one vector type per scalar type, as wide as the
// host's registers: 64 bytes with AVX-512, else 32 bytes (AVX2). Wider-than-register vectors
// are not split well: GCC lowers their shuffles and selects element by element through the
// stack (measured on an AVX2 machine: the transform ran at a seventh of its speed). Only IEEE
// add, sub, mul, div and exact shuffles are used, so results equal the scalar formulas bit for bit.

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define WCC_SHUFFLE(V, I, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define WCC_SHUFFLE(V, I, a, b, ...) __builtin_shuffle(a, b, I{__VA_ARGS__})
#endif

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;  // SSE, NEON
#endif

template <typename T, int Bytes = kVecBytes>
struct Vec {
  static constexpr int L = Bytes / int(sizeof(T));
  typedef T V __attribute__((vector_size(Bytes)));
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> IT;
  typedef IT I __attribute__((vector_size(Bytes)));
  // Adding and subtracting 1.5 * 2^(mantissa bits) rounds |x| < 2^(mantissa bits - 1) to an
  // integer, ties to even (= std::nearbyint / torch.round in the default rounding mode).
  static constexpr T kRound = sizeof(T) == 4 ? T(12582912.0) : T(6755399441055744.0);
  // Lanes of the concatenation (a, b): even ones, odd ones; interleaving a's and b's low halves,
  // then their high halves.
  static V even(V a, V b) { return even_(a, b, std::make_index_sequence<L>{}); }
  static V odd(V a, V b) { return odd_(a, b, std::make_index_sequence<L>{}); }
  static V zip_lo(V a, V b) { return zip_(a, b, std::make_index_sequence<L>{}, std::integral_constant<int, 0>{}); }
  static V zip_hi(V a, V b) { return zip_(a, b, std::make_index_sequence<L>{}, std::integral_constant<int, L / 2>{}); }

 private:
  template <size_t... i>
  static V even_(V a, V b, std::index_sequence<i...>) { return WCC_SHUFFLE(V, I, a, b, int(2 * i)...); }
  template <size_t... i>
  static V odd_(V a, V b, std::index_sequence<i...>) { return WCC_SHUFFLE(V, I, a, b, int(2 * i + 1)...); }
  template <size_t... i, int h>
  static V zip_(V a, V b, std::index_sequence<i...>, std::integral_constant<int, h>) {
    return WCC_SHUFFLE(V, I, a, b, int(h + i / 2 + (i % 2) * L)...);
  }
};

template <typename T>
inline typename Vec<T>::V vload(const T* p) {
  typename Vec<T>::V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void vstore(T* p, typename Vec<T>::V v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
inline typename Vec<T>::V vsplat(T x) {
  return typename Vec<T>::V{} + x;
}

// One analysis level on a row pair (reference order: ((a +- b) +- c) +- d, then * 0.5).
template <typename T>
inline void analysis_row(const T* __restrict top, const T* __restrict bot, int64_t cols,
                         T* __restrict ll, T* __restrict h, T* __restrict v, T* __restrict d,
                         int64_t ahead = 0) {
  using W = Vec<T>;
  constexpr int L = W::L;
  const T half = T(0.5);
  const typename W::V vh = vsplat(half);
  int64_t j = 0;
  for (; j + L <= cols; j += L) {
    if (ahead != 0) {  // one cache line of each input row per 2L columns
      __builtin_prefetch(top + 2 * j + ahead, 0, 3);
      __builtin_prefetch(bot + 2 * j + ahead, 0, 3);
      if constexpr (2 * L * sizeof(T) > 64) {
        __builtin_prefetch(top + 2 * j + ahead + 64 / sizeof(T), 0, 3);
        __builtin_prefetch(bot + 2 * j + ahead + 64 / sizeof(T), 0, 3);
      }
    }
    const typename W::V t0 = vload(top + 2 * j), t1 = vload(top + 2 * j + L);
    const typename W::V b0 = vload(bot + 2 * j), b1 = vload(bot + 2 * j + L);
    const typename W::V a = W::even(t0, t1), b = W::odd(t0, t1), c = W::even(b0, b1), e = W::odd(b0, b1);
    vstore(ll + j, (((a + b) + c) + e) * vh);
    vstore(h + j, (((a - b) + c) - e) * vh);
    vstore(v + j, (((a + b) - c) - e) * vh);
    vstore(d + j, (((a - b) - c) + e) * vh);
  }
  for (; j < cols; ++j) {
    const T a = top[2 * j], b = top[2 * j + 1], c = bot[2 * j], e = bot[2 * j + 1];
    ll[j] = (((a + b) + c) + e) * half;
    h[j] = (((a - b) + c) - e) * half;
    v[j] = (((a + b) - c) - e) * half;
    d[j] = (((a - b) - c) + e) * half;
  }
}

// Stores a vector to memory that will not be read again soon (a layer's output, larger than the
// caches), bypassing the caches where the ISA has streaming stores: a plain store first reads
// the line it writes (read for ownership), twice the memory traffic. `p` is vector-aligned.
// Callers finish with stream_fence() before other threads may read the data.
template <typename T>
inline void vstream(T* p, typename Vec<T>::V v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(v) == 64 && std::is_same_v<T, float>) return _mm512_stream_ps(p, reinterpret_cast<__m512>(v));
  if constexpr (sizeof(v) == 64 && std::is_same_v<T, double>) return _mm512_stream_pd(p, reinterpret_cast<__m512d>(v));
#elif defined(__AVX__)
  if constexpr (sizeof(v) == 32 && std::is_same_v<T, float>) return _mm256_stream_ps(p, reinterpret_cast<__m256>(v));
  if constexpr (sizeof(v) == 32 && std::is_same_v<T, double>) return _mm256_stream_pd(p, reinterpret_cast<__m256d>(v));
#endif
  vstore(p, v);
}

inline void stream_fence() {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

// One synthesis level (the transpose; reference order as in wcc/haar.py), plus `bias` after the
// rounding when kBias (the reference adds the bias to the cropped reconstruction). kStream:
// `top` and `bot` are vector-aligned and written with streaming stores (see vstream).
template <typename T, bool kBias = false, bool kStream = false>
inline void synthesis_row(const T* __restrict ll, const T* __restrict h, const T* __restrict v,
                          const T* __restrict d, int64_t cols, T* __restrict top, T* __restrict bot,
                          T bias = T(0)) {
  using W = Vec<T>;
  using V = typename W::V;
  constexpr int L = W::L;
  const T half = T(0.5);
  const V vh = vsplat(half), vb = vsplat(bias);
  int64_t j = 0;
  for (; j + L <= cols; j += L) {
    const V l = vload(ll + j), hh = vload(h + j), vv = vload(v + j), dd = vload(d + j);
    V a = (((l + hh) + vv) + dd) * vh, b = (((l - hh) + vv) - dd) * vh;
    V c = (((l + hh) - vv) - dd) * vh, e = (((l - hh) - vv) + dd) * vh;
    if constexpr (kBias) {
      a = a + vb;
      b = b + vb;
      c = c + vb;
      e = e + vb;
    }
    if constexpr (kStream) {
      vstream(top + 2 * j, W::zip_lo(a, b));
      vstream(top + 2 * j + L, W::zip_hi(a, b));
      vstream(bot + 2 * j, W::zip_lo(c, e));
      vstream(bot + 2 * j + L, W::zip_hi(c, e));
    } else {
      vstore(top + 2 * j, W::zip_lo(a, b));
      vstore(top + 2 * j + L, W::zip_hi(a, b));
      vstore(bot + 2 * j, W::zip_lo(c, e));
      vstore(bot + 2 * j + L, W::zip_hi(c, e));
    }
  }
  for (; j < cols; ++j) {
    const T l = ll[j], hh = h[j], vv = v[j], dd = d[j];
    T a = (((l + hh) + vv) + dd) * half, b = (((l - hh) + vv) - dd) * half;
    T c = (((l + hh) - vv) - dd) * half, e = (((l - hh) - vv) + dd) * half;
    if constexpr (kBias) {
      a = a + bias;
      b = b + bias;
      c = c + bias;
      e = e + bias;
    }
    top[2 * j] = a;
    top[2 * j + 1] = b;
    bot[2 * j] = c;
    bot[2 * j + 1] = e;
  }
}

// J-level forward transform of band `b` of one channel plane (H x W, row-major, unpadded)
// into `coef` (Pb values, band order). `work` has g.work_size() elements. `plane` holds the
// rows from `row0` on (0: the whole plane; b * B: a copy of the band's rows). `ahead`: prefetch
// distance in rows for input read straight from memory (0: none).
// Level 1 reads the input rows in place; the zero padding (rows from H, columns from W) is
// never materialised: column pairs past the image give exact zeros, and the pair that
// straddles an odd width is computed with an explicit zero, as the reference does.
template <typename T>
void band_analysis(const T* plane, const Geo& g, int64_t b, T* coef, T* work, int64_t row0 = 0,
                   int64_t ahead = 4) {
  T* zero = work + 2 * g.Wp;
  T* ping = work + 3 * g.Wp;  // level-1 LL (B/2 x Wp/2)
  T* pong = ping + g.Pb / 4;  // level-2 LL (B/4 x Wp/4)
  const int64_t full = g.W / 2;        // column pairs inside the image
  const bool odd = (g.W % 2) != 0;     // one more pair, half inside
  const T* in = nullptr;               // LL of the previous level (rows x 2*cols), row-major
  for (int64_t l = 1; l <= g.J; ++l) {
    const int64_t rows = g.B >> l, cols = g.Wp >> l;
    T* ll_out = (l == g.J) ? coef + g.ll_off : ((l % 2) ? ping : pong);
    T* hs = coef + g.sec(l, 0);
    T* vs = coef + g.sec(l, 1);
    T* ds = coef + g.sec(l, 2);
    for (int64_t i = 0; i < rows; ++i) {
      T* lo = ll_out + i * cols;
      T* ho = hs + i * cols;
      T* vo = vs + i * cols;
      T* dout = ds + i * cols;
      if (l > 1) {
        const T* top = in + (2 * i) * (2 * cols);
        analysis_row(top, top + 2 * cols, cols, lo, ho, vo, dout);
        continue;
      }
      const int64_t r = b * g.B + 2 * i;
      if (r >= g.H) {  // both rows are padding
        std::fill(zero, zero + g.Wp, T(0));
        analysis_row(zero, zero, cols, lo, ho, vo, dout);
        continue;
      }
      const T* top = plane + (r - row0) * g.W;
      const T* bot = r + 1 < g.H ? top + g.W : nullptr;
      if (bot == nullptr) {
        std::fill(zero, zero + g.Wp, T(0));
        bot = zero;
      }
      // Input rows straight from memory: prefetch the rows two pairs below (in the next band
      // for the band's last pairs: pass1 walks a run of bands; a prefetch past the tensor is
      // harmless). Measured: the stall on these loads took half of pass 1.
      analysis_row(top, bot, full, lo, ho, vo, dout, ahead * g.W);
      int64_t j = full;
      if (odd) {
        const T t2[2] = {top[g.W - 1], T(0)}, b2[2] = {bot[g.W - 1], T(0)};
        analysis_row(t2, b2, 1, lo + j, ho + j, vo + j, dout + j);
        ++j;
      }
      for (T* out : {lo, ho, vo, dout}) std::fill(out + j, out + cols, T(0));
    }
    in = ll_out;
  }
}

// Inverse of band_analysis, written into the cropped output plane (H x W), plus `bias`: the
// last level writes the output rows in place and skips what the crop drops. `plane` holds the
// rows from `row0` on (as in band_analysis); `stream`: the rows go to memory with streaming
// stores (an output larger than the caches), not into a buffer that is read next.
template <typename T, bool kBias>
void band_synthesis(const T* coef, const Geo& g, int64_t b, T* plane, T bias, T* work, int64_t row0 = 0,
                    bool stream = true) {
  T* spare = work + g.Wp;     // sink for a bottom row that falls below H
  T* ping = work + 3 * g.Wp;  // reconstructed LL of level 1 (B/2 x Wp/2)
  T* pong = ping + g.Pb / 4;  // reconstructed LL of level 2
  const T* ll = coef + g.ll_off;
  for (int64_t l = g.J; l > 1; --l) {
    const int64_t rows = g.B >> l, cols = g.Wp >> l;
    const T* hs = coef + g.sec(l, 0);
    const T* vs = coef + g.sec(l, 1);
    const T* ds = coef + g.sec(l, 2);
    T* out = ((l - 1) % 2) ? ping : pong;
    for (int64_t i = 0; i < rows; ++i) {
      T* top = out + (2 * i) * (2 * cols);
      synthesis_row(ll + i * cols, hs + i * cols, vs + i * cols, ds + i * cols, cols, top, top + 2 * cols);
    }
    ll = out;
  }
  const int64_t rows = g.B >> 1, cols = g.Wp >> 1;
  const int64_t full = g.W / 2;
  const T* hs = coef + g.sec(1, 0);
  const T* vs = coef + g.sec(1, 1);
  const T* ds = coef + g.sec(1, 2);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t r0 = b * g.B + 2 * i;
    if (r0 >= g.H) break;  // cropped away (rows below H are padding)
    T* top = plane + (r0 - row0) * g.W;
    T* bot = r0 + 1 < g.H ? top + g.W : spare;
    const int64_t o = i * cols;
    constexpr uintptr_t kAlign = uintptr_t(kVecBytes) - 1;
    if (stream && ((reinterpret_cast<uintptr_t>(top) | reinterpret_cast<uintptr_t>(bot)) & kAlign) == 0) {
      synthesis_row<T, kBias, true>(ll + o, hs + o, vs + o, ds + o, full, top, bot, bias);
    } else {
      synthesis_row<T, kBias>(ll + o, hs + o, vs + o, ds + o, full, top, bot, bias);
    }
    if (g.W % 2) {  // the straddling pair: keep its left column
      T t2[2], b2[2];
      synthesis_row<T, kBias>(ll + o + full, hs + o + full, vs + o + full, ds + o + full, 1, t2, b2, bias);
      top[g.W - 1] = t2[0];
      bot[g.W - 1] = b2[0];
    }
  }
  stream_fence();  // the streamed rows are visible before the caller's thread hands them on
}

// ----------------------------------------------------------------------------------------------
// Signed activation quantizer (DESIGN 3.3), split into an integer code and its value:
//   code = round(clamp(x / alpha, -1, 1) * n),  value = (code / n) * alpha   (n = 2^(bits-1) - 1)
// in the reference's operation order. A NaN code is stored as the integer type's minimum
// (never a valid code) and decodes back to NaN.

struct Quant {
  bool on;
  double alpha, n;
};

template <typename T>
inline T quant_code(T v, T alpha, T n) {
  T u = v / alpha;
  u = std::max(u, T(-1));  // std::max/min keep a NaN first argument, like torch.clamp
  u = std::min(u, T(1));
  return std::nearbyint(u * n);  // round half to even, like torch.round
}

template <typename T>
inline T quant_value(T v, T alpha, T n) {
  return (quant_code(v, alpha, n) / n) * alpha;
}

// Storage of pass-1 coefficients: an integer code (S integral) or the raw value (S == T).
template <typename T, typename S>
inline S encode(T v, T alpha, T n) {
  if constexpr (std::is_same_v<S, T>) {
    return v;
  } else {
    const T r = quant_code(v, alpha, n);
    return r != r ? std::numeric_limits<S>::min() : static_cast<S>(r);
  }
}

template <typename T, typename S>
inline T decode(S s, T alpha, T n, bool quant) {
  if constexpr (std::is_same_v<S, T>) {
    return quant ? quant_value(s, alpha, n) : s;
  } else {
    if (s == std::numeric_limits<S>::min()) return std::numeric_limits<T>::quiet_NaN();
    return (T(s) / n) * alpha;
  }
}

// Adds the squared coefficients cf[0..count) to the energies sc and stores them in st
// (quantization codes or raw values; st may be null for energies only).
template <typename T, typename S>
inline void accumulate_and_store(const T* __restrict cf, int64_t count, T alpha, T n, T* __restrict sc,
                                 S* __restrict st) {
  using W = Vec<T>;
  using V = typename W::V;
  constexpr int L = W::L;
  int64_t p = 0;
  if (st == nullptr) {
    for (; p + L <= count; p += L) {
      const V v = vload(cf + p);
      vstore(sc + p, vload(sc + p) + v * v);
    }
    for (; p < count; ++p) sc[p] += cf[p] * cf[p];
    return;
  }
  if constexpr (std::is_same_v<S, T>) {
    for (; p + L <= count; p += L) {
      const V v = vload(cf + p);
      vstore(sc + p, vload(sc + p) + v * v);
      vstore(st + p, v);
    }
  } else {
    typedef S SV __attribute__((vector_size(L * sizeof(S))));
    const V va = vsplat(alpha), vn = vsplat(n), one = vsplat(T(1)), mone = vsplat(T(-1));
    const V rnd = vsplat(W::kRound), sentinel = vsplat(T(std::numeric_limits<S>::min()));
    for (; p + L <= count; p += L) {
      const V v = vload(cf + p);
      vstore(sc + p, vload(sc + p) + v * v);
      V u = v / va;  // the same ops as quant_code
      u = u < mone ? mone : u;
      u = one < u ? one : u;
      V r = (u * vn + rnd) - rnd;  // needs -ffp-contract=off: u * n must round before the add
      r = r != r ? sentinel : r;
      // Through 32-bit lanes: a direct float -> int8 conversion is scalarized by GCC.
      typedef int32_t IV __attribute__((vector_size(L * sizeof(int32_t))));
      const IV wide = __builtin_convertvector(r, IV);
#if defined(__AVX2__) && !defined(__AVX512F__)
      if constexpr (L == 8 && sizeof(S) <= 2) {
        // GCC scalarizes the narrowing below without AVX-512 (8 extracts and shifts per vector);
        // saturating packs do it in two instructions and are exact here: every lane already
        // fits S (a code, or S's minimum as the NaN sentinel).
        __m256i w;
        std::memcpy(&w, &wide, sizeof(w));
        const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        if constexpr (sizeof(S) == 2) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(st + p), w16);
        } else {
          _mm_storel_epi64(reinterpret_cast<__m128i*>(st + p), _mm_packs_epi16(w16, w16));
        }
        continue;
      }
#endif
      const SV code = __builtin_convertvector(wide, SV);
      std::memcpy(st + p, &code, sizeof(code));
    }
  }
  for (; p < count; ++p) {
    sc[p] += cf[p] * cf[p];
    st[p] = encode<T, S>(cf[p], alpha, n);
  }
}

// Per-thread scratch that survives across calls: fresh multi-megabyte buffers would cost a page
// fault per 4 KiB on every call. Slot tells apart buffers that are alive at the same time.
// Very large requests are not cached (they are freed when the Scratch goes out of scope).
template <typename E, int Slot>
class Scratch {
 public:
  explicit Scratch(int64_t n) {
    static constexpr int64_t kCacheBytes = int64_t(16) << 20;
    thread_local std::vector<E> cache;
    const size_t want = size_t(std::max<int64_t>(n, 1));
    std::vector<E>& buf = int64_t(want * sizeof(E)) <= kCacheBytes ? cache : own_;
    if (buf.size() < want) buf.resize(want);
    ptr_ = buf.data();
  }
  E* data() const { return ptr_; }
  E& operator[](int64_t i) const { return ptr_[i]; }

 private:
  std::vector<E> own_;
  E* ptr_;
};

// Process-wide byte buffer for the pass-1 store and the energies, reused across calls (tens
// of MiB: a fresh allocation would cost a page fault per 4 KiB each call). A call that finds it
// in use by another thread, or needs more than kMaxCachedBytes, allocates its own.
class Workspace {
 public:
  explicit Workspace(int64_t bytes) {
    static constexpr int64_t kMaxCachedBytes = int64_t(256) << 20;
    static std::mutex mutex;
    // Never destroyed: a static tensor would be freed after libtorch at process exit.
    static at::Tensor* const cached = new at::Tensor();
    const auto opts = at::TensorOptions().dtype(at::kByte);
    if (bytes <= kMaxCachedBytes) lock_ = std::unique_lock<std::mutex>(mutex, std::try_to_lock);
    if (lock_.owns_lock()) {
      if (!cached->defined() || cached->numel() < bytes) {
        *cached = at::Tensor();  // free the old one first
        *cached = at::empty({bytes}, opts);
      }
      buffer_ = *cached;
    } else {
      buffer_ = at::empty({bytes}, opts);
    }
  }
  uint8_t* data() const { return buffer_.data_ptr<uint8_t>(); }

 private:
  std::unique_lock<std::mutex> lock_;
  at::Tensor buffer_;
};

inline int64_t round_up64(int64_t bytes) { return (bytes + 63) / 64 * 64; }

// Allocator for the (large) output: 2 MiB-aligned and advised as transparent huge pages. A fresh
// multi-megabyte tensor from torch's CPU allocator is new memory from the OS on every call, and
// first touching it costs one page fault per 4 KiB -- for a 32 MiB output on a VM, as much CPU
// time as the whole rest of the op. With huge pages that is one fault per 2 MiB. (torch can do
// the same for every tensor with THP_MEM_ALLOC_ENABLE=1.) Where huge pages are unavailable the
// advice is ignored and the memory behaves as any other.
//
// Freed blocks are kept for reuse (up to kMaxCachedBytes in all, the most recently freed first):
// a fresh huge page still costs the kernel zeroing 2 MiB on first touch, about a tenth of the op
// for a 32 MiB output, and a layer's output has the same size on every call. The output's
// contents are never read before the kernels overwrite every element.
#ifdef WCC_HUGE_PAGES
class HugePageAllocator final : public c10::Allocator {
 public:
  static constexpr size_t kHugePage = size_t(2) << 20;
  static constexpr size_t kMaxCachedBytes = size_t(256) << 20;
  c10::DataPtr allocate(size_t n) override {
    const size_t bytes = std::max<size_t>((n + kHugePage - 1) / kHugePage * kHugePage, kHugePage);
    Block* block = take(bytes);
    if (block == nullptr) {
      void* p = nullptr;
      TORCH_CHECK(posix_memalign(&p, kHugePage, bytes) == 0, "wcc_cpu: out of memory allocating ", n, " bytes");
#ifdef MADV_HUGEPAGE
      madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
      block = new Block{p, bytes};
    }
    return {block->ptr, block, &release, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };
  // Never destroyed: a tensor may be freed during the process's exit, after static destructors.
  static std::mutex& mutex() {
    static auto* m = new std::mutex;
    return *m;
  }
  static std::vector<Block*>& cache() {  // most recently freed last
    static auto* blocks = new std::vector<Block*>;
    return *blocks;
  }
  static size_t& cached_bytes() {
    static auto* total = new size_t(0);
    return *total;
  }
  // A cached block of exactly `bytes` (same layer, next call), else null.
  static Block* take(size_t bytes) {
    std::lock_guard<std::mutex> guard(mutex());
    auto& blocks = cache();
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
      if ((*it)->bytes == bytes) {
        Block* b = *it;
        blocks.erase(std::next(it).base());
        cached_bytes() -= b->bytes;
        return b;
      }
    }
    return nullptr;
  }
  static void release(void* ctx) {
    Block* block = static_cast<Block*>(ctx);
    std::vector<Block*> evicted;
    {
      std::lock_guard<std::mutex> guard(mutex());
      auto& blocks = cache();
      blocks.push_back(block);
      cached_bytes() += block->bytes;
      while (cached_bytes() > kMaxCachedBytes && !blocks.empty()) {  // the oldest go back to the OS
        evicted.push_back(blocks.front());
        cached_bytes() -= blocks.front()->bytes;
        blocks.erase(blocks.begin());
      }
    }
    for (Block* b : evicted) {
      std::free(b->ptr);
      delete b;
    }
  }
};
#endif

// WCC_CPU_HUGE_PAGES=0 turns the huge-page outputs off (read once per process).
bool huge_pages_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("WCC_CPU_HUGE_PAGES");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

// An uninitialised contiguous CPU tensor; from huge pages when it is large.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  static constexpr int64_t kMinHugeBytes = int64_t(4) << 20;
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  if (!huge_pages_enabled() ||
      numel * int64_t(c10::elementSize(c10::typeMetaToScalarType(opts.dtype()))) < kMinHugeBytes) {
    return at::empty(sizes, opts);
  }
#ifdef WCC_HUGE_PAGES
  static HugePageAllocator allocator;
  return at::detail::empty_generic(sizes, &allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(opts.dtype()), std::nullopt);
#else
  return at::empty(sizes, opts);
#endif
}

// Phase profile of the forward op (off unless WCC_CPU_PROFILE=1 is set when the kernels load):
// nanoseconds summed per phase, for `python -m bench.timing.cpu_profile`. Phases inside pass 2
// run on every thread at once, so they are thread-time (divide by the threads for wall time).
enum Phase { kPass1 = 0, kSelect, kPass2, kGather, kGemm, kScatterInverse, kPhases };
std::atomic<int64_t> g_phase_ns[kPhases];
const bool g_profile = [] {
  const char* v = std::getenv("WCC_CPU_PROFILE");
  return v != nullptr && v[0] == '1';
}();

struct PhaseTimer {
  Phase phase;
  std::chrono::steady_clock::time_point t0;
  explicit PhaseTimer(Phase p) : phase(p) {
    if (g_profile) t0 = std::chrono::steady_clock::now();
  }
  void stop() {
    if (!g_profile) return;
    const auto t1 = std::chrono::steady_clock::now();
    g_phase_ns[phase].fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(),
                                std::memory_order_relaxed);
    t0 = t1;
  }
  void restart(Phase p) {
    stop();
    phase = p;
  }
};

// Runs fn(item) for item in [0, n) on the intra-op threads, handing out items one at a time:
// with uneven items, or a thread the OS parks on a shared machine, a static split would make
// the others wait (spinning) at the end of the region.
template <typename F>
void parallel_items(int64_t n, const F& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(n, at::get_num_threads());
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      for (int64_t item = next.fetch_add(1); item < n; item = next.fetch_add(1)) fn(item);
    }
  });
}

// ----------------------------------------------------------------------------------------------
// Pass 1: transform + channel energy (+ storage of the coefficients when `store` is given).
//   x: (N, C, H, W) contiguous; scores: (N, P) band order; store: (N, nb, C, Pb).

// Channels per group when a channels-last tensor is read or written band by band: 16 floats
// are one 64-byte line of a pixel's channel vector.
constexpr int64_t kGroup = 16;

// Distance between the channel rows of such a tile: the row length rounded up to whole cache
// lines plus one line. Rows a power of two apart (2^J rows of a power-of-two width) would
// all map to the same L1 set, and the kGroup lines a pixel touches would evict each other.
template <typename T>
int64_t tile_stride(int64_t area) {
  constexpr int64_t line = 64 / int64_t(sizeof(T));
  return (area + line - 1) / line * line + line;
}

// Channels per tile: all of them while the tile stays within kMaxTileBytes (then the band's
// block of the channels-last tensor, contiguous in memory, is read or written in one
// sequential sweep), else groups of kGroup (one 64-byte line per pixel and group).
template <typename T>
int64_t tile_group(int64_t channels, int64_t ld) {
  constexpr int64_t kMaxTileBytes = int64_t(8) << 20;
  return channels * ld * int64_t(sizeof(T)) <= kMaxTileBytes ? channels : kGroup;
}

// 8 x 8 float transpose in registers: r[k] holds row k on entry, column k on exit.
#if defined(__AVX__)
inline void transpose8x8(__m256 r[8]) {
  const __m256 a0 = _mm256_unpacklo_ps(r[0], r[1]), a1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 a2 = _mm256_unpacklo_ps(r[2], r[3]), a3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 a4 = _mm256_unpacklo_ps(r[4], r[5]), a5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 a6 = _mm256_unpacklo_ps(r[6], r[7]), a7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
  const __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
  const __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE);
  const __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
  r[0] = _mm256_permute2f128_ps(b0, b4, 0x20);
  r[1] = _mm256_permute2f128_ps(b1, b5, 0x20);
  r[2] = _mm256_permute2f128_ps(b2, b6, 0x20);
  r[3] = _mm256_permute2f128_ps(b3, b7, 0x20);
  r[4] = _mm256_permute2f128_ps(b0, b4, 0x31);
  r[5] = _mm256_permute2f128_ps(b1, b5, 0x31);
  r[6] = _mm256_permute2f128_ps(b2, b6, 0x31);
  r[7] = _mm256_permute2f128_ps(b3, b7, 0x31);
}
#endif

// Copies a (rows x cols) block, `src` rows sld elements apart, into its transpose (cols x
// rows) at `dst`, rows dld apart: the layout change between a channels-last tensor (pixel
// rows of channels) and a channel-major tile (channel rows of pixels). Rows outermost (each
// source row read once, in order); kToMemory: columns outermost instead, so that each
// destination row (a pixel's channels in the output) is written whole before the next.
// (Streaming stores, a gain for the NCHW output rows, measured slower here: 6.5 against 5 ms
// for the scatter + inverse of 256->256@128x256, whole lines or halves.)
template <typename T, bool kToMemory = false>
inline void transpose_block(const T* __restrict src, int64_t sld, int64_t rows, int64_t cols, T* __restrict dst,
                            int64_t dld) {
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float>) {
    // 8 x 8 tiles through registers: eight 32-byte loads and stores instead of 64 scalar moves.
    auto tile8 = [&](int64_t i, int64_t j) {
      __m256 r[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(src + (i + k) * sld + j);
      transpose8x8(r);
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + (j + k) * dld + i, r[k]);
    };
    const int64_t rows8 = rows / 8 * 8, cols8 = cols / 8 * 8;
    if constexpr (kToMemory) {
      for (int64_t j = 0; j < cols8; j += 8)
        for (int64_t i = 0; i < rows8; i += 8) tile8(i, j);
    } else {
      for (int64_t i = 0; i < rows8; i += 8)
        for (int64_t j = 0; j < cols8; j += 8) tile8(i, j);
    }
    // The edges: the last cols % 8 columns of the full row blocks, then the last rows.
    for (int64_t i = 0; i < rows8; ++i)
      for (int64_t j = cols8; j < cols; ++j) dst[j * dld + i] = src[i * sld + j];
    for (int64_t i = rows8; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) dst[j * dld + i] = src[i * sld + j];
    return;
  }
#endif
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * dld + i] = src[i * sld + j];
}

// Pass 1 on a channels-last input (x: (N, H, W, C) in memory). A band's rows hold every
// channel, interleaved: they are copied into a channel-major tile (all channels, or groups of
// kGroup: tile_group), and each channel of the tile is transformed as in the NCHW pass.
// Items are bands.
template <typename T, typename S>
void pass1_nhwc(const T* x, const Geo& g, T alpha, T n, T* scores, S* store) {
  parallel_items(g.N * g.nb, [&](int64_t item) {
    Scratch<T, 0> coef(g.Pb);
    Scratch<T, 1> work(g.work_size());
    const int64_t img = item / g.nb, b = item % g.nb;
    const int64_t r0 = b * g.B, rows = std::min(g.B, g.H - r0), area = rows * g.W, ld = tile_stride<T>(area);
    const int64_t group = tile_group<T>(g.C, ld);
    Scratch<T, 2> tile(group * ld);
    T* sc = scores + img * g.P() + b * g.Pb;
    std::fill(sc, sc + g.Pb, T(0));
    const T* src = x + (img * g.H + r0) * g.W * g.C;  // the band's first pixel
    for (int64_t c0 = 0; c0 < g.C; c0 += group) {
      const int64_t gn = std::min(group, g.C - c0);
      transpose_block(src + c0, g.C, area, gn, tile.data(), ld);
      for (int64_t t = 0; t < gn; ++t) {
        band_analysis(tile.data() + t * ld, g, b, coef.data(), work.data(), r0);
        S* st = store == nullptr ? nullptr : store + ((img * g.nb + b) * g.C + c0 + t) * g.Pb;
        accumulate_and_store<T, S>(coef.data(), g.Pb, alpha, n, sc, st);
      }
    }
  });
}

template <typename T, typename S>
void pass1(const T* x, const Geo& g, const Quant& q, T* scores, S* store, bool nhwc = false) {
  const T alpha = T(q.alpha), n = T(q.n);
  if (nhwc) return pass1_nhwc(x, g, alpha, n, scores, store);
  // Items are runs of consecutive bands, and each item walks its run channel by channel: one
  // channel's run is one contiguous stretch of input rows, long enough for the hardware
  // prefetchers to stream it (band by band across channels, each channel's 2^J rows were a new
  // short stream, and the loads stalled on memory: 3 GB/s per core on a Zen 3 VM). Runs aim at
  // 64 KiB of input per channel, but stay short enough to give each thread two items.
  const int64_t band_bytes = g.B * g.W * int64_t(sizeof(T));
  const int64_t threads = at::get_num_threads();
  const int64_t want = std::max<int64_t>(1, (int64_t(64) << 10) / std::max<int64_t>(band_bytes, 1));
  const int64_t run = std::max<int64_t>(1, std::min(want, g.nb * g.N / (2 * threads)));
  const int64_t runs = (g.nb + run - 1) / run;
  parallel_items(g.N * runs, [&](int64_t item) {
    Scratch<T, 0> coef(g.Pb);
    Scratch<T, 1> work(g.work_size());
    const int64_t img = item / runs, b0 = (item % runs) * run, b1 = std::min(g.nb, b0 + run);
    T* sc0 = scores + img * g.P();
    std::fill(sc0 + b0 * g.Pb, sc0 + b1 * g.Pb, T(0));
    for (int64_t c = 0; c < g.C; ++c) {
      const T* plane = x + (img * g.C + c) * g.H * g.W;
      for (int64_t b = b0; b < b1; ++b) {
        band_analysis(plane, g, b, coef.data(), work.data());
        S* st = store == nullptr ? nullptr : store + ((img * g.nb + b) * g.C + c) * g.Pb;
        accumulate_and_store<T, S>(coef.data(), g.Pb, alpha, n, sc0 + b * g.Pb, st);
      }
    }
  });
}

// ----------------------------------------------------------------------------------------------
// Band order -> index in the flattened padded Mallat layout (the reference's numbering).

int64_t mallat_index(const Geo& g, int64_t p) {
  const int64_t b = p / g.Pb, loc = p % g.Pb;
  int64_t row, col;
  if (loc >= g.ll_off) {
    row = b;
    col = loc - g.ll_off;
  } else {
    int64_t l = 1, t = 0;
    while (!(loc < g.sec(l, t) + (g.B >> l) * (g.Wp >> l))) {
      if (++t == 3) {
        t = 0;
        ++l;
      }
    }
    const int64_t rows = g.B >> l, cols = g.Wp >> l, r = (loc - g.sec(l, t)) / cols;
    row = b * rows + r + (t >= 1 ? (g.Hp >> l) : 0);
    col = (loc - g.sec(l, t)) % cols + (t != 1 ? (g.Wp >> l) : 0);
  }
  return row * g.Wp + col;
}

// ----------------------------------------------------------------------------------------------
// Selection: per image the k positions of largest energy, ascending in band order.
// Energies are >= 0 (or NaN), so their IEEE bit patterns order like the values. Every NaN
// (whatever its sign bit and payload) gets the key of +inf: the reference ranks non-finite
// energies as +inf, NaN equal to Inf. Selecting on integer keys keeps nth_element well defined.
// Ties at the threshold go to the lowest *Mallat* index, as in the reference (band order
// numbers positions differently, so the tied candidates are ranked by their Mallat index).

template <typename T>
using key_t = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

template <typename T>
inline key_t<T> key_of(T v) {
  if (v != v) v = std::numeric_limits<T>::infinity();  // NaN ranks as +inf
  key_t<T> k;
  std::memcpy(&k, &v, sizeof(T));
  return k;
}

template <typename T>
void select_topk(const T* scores, const Geo& g, int64_t k, int32_t* kept) {
  const int64_t N = g.N, P = g.P();
  using K = key_t<T>;
  // Radix selection: a histogram of the top 16 key bits finds the bin that holds the k-th
  // largest key; only that bin's keys go through nth_element.
  constexpr int kShift = int(sizeof(K)) * 8 - 16;
  parallel_items(N, [&](int64_t img) {
    Scratch<uint32_t, 1> hist(int64_t(1) << 16);  // slots differ: K may be uint32_t too
    Scratch<K, 2> cand(P);
    const T* s = scores + img * P;
    std::fill(hist.data(), hist.data() + (int64_t(1) << 16), 0u);
    for (int64_t p = 0; p < P; ++p) ++hist[key_of(s[p]) >> kShift];
    int64_t above = 0;  // keys in bins above the threshold bin
    int64_t bin = (int64_t(1) << 16) - 1;
    for (; bin > 0 && above + hist[bin] < k; --bin) above += hist[bin];
    int64_t m = 0;
    for (int64_t p = 0; p < P; ++p) {
      const K kp = key_of(s[p]);
      if (int64_t(kp >> kShift) == bin) cand[m++] = kp;
    }
    const int64_t need = k - above;  // 1 <= need <= m
    std::nth_element(cand.data(), cand.data() + (need - 1), cand.data() + m, std::greater<K>());
    const K thr = cand[need - 1];
    int64_t greater = above, equal = 0;
    for (int64_t i = 0; i < m; ++i) {
      greater += cand[i] > thr;
      equal += cand[i] == thr;
    }
    const int64_t ties = k - greater;  // keys equal to the threshold that are kept
    // Usually every key equal to the threshold is kept (equal == ties) and nothing is decided
    // here. Otherwise keep the `ties` tied positions with the lowest Mallat index.
    std::vector<char> keep_tie(size_t(equal), 1);
    if (equal > ties) {
      std::vector<std::pair<int64_t, int64_t>> by_mallat;  // (Mallat index, slot among the ties)
      by_mallat.reserve(size_t(equal));
      for (int64_t p = 0; p < P; ++p)
        if (key_of(s[p]) == thr) by_mallat.emplace_back(mallat_index(g, p), int64_t(by_mallat.size()));
      std::nth_element(by_mallat.begin(), by_mallat.begin() + ties, by_mallat.end());
      std::fill(keep_tie.begin(), keep_tie.end(), 0);
      for (int64_t i = 0; i < ties; ++i) keep_tie[size_t(by_mallat[size_t(i)].second)] = 1;
    }
    int32_t* out = kept + img * k;
    int64_t n_out = 0;
    size_t ti = 0;
    for (int64_t p = 0; p < P && n_out < k; ++p) {
      const K kp = key_of(s[p]);
      if (kp > thr) {
        out[n_out++] = int32_t(p);
      } else if (kp == thr) {
        if (keep_tie[ti++]) out[n_out++] = int32_t(p);
      }
    }
    TORCH_INTERNAL_ASSERT(n_out == k);
  });
}

// Start of every band's segment in each image's kept list: seg[(img * (nb + 1)) + b].
std::vector<int64_t> band_segments(const int32_t* kept, const Geo& g, int64_t k) {
  std::vector<int64_t> seg(g.N * (g.nb + 1));
  for (int64_t img = 0; img < g.N; ++img) {
    const int32_t* kp = kept + img * k;
    int64_t i = 0;
    for (int64_t b = 0; b <= g.nb; ++b) {
      while (i < k && kp[i] < b * g.Pb) ++i;
      seg[img * (g.nb + 1) + b] = i;
    }
  }
  return seg;
}

template <typename T>
at::Tensor wrap(T* p, at::IntArrayRef sizes) {
  return at::from_blob(p, sizes, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// Y (M x N) = A (M x K) @ B (K x N), all row-major, for products too small to be worth a BLAS
// call: BLAS may start its own thread team for them, which costs far more than the arithmetic.
// Four rows of A share each vector of B; the accumulators stay in registers.
template <typename T>
void small_gemm(const T* __restrict A, const T* __restrict B, T* __restrict Y, int64_t M, int64_t K, int64_t N) {
  using W = Vec<T>;
  using V = typename W::V;
  constexpr int L = W::L;
  constexpr int R = 4;
  for (int64_t m0 = 0; m0 < M; m0 += R) {
    const int64_t rows = std::min<int64_t>(R, M - m0);
    int64_t j = 0;
    for (; j + L <= N; j += L) {
      V acc[R] = {};
      for (int64_t kk = 0; kk < K; ++kk) {
        const V b = vload(B + kk * N + j);
        for (int r = 0; r < R; ++r) {
          if (r < rows) acc[r] = acc[r] + vsplat(A[(m0 + r) * K + kk]) * b;
        }
      }
      for (int r = 0; r < rows; ++r) vstore(Y + (m0 + r) * N + j, acc[r]);
    }
    for (; j < N; ++j) {
      for (int r = 0; r < rows; ++r) {
        T acc = T(0);
        for (int64_t kk = 0; kk < K; ++kk) acc += A[(m0 + r) * K + kk] * B[kk * N + j];
        Y[(m0 + r) * N + j] = acc;
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Integer GEMM of the int8 codes on AVX2 CPUs without int8 dot products (no VNNI/AMX), where
// torch._int_mm is a generic loop. `vpmaddubsw` multiplies 32 unsigned bytes by 32 signed bytes
// and adds adjacent products into saturating int16; `vpmaddwd` by ones then adds those pairs
// into int32 lanes: 4 products per lane. The unsigned operand is |x| and the signed one w with
// x's sign (`vpsignb`), so both are at most 127 in magnitude (codes are in [-127, 127]) and a
// pair sums to at most 2 * 127^2 = 32258 < 32767: never saturated, the int32 result is exact (no
// overflow below Ci = 2^17). Measured on an AMD EPYC (Zen 3) core: 61 GMAC/s, against 44 for
// int16 pairs through `vpmaddwd` alone and 42 for torch.mm float32.
#if defined(__AVX2__) && !defined(__AVX512VNNI__) && !defined(__AVXVNNI__) && !defined(__AMX_INT8__)
#define WCC_QUAD_GEMM 1
#define WCC_UNROLL _Pragma("GCC unroll 16")

constexpr int kQuadMR = 4;              // rows of A per register tile
constexpr int kQuadNV = 2;              // vectors of 8 columns per register tile
constexpr int kQuadP = 8 * kQuadNV;     // columns per panel of B

// Four int8 in one int32 word, the first in the lowest byte.
inline int32_t quad8(int8_t a, int8_t b, int8_t c, int8_t d) {
  return int32_t(uint32_t(uint8_t(a)) | (uint32_t(uint8_t(b)) << 8) | (uint32_t(uint8_t(c)) << 16) |
                 (uint32_t(uint8_t(d)) << 24));
}

// C[r][j] (r < MR, j < kQuadP) = sum_q dot4(A[r][q], B[q][j]) over q < K4: A rows lda words
// apart, B one panel (K4 rows of kQuadP words, contiguous), C rows ldc apart. The loops over r
// and v are unrolled so that the MR x NV accumulators stay in registers.
template <int MR>
__attribute__((always_inline)) inline void quad_tile(const int32_t* __restrict A, int64_t lda,
                                                     const int32_t* __restrict B, int64_t K4, int32_t* __restrict C,
                                                     int64_t ldc) {
  constexpr int NV = kQuadNV;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][NV];
  WCC_UNROLL for (int r = 0; r < MR; ++r) {
    WCC_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_si256();
  }
  for (int64_t q = 0; q < K4; ++q) {
    __m256i x[NV], ax[NV];
    WCC_UNROLL for (int v = 0; v < NV; ++v) {
      x[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + q * kQuadP + 8 * v));
      ax[v] = _mm256_abs_epi8(x[v]);
    }
    WCC_UNROLL for (int r = 0; r < MR; ++r) {
      const __m256i w = _mm256_set1_epi32(A[r * lda + q]);
      WCC_UNROLL for (int v = 0; v < NV; ++v) {
        const __m256i pairs = _mm256_maddubs_epi16(ax[v], _mm256_sign_epi8(w, x[v]));
        acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  WCC_UNROLL for (int r = 0; r < MR; ++r) {
    WCC_UNROLL for (int v = 0; v < NV; ++v) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + r * ldc + 8 * v), acc[r][v]);
    }
  }
}

// C (M x ldc, ldc = panels * kQuadP) = A (M x K4 quads) @ B (panels of K4 x kQuadP quads).
// Panels outermost: one (K4 x 64 bytes) stays in L1 while the rows of A stream past it.
void quad_gemm(const int32_t* A, const int32_t* B, int32_t* C, int64_t M, int64_t K4, int64_t panels) {
  const int64_t ldc = panels * kQuadP;
  for (int64_t p = 0; p < panels; ++p) {
    const int32_t* Bp = B + p * K4 * kQuadP;
    int32_t* Cp = C + p * kQuadP;
    int64_t m = 0;
    for (; m + kQuadMR <= M; m += kQuadMR) quad_tile<kQuadMR>(A + m * K4, K4, Bp, K4, Cp + m * ldc, ldc);
    for (; m < M; ++m) quad_tile<1>(A + m * K4, K4, Bp, K4, Cp + m * ldc, ldc);
  }
}
#endif

constexpr int64_t kSmallGemmMacs = int64_t(1) << 21;
constexpr int64_t kMinChunkChannels = 128;  // output channels per pass-2 item, at least

// ----------------------------------------------------------------------------------------------
// Pass 2: per band gather -> GEMM -> scatter + inverse transform (+ bias) into y.
//   saved_raw (N, C_in, k): when given, the gathered pre-quantization coefficients (for backward).

//   wcodes: when defined, the weight as int8 codes (C_out, C_in); with int8 activation codes the
//   GEMM then runs on the codes and code_scale = weight step * activation step scales its result.

// Scatter + inverse transform (+ bias) of output channels [c0, c1) of band `b` of image `img`
// into y: channel co's kept values are value(co, i) at band positions loc[i] (i < kb). y is
// (N, Co, H, W) in memory, or (N, H, W, Co) when nhwc: then each group of kGroup channels is
// reconstructed into a channel-major tile and written out pixel by pixel.
// `plane` has g.Pb elements, `work` g.work_size().
template <typename T, typename F>
void reconstruct(const Geo& g, int64_t img, int64_t b, int64_t Co, int64_t c0, int64_t c1, const int32_t* loc,
                 int64_t kb, const T* bias, bool nhwc, T* y, T* plane, T* work, const F& value) {
  // Every output channel has its nonzeros at the same positions: zero the band once and
  // overwrite those positions per channel.
  std::fill(plane, plane + g.Pb, T(0));
  auto one = [&](int64_t co, T* out, int64_t row0, bool stream) {
    for (int64_t i = 0; i < kb; ++i) plane[loc[i]] = value(co, i);
    if (bias != nullptr) {
      band_synthesis<T, true>(plane, g, b, out, bias[co], work, row0, stream);
    } else {
      band_synthesis<T, false>(plane, g, b, out, T(0), work, row0, stream);
    }
  };
  if (!nhwc) {
    for (int64_t co = c0; co < c1; ++co) one(co, y + (img * Co + co) * g.H * g.W, 0, true);
    return;
  }
  const int64_t r0 = b * g.B, area = std::min(g.B, g.H - r0) * g.W, ld = tile_stride<T>(area);
  // Groups of kGroup: measured, a tile of the whole chunk (up to MiBs) was slower here than
  // one that stays in L2, unlike in pass 1.
  const int64_t group = kGroup;
  Scratch<T, 4> tile(group * ld);
  T* dst = y + (img * g.H + r0) * g.W * Co;  // the band's first pixel
  for (int64_t g0 = c0; g0 < c1; g0 += group) {
    const int64_t gn = std::min(group, c1 - g0);
    for (int64_t t = 0; t < gn; ++t) one(g0 + t, tile.data() + t * ld, r0, false);
    transpose_block<T, true>(tile.data(), ld, gn, area, dst + g0, Co);
  }
}

template <typename T, typename S>
void pass2(const S* store, const Geo& g, const int32_t* kept, int64_t k, const at::Tensor& weight,
           const at::Tensor& wcodes, const int32_t* wquads, double code_scale, const T* bias, const Quant& q, T* y,
           T* saved_raw, bool nhwc = false) {
  const T alpha = T(q.alpha), n = T(q.n);
  const int64_t Ci = g.C, Co = weight.size(0);
  const std::vector<int64_t> seg = band_segments(kept, g, k);
  // int8 codes decode through a table (no division per element); index = code + 128.
  T lut[256];
  for (int code = -128; code < 128; ++code) lut[code + 128] = decode<T, int8_t>(int8_t(code), alpha, n, true);
  int64_t kmax = 0;
  for (int64_t img = 0; img < g.N; ++img)
    for (int64_t b = 0; b < g.nb; ++b)
      kmax = std::max(kmax, seg[img * (g.nb + 1) + b + 1] - seg[img * (g.nb + 1) + b]);
  // Few bands and many output channels: split each band's output channels into chunks (each
  // chunk gathers the band again, which is cheap next to its GEMM rows and reconstruction), so
  // that there are enough items to keep every thread busy until the end.
  const int64_t bands = g.N * g.nb;
  const int64_t want = 8 * at::get_num_threads();
  const int64_t chunks = std::max<int64_t>(1, std::min((want + bands - 1) / bands, Co / kMinChunkChannels));
  const int64_t per_chunk = (Co + chunks - 1) / chunks;
  parallel_items(bands * chunks, [&](int64_t job) {
    const int64_t item = job / chunks;
    const int64_t c0 = (job % chunks) * per_chunk, c1 = std::min(Co, c0 + per_chunk);
    if (c0 >= c1) return;
    Scratch<T, 0> plane(g.Pb);
    Scratch<T, 1> work(g.work_size());
    Scratch<T, 2> xk(Ci * kmax);
    Scratch<T, 3> yk((c1 - c0) * kmax);
    Scratch<int32_t, 0> loc(kmax);
    const int64_t img = item / g.nb, b = item % g.nb;
    const int64_t s0 = seg[img * (g.nb + 1) + b], kb = seg[img * (g.nb + 1) + b + 1] - s0;
    for (int64_t i = 0; i < kb; ++i) loc[i] = kept[img * k + s0 + i] - int32_t(b * g.Pb);
    const int64_t rows = c1 - c0;
    if constexpr (std::is_same_v<S, int8_t>) {
      // Integer GEMM on the codes: weight = cw * sw and x = cx * sx up to one rounding each
      // (fl(fl(c / n) * alpha) in the reference), so W @ X = (Cw @ Cx) * sw * sx, where the
      // int32 sum is exact. Four times the float GEMM's throughput with VNNI (torch._int_mm),
      // 1.5x without (quad_gemm, AVX2), a quarter of its gather traffic; the result differs
      // from the float GEMM by float rounding only. A NaN
      // code (sentinel) has no integer form: that band takes the float path below.
      if (wcodes.defined() && kb > 0) {
        PhaseTimer timer(kGather);
        constexpr int8_t kNaN = std::numeric_limits<int8_t>::min();
        int8_t nan_seen = 0;
#ifdef WCC_QUAD_GEMM
        // The kept columns as quads of consecutive input channels, in panels of kQuadP columns
        // (see quad_gemm); the columns padded to whole panels and the channels to a multiple of
        // 4 with zero codes.
        const int64_t K4 = (Ci + 3) / 4, panels = (kb + kQuadP - 1) / kQuadP, ld = panels * kQuadP;
        Scratch<int32_t, 2> xp(K4 * ld);
        Scratch<int32_t, 1> acc(rows * ld);
        const int8_t zero = 0;
        for (int64_t p = 0; p < K4; ++p) {
          const int8_t* src[4];
          for (int t = 0; t < 4; ++t) src[t] = 4 * p + t < Ci ? store + ((img * g.nb + b) * Ci + 4 * p + t) * g.Pb : nullptr;
          for (int64_t i = 0; i < ld; ++i) {
            int8_t v[4];
            for (int t = 0; t < 4; ++t) v[t] = (src[t] != nullptr && i < kb) ? src[t][loc[i]] : zero;
            nan_seen |= int8_t((v[0] == kNaN) | (v[1] == kNaN) | (v[2] == kNaN) | (v[3] == kNaN));
            xp[(i / kQuadP * K4 + p) * kQuadP + i % kQuadP] = quad8(v[0], v[1], v[2], v[3]);
          }
        }
#else
        const int64_t ld = kb;
        Scratch<int8_t, 0> xc(Ci * kb);
        Scratch<int32_t, 1> acc(rows * kb);
        for (int64_t c = 0; c < Ci; ++c) {
          const int8_t* st = store + ((img * g.nb + b) * Ci + c) * g.Pb;
          int8_t* xr = xc.data() + c * kb;
          for (int64_t i = 0; i < kb; ++i) {
            xr[i] = st[loc[i]];
            nan_seen |= int8_t(xr[i] == kNaN);
          }
        }
#endif
        if (!nan_seen) {
          timer.restart(kGemm);
#ifdef WCC_QUAD_GEMM
          quad_gemm(wquads + c0 * K4, xp.data(), acc.data(), rows, K4, panels);
#else
          at::Tensor out = wrap(acc.data(), {rows, kb});
          at::_int_mm_out(out, wcodes.narrow(0, c0, rows), wrap(xc.data(), {Ci, kb}));
#endif
          timer.restart(kScatterInverse);
          const T scale = T(code_scale);
          const int32_t* ap = acc.data();
          reconstruct<T>(g, img, b, Co, c0, c1, loc.data(), kb, bias, nhwc, y, plane.data(), work.data(),
                         [&](int64_t co, int64_t i) { return T(ap[(co - c0) * ld + i]) * scale; });
          timer.stop();
          return;
        }
      }
    }
    PhaseTimer timer(kGather);
    // Gather the kept columns of the band: xk (C_in x kb), quantized values.
    for (int64_t c = 0; c < Ci; ++c) {
      const S* st = store + ((img * g.nb + b) * Ci + c) * g.Pb;
      T* xr = xk.data() + c * kb;
      if constexpr (std::is_same_v<S, int8_t>) {
        for (int64_t i = 0; i < kb; ++i) xr[i] = lut[int(st[loc[i]]) + 128];
      } else {
        if (saved_raw != nullptr && c0 == 0) {
          T* sv = saved_raw + (img * Ci + c) * k + s0;
          for (int64_t i = 0; i < kb; ++i) sv[i] = T(st[loc[i]]);
        }
        for (int64_t i = 0; i < kb; ++i) xr[i] = decode<T, S>(st[loc[i]], alpha, n, q.on);
      }
    }
    timer.restart(kGemm);
    if (kb > 0 && rows * Ci * kb <= kSmallGemmMacs) {
      small_gemm(weight.data_ptr<T>() + c0 * Ci, xk.data(), yk.data(), rows, Ci, kb);
    } else if (kb > 0) {
      at::Tensor out = wrap(yk.data(), {rows, kb});
      at::mm_out(out, weight.narrow(0, c0, rows), wrap(xk.data(), {Ci, kb}));
    }
    timer.restart(kScatterInverse);
    const T* yv = yk.data();
    reconstruct<T>(g, img, b, Co, c0, c1, loc.data(), kb, bias, nhwc, y, plane.data(), work.data(),
                   [&](int64_t co, int64_t i) { return yv[(co - c0) * kb + i]; });
    timer.stop();
  });
}

void check_input(const at::Tensor& x, int64_t levels) {
  TORCH_CHECK(x.device().is_cpu(), "wcc_cpu: expected a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 4, "wcc_cpu: expected x of shape (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "wcc_cpu: supports float32 and float64, got ", x.scalar_type());
  TORCH_CHECK(levels >= 1 && levels <= 12, "wcc_cpu: levels must be in 1..12, got ", levels);
}

Quant make_quant(double alpha, int64_t act_bits) {
  TORCH_CHECK(act_bits == 0 || (act_bits >= 2 && act_bits <= 16),
              "wcc_cpu: act_bits must be 0 (float) or 2..16, got ", act_bits);
  Quant q;
  q.on = act_bits > 0;
  q.alpha = alpha;
  q.n = q.on ? double((int64_t(1) << (act_bits - 1)) - 1) : 1.0;
  return q;
}

// ----------------------------------------------------------------------------------------------
// Ops.

// Forward. Returns (y, kept (N, k) int32 band-order positions, saved raw kept coefficients
// (N, C_in, k) when `save`, else an empty tensor).
// weight_codes (optional, int8 (C_out, C_in)): the weight as integer codes, weight == fl(fl(code /
// n_w) * alpha_w) with weight_step = alpha_w / n_w; used for an integer GEMM when the activation
// codes are int8 too (inference with <= 8-bit activations), ignored otherwise.
std::tuple<at::Tensor, at::Tensor, at::Tensor> wcc_forward(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                           const std::optional<at::Tensor>& bias_in, double alpha,
                                                           int64_t levels, int64_t k, int64_t act_bits, bool save,
                                                           const std::optional<at::Tensor>& weight_codes_in,
                                                           double weight_step) {
  check_input(x_in, levels);
  at::AutoDispatchBelowADInplaceOrView guard;  // autograd is the Python Function's business
  // A channels-last input (a channels-last graph) is read as it is and gets a channels-last
  // output: converting either side would cost a transposing copy of the whole tensor. Training
  // (save) keeps the NCHW path.
  const bool nhwc = !save && !x_in.is_contiguous() && x_in.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor x = nhwc ? x_in.detach() : x_in.detach().contiguous();
  const at::Tensor weight = weight_in.detach().contiguous();
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(1) && weight.scalar_type() == x.scalar_type(),
              "wcc_cpu: weight must be (C_out, C_in) with the input's dtype, got ", weight.sizes(), " ",
              weight.scalar_type());
  at::Tensor bias;
  if (bias_in.has_value() && bias_in->defined()) {
    bias = bias_in->detach().contiguous();
    TORCH_CHECK(bias.numel() == weight.size(0) && bias.scalar_type() == x.scalar_type(),
                "wcc_cpu: bias must be (C_out,) with the input's dtype");
  }
  const Geo g(x.size(0), x.size(1), x.size(2), x.size(3), levels);
  TORCH_CHECK(k >= 1 && k <= g.P(), "wcc_cpu: k=", k, " outside 1..", g.P());
  TORCH_CHECK(g.P() < std::numeric_limits<int32_t>::max(), "wcc_cpu: image too large");
  const Quant q = make_quant(alpha, act_bits);
  const int64_t Co = weight.size(0);
  at::Tensor y = nhwc ? empty_output({g.N, g.H, g.W, Co}, x.options()).permute({0, 3, 1, 2})
                      : empty_output({g.N, Co, g.H, g.W}, x.options());
  at::Tensor kept = at::empty({g.N, k}, x.options().dtype(at::kInt));
  at::Tensor saved = save ? at::empty({g.N, g.C, k}, x.options()) : at::Tensor();
  // Codes are exact integers for <= 16 bits; the raw value is kept when backward needs it
  // or when there is no quantization.
  const at::ScalarType st = (!q.on || save) ? x.scalar_type() : (act_bits <= 8 ? at::kChar : at::kShort);
  at::Tensor wcodes;
  if (weight_codes_in.has_value() && weight_codes_in->defined() && st == at::kChar) {
    wcodes = weight_codes_in->contiguous();
    TORCH_CHECK(wcodes.scalar_type() == at::kChar && wcodes.sizes() == weight.sizes() && wcodes.device().is_cpu(),
                "wcc_cpu: weight_codes must be an int8 CPU tensor shaped like the weight ", weight.sizes(),
                ", got ", wcodes.scalar_type(), " ", wcodes.sizes());
    TORCH_CHECK(std::isfinite(weight_step) && weight_step > 0, "wcc_cpu: weight_step must be > 0, got ", weight_step);
  }
  const double code_scale = weight_step * (q.alpha / q.n);
  std::vector<int32_t> wquads;  // the weight codes as quads along C_in (quad_gemm's A)
#ifdef WCC_QUAD_GEMM
  if (wcodes.defined()) {
    const int64_t Ci = weight.size(1), K4 = (Ci + 3) / 4;
    const int8_t* wc = wcodes.data_ptr<int8_t>();
    wquads.resize(size_t(weight.size(0) * K4));
    for (int64_t co = 0; co < weight.size(0); ++co) {
      for (int64_t p = 0; p < K4; ++p) {
        int8_t v[4];
        for (int t = 0; t < 4; ++t) {
          v[t] = 4 * p + t < Ci ? wc[co * Ci + 4 * p + t] : int8_t(0);
          // -128 has no magnitude in int8: x's sign could not be moved onto it (quad_gemm).
          TORCH_CHECK(v[t] != std::numeric_limits<int8_t>::min(),
                      "wcc_cpu: weight_codes must lie in [-127, 127] (a symmetric <= 8-bit weight), found -128");
        }
        wquads[size_t(co * K4 + p)] = quad8(v[0], v[1], v[2], v[3]);
      }
    }
  }
#endif
  const int64_t score_bytes = round_up64(g.N * g.P() * int64_t(x.element_size()));
  const Workspace ws(score_bytes + g.N * g.P() * g.C * int64_t(c10::elementSize(st)));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wcc_cpu_forward", [&] {
    using T = scalar_t;
    const T* bp = bias.defined() ? bias.data_ptr<T>() : nullptr;
    T* sv = save ? saved.data_ptr<T>() : nullptr;
    T* scores = reinterpret_cast<T*>(ws.data());
    auto run = [&](auto* sp) {  // sp: the store, (N, nb, C, Pb) of int8, int16 or T
      PhaseTimer timer(kPass1);
      pass1<T>(x.data_ptr<T>(), g, q, scores, sp, nhwc);
      timer.restart(kSelect);
      select_topk<T>(scores, g, k, kept.data_ptr<int32_t>());
      timer.restart(kPass2);
      pass2<T>(sp, g, kept.data_ptr<int32_t>(), k, weight, wcodes, wquads.data(), code_scale, bp, q, y.data_ptr<T>(),
               sv, nhwc);
      timer.stop();
    };
    uint8_t* store = ws.data() + score_bytes;
    if (st == at::kChar) {
      run(reinterpret_cast<int8_t*>(store));
    } else if (st == at::kShort) {
      run(reinterpret_cast<int16_t*>(store));
    } else {
      run(reinterpret_cast<T*>(store));
    }
  });
  return {y, kept, saved};
}

// Backward of wcc_forward (without the bias, whose gradient is gy summed over N, H, W).
// Returns (gx, gw, galpha); galpha is undefined without quantization.
std::tuple<at::Tensor, at::Tensor, at::Tensor> wcc_backward(const at::Tensor& gy_in, const at::Tensor& weight_in,
                                                            const at::Tensor& saved, const at::Tensor& kept_in,
                                                            double alpha, int64_t levels, int64_t act_bits,
                                                            bool need_gx, bool need_gw) {
  check_input(gy_in, levels);
  at::AutoDispatchBelowADInplaceOrView guard;
  const at::Tensor gy = gy_in.detach().contiguous();
  const at::Tensor weight = weight_in.detach().contiguous();
  const at::Tensor kept = kept_in.contiguous();
  const int64_t N = gy.size(0), Co = gy.size(1), H = gy.size(2), W = gy.size(3);
  const int64_t Ci = weight.size(1), k = kept.size(1);
  const Quant q = make_quant(alpha, act_bits);
  const Geo go(N, Co, H, W, levels), gi(N, Ci, H, W, levels);
  const int32_t* kp = kept.data_ptr<int32_t>();
  at::Tensor G = at::empty({N, Co, k}, gy.options());  // gradient of the GEMM output, kept columns
  at::Tensor gx, gw, galpha;
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "wcc_cpu_backward", [&] {
    using T = scalar_t;
    const T a = T(q.alpha), n = T(q.n);
    // Adjoint of crop . IWT . scatter: pad, transform, gather the kept positions.
    const std::vector<int64_t> seg = band_segments(kp, go, k);
    const T* gyp = gy.data_ptr<T>();
    T* Gp = G.data_ptr<T>();
    parallel_items(N * go.nb, [&](int64_t item) {
      Scratch<T, 0> coef(go.Pb);
      Scratch<T, 1> work(go.work_size());
      const int64_t img = item / go.nb, b = item % go.nb;
      const int64_t s0 = seg[img * (go.nb + 1) + b], kb = seg[img * (go.nb + 1) + b + 1] - s0;
      if (kb == 0) return;
      const int32_t* kl = kp + img * k + s0;
      for (int64_t co = 0; co < Co; ++co) {
        band_analysis(gyp + (img * Co + co) * H * W, go, b, coef.data(), work.data());
        T* gr = Gp + (img * Co + co) * k + s0;
        for (int64_t i = 0; i < kb; ++i) gr[i] = coef[kl[i] - b * go.Pb];
      }
    });
    // Quantized kept activations (the GEMM's right operand) from the saved raw values.
    at::Tensor xq = saved;
    if (q.on) {
      xq = at::empty_like(saved);
      const T* sp = saved.data_ptr<T>();
      T* qp = xq.data_ptr<T>();
      at::parallel_for(0, saved.numel(), 4096, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) qp[i] = quant_value(sp[i], a, n);
      });
    }
    if (need_gw) gw = at::matmul(G, xq.transpose(1, 2)).sum(0);  // (C_out, C_in)
    if (need_gx || q.on) {
      at::Tensor gq = at::matmul(weight.t(), G);  // (N, C_in, k): gradient of the quantized values
      if (q.on) {
        // Straight-through inside the clip, zero outside; learned-step gradient of alpha.
        const T* sp = saved.data_ptr<T>();
        T* gp = gq.data_ptr<T>();
        const int64_t total = gq.numel();
        const int64_t nchunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads() * 4, total / 4096 + 1));
        std::vector<double> part(nchunks, 0.0);
        at::parallel_for(0, nchunks, 1, [&](int64_t cb, int64_t ce) {
          for (int64_t ch = cb; ch < ce; ++ch) {
            const int64_t i0 = total * ch / nchunks, i1 = total * (ch + 1) / nchunks;
            double acc = 0.0;
            for (int64_t i = i0; i < i1; ++i) {
              const T u = sp[i] / a;
              const bool outside = std::abs(u) > T(1);
              const T qv = quant_code(sp[i], a, n) / n;  // q on the unit grid, as the reference
              const T dir = outside ? (u > 0 ? T(1) : (u < 0 ? T(-1) : T(0))) : T(qv - u);
              acc += double(gp[i] * dir);
              if (outside) gp[i] = T(0);
            }
            part[ch] = acc;
          }
        });
        double total_g = 0.0;
        for (double p : part) total_g += p;
        galpha = at::full({}, total_g, gy.options());
      }
      if (need_gx) {
        // Adjoint of gather . WT . pad: scatter into the band, inverse transform, crop.
        gx = empty_output({N, Ci, H, W}, gy.options());
        const T* gqp = gq.data_ptr<T>();
        T* gxp = gx.data_ptr<T>();
        parallel_items(N * gi.nb, [&](int64_t item) {
          Scratch<T, 0> plane(gi.Pb);
          Scratch<T, 1> work(gi.work_size());
          const int64_t img = item / gi.nb, b = item % gi.nb;
          const int64_t s0 = seg[img * (gi.nb + 1) + b], kb = seg[img * (gi.nb + 1) + b + 1] - s0;
          const int32_t* kl = kp + img * k + s0;
          std::fill(plane.data(), plane.data() + gi.Pb, T(0));  // nonzeros: same positions per channel
          for (int64_t c = 0; c < Ci; ++c) {
            const T* gr = gqp + (img * Ci + c) * k + s0;
            for (int64_t i = 0; i < kb; ++i) plane[kl[i] - b * gi.Pb] = gr[i];
            band_synthesis<T, false>(plane.data(), gi, b, gxp + (img * Ci + c) * H * W, T(0), work.data());
          }
        });
      }
    }
  });
  return {gx, gw, galpha};
}

// Kept positions (N, k) in the flattened padded Mallat layout, ascending (int64).
at::Tensor wcc_keep_indices(const at::Tensor& x_in, int64_t levels, int64_t k) {
  check_input(x_in, levels);
  const at::Tensor x = x_in.contiguous();
  const Geo g(x.size(0), x.size(1), x.size(2), x.size(3), levels);
  TORCH_CHECK(k >= 1 && k <= g.P(), "wcc_cpu: k=", k, " outside 1..", g.P());
  at::Tensor scores = at::empty({g.N, g.P()}, x.options());
  at::Tensor kept = at::empty({g.N, k}, x.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wcc_cpu_keep", [&] {
    pass1<scalar_t, scalar_t>(x.data_ptr<scalar_t>(), g, Quant{false, 1.0, 1.0}, scores.data_ptr<scalar_t>(),
                              nullptr);
    select_topk<scalar_t>(scores.data_ptr<scalar_t>(), g, k, kept.data_ptr<int32_t>());
  });
  // Band order -> Mallat index.
  at::Tensor out = at::empty({g.N, k}, x.options().dtype(at::kLong));
  const int32_t* kp = kept.data_ptr<int32_t>();
  int64_t* op = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < g.N * k; ++i) op[i] = mallat_index(g, kp[i]);
  return std::get<0>(out.sort(1));
}

// Unsigned activation fake-quant of QuantConv2d (DESIGN 3.3) in one pass, for inference:
//   out = (round(min(x / alpha, 1) * n) / n) * alpha,   n = 2^bits - 1,
// the reference's operations in its order (bit-identical), instead of six tensor-wide passes.
// The layout of x is kept (channels_last stays channels_last). `out`, when given, receives the
// result (same shape, strides and dtype as x, which must be dense): lets the caller reuse a
// buffer instead of faulting in fresh pages for every call.
at::Tensor unsigned_fake_quant_impl(const at::Tensor& x_in, double alpha, int64_t bits,
                                    const std::optional<at::Tensor>& out_in) {
  TORCH_CHECK(x_in.device().is_cpu(), "wcc_cpu: expected a CPU tensor, got ", x_in.device());
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "wcc_cpu: supports float32 and float64, got ", x_in.scalar_type());
  TORCH_CHECK(bits >= 1 && bits <= 16, "wcc_cpu: bits must be in 1..16, got ", bits);
  at::AutoDispatchBelowADInplaceOrView guard;
  const at::Tensor x = x_in.is_non_overlapping_and_dense() ? x_in.detach() : x_in.detach().contiguous();
  at::Tensor out;
  if (out_in.has_value() && out_in->defined()) {
    out = *out_in;
    TORCH_CHECK(out.sizes() == x.sizes() && out.strides() == x.strides() && out.scalar_type() == x.scalar_type(),
                "wcc_cpu: out must match the input's shape, strides and dtype");
  } else {
    out = at::empty_like(x);  // same strides as a dense x: one flat loop serves both
  }
  TORCH_CHECK(out.strides() == x.strides(), "wcc_cpu: output layout differs from the input's");
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wcc_cpu_unsigned_fake_quant", [&] {
    using T = scalar_t;
    const T a = T(alpha), n = T((int64_t(1) << bits) - 1);
    // The flat storage of a dense tensor starts at the element with the lowest address.
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    at::parallel_for(0, x.numel(), int64_t(1) << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T u = xp[i] / a;
        u = u > T(1) ? T(1) : u;  // clamp(max=1), a NaN stays NaN
        op[i] = (std::nearbyint(u * n) / n) * a;
      }
    });
  });
  return out;
}

at::Tensor unsigned_fake_quant(const at::Tensor& x, double alpha, int64_t bits) {
  return unsigned_fake_quant_impl(x, alpha, bits, std::nullopt);
}

at::Tensor& unsigned_fake_quant_out(const at::Tensor& x, double alpha, int64_t bits, at::Tensor& out) {
  unsigned_fake_quant_impl(x, alpha, bits, out);
  return out;
}

// Which integer GEMM the int8 path uses: this file's AVX2 pair GEMM, or torch._int_mm.
std::string int8_gemm() {
#ifdef WCC_QUAD_GEMM
  return "avx2-quads";
#else
  return "torch._int_mm";
#endif
}

// The phase profile so far (ns per phase: pass1, select, pass2, gather, gemm, scatter_inverse;
// the last three summed over threads), then reset. All zeros unless WCC_CPU_PROFILE=1.
std::vector<int64_t> profile_take() {
  std::vector<int64_t> out(kPhases);
  for (int i = 0; i < kPhases; ++i) out[i] = g_phase_ns[i].exchange(0);
  return out;
}

}  // namespace

TORCH_LIBRARY(wcc_cpu, m) {
  m.def("profile_take() -> int[]", &profile_take);  // no tensor argument: a catch-all kernel
  m.def("int8_gemm() -> str", &int8_gemm);
  m.def("forward(Tensor x, Tensor weight, Tensor? bias, float alpha, int levels, int k, int act_bits, bool save,"
        " Tensor? weight_codes=None, float weight_step=1.0) -> (Tensor, Tensor, Tensor)");
  m.def("backward(Tensor gy, Tensor weight, Tensor saved, Tensor kept, float alpha, int levels, int act_bits,"
        " bool need_gx, bool need_gw) -> (Tensor, Tensor, Tensor)");
  m.def("keep_indices(Tensor x, int levels, int k) -> Tensor");
  m.def("unsigned_fake_quant(Tensor x, float alpha, int bits) -> Tensor");
  m.def("unsigned_fake_quant.out(Tensor x, float alpha, int bits, *, Tensor(a!) out) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(wcc_cpu, CPU, m) {
  m.impl("forward", &wcc_forward);
  m.impl("backward", &wcc_backward);
  m.impl("keep_indices", &wcc_keep_indices);
  m.impl("unsigned_fake_quant", &unsigned_fake_quant);
  m.impl("unsigned_fake_quant.out", &unsigned_fake_quant_out);
}

// Launchers of the cuda backend's kernels (wcc_cuda_kernels.cu). Plain C types only, so the
// kernels compile with nvcc alone and the torch binding (wcc_cuda_binding.cpp) needs no CUDA
// headers beyond the runtime's. Every launcher returns the launch's cudaError_t as an int.
//
// Layouts (all contiguous): x (N, C, H, W); the padded size is Hp x Wp (multiples of 2^levels),
// P = Hp * Wp wavelet positions per image in the same-size Mallat layout of wcc.haar.
// dtype codes: 0 float32, 1 float16, 2 bfloat16.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum WccDtype { WCC_F32 = 0, WCC_F16 = 1, WCC_BF16 = 2 };
// What wcc_haar_gather writes for each kept coefficient.
enum WccGatherMode {
  WCC_RAW = 0,        // the coefficient, in the input dtype
  WCC_QUANT = 1,      // its signed fake-quant value alpha * round(clamp(c/alpha) * n) / n, input dtype
  WCC_CODES = 2,      // the integer code round(clamp(c/alpha) * n), int8 (n <= 127)
  WCC_RAW_F32 = 3,    // the coefficient, float32
};

// How many channel chunks wcc_haar_energy splits the channels into (threads per tile).
int64_t wcc_energy_chunks(int64_t n, int64_t c, int h, int w, int levels);

// score (N, P) float32: per position, the channel energy sum_c coeff^2 of the J-level Haar
// transform of the zero-padded x. The transform itself is not stored. With chunks > 1, partial is
// a (chunks, N, P) float32 scratch buffer (the chunks' sums, added in a fixed order).
int wcc_haar_energy(const void* x, int dtype, float* score, float* partial, int64_t chunks, int64_t n, int64_t c,
                    int h, int w, int levels, void* stream);

// Per image the k largest scores: kept (N, k) int32 ascending, slot_map (N, P) int32 (the
// position's column among the kept ones, or -1). On exact ties the lower positions are kept.
int wcc_topk_select(const float* score, int64_t n, int64_t p, int64_t k, int32_t* kept,
                    int32_t* slot_map, void* stream);

// out (N, C, k): the kept coefficients of the transform of x (recomputed tile by tile, no full
// transform stored), written as `mode` says; alpha and qlevels (= 2^(bits-1) - 1) for quantized modes.
int wcc_haar_gather(const void* x, int dtype, const int32_t* slot_map, void* out, int mode, float alpha,
                    float qlevels, int64_t n, int64_t c, int h, int w, int levels, int64_t k, void* stream);

// out (N, M, k) float32 = A (M, K) @ B[n] (K, k) for the float dtypes (tensor cores for
// float16/bfloat16 where the GPU has them, float32 accumulation).
int wcc_gemm_kept(const void* a, const void* b, int dtype, float* out, int64_t n, int64_t m, int64_t kdim,
                  int64_t cols, void* stream);

// out (N, M, k) float32 = scale * (A (M, K) int8 @ B[n] (K, k) int8), exact int32 sums (IMMA tensor
// cores on sm_75+, dp4a before).
int wcc_gemm_kept_int8(const int8_t* a, const int8_t* b, float scale, float* out, int64_t n, int64_t m,
                       int64_t kdim, int64_t cols, void* stream);

// y (N, C, H, W) in `dtype`: crop(IWT(scatter(vals))) + bias. vals (N, C, k) float32 is read
// through slot_map (the scatter is never materialised); bias (C,) in `dtype` or null.
int wcc_scatter_ihaar(const float* vals, const int32_t* slot_map, const void* bias, void* y, int dtype,
                      int64_t n, int64_t c, int h, int w, int levels, int64_t k, void* stream);

// Elementwise fake-quant of raw kept coefficients (any float dtype) into `out` (same dtype).
int wcc_quantize(const void* raw, void* out, int dtype, int64_t numel, float alpha, float qlevels,
                 void* stream);

// Backward of the quantizer: g_in = g where |raw/alpha| <= 1 else 0 (float32, in place allowed);
// *galpha (float32, zeroed by the caller) += sum g * (outside ? sign(u) : q - u).
int wcc_quant_backward(const void* raw, int dtype, const float* g, float* g_in, float* galpha, int64_t numel,
                       float alpha, float qlevels, void* stream);

// Largest levels the kernels support (the per-thread tile is 2^levels x 2^levels).
int wcc_max_levels(void);

#ifdef __cplusplus
}
#endif

// Torch binding of the cuda backend: checks, allocations and the order of the kernel launches
// of wcc_cuda_kernels.cu (which knows nothing of torch). Registered as torch.ops.wcc_cuda.*.
//
// forward  : energy -> top-k (kept + slot map) -> gather of the kept coefficients (fake-quant or
//            int8 codes fused) -> kept-column GEMM -> scatter + inverse + crop + bias.
// backward : the transform of the output gradient gathered at the kept positions, two GEMMs on
//            the kept columns (cuBLAS through at::matmul; they are small: k columns), the
//            quantizer's straight-through mask and alpha gradient, scatter + inverse for dx.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "wcc_cuda_kernels.h"

namespace {

int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return WCC_F32;
    case at::kHalf: return WCC_F16;
    case at::kBFloat16: return WCC_BF16;
    default: TORCH_CHECK(false, "wcc_cuda: dtype ", t.scalar_type(), " is not supported (float32, float16, bfloat16)");
  }
  return -1;
}

void check(int err, const char* what) {
  TORCH_CHECK(err == 0, "wcc_cuda: launching ", what, " failed: CUDA error ", err);
}

void* stream() { return static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()); }

int64_t padded(int64_t size, int64_t levels) {
  const int64_t m = int64_t(1) << levels;
  return (size + m - 1) / m * m;
}

float qlevels(int64_t act_bits) { return act_bits ? float((int64_t(1) << (act_bits - 1)) - 1) : 1.0f; }

void check_common(const at::Tensor& x, int64_t levels, int64_t k) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4, "wcc_cuda: expected a CUDA tensor (N, C, H, W)");
  TORCH_CHECK(levels >= 1 && levels <= wcc_max_levels(), "wcc_cuda: levels must be in 1..", wcc_max_levels());
  const int64_t p = padded(x.size(2), levels) * padded(x.size(3), levels);
  TORCH_CHECK(k >= 1 && k <= p, "wcc_cuda: k=", k, " outside 1..", p);
  TORCH_CHECK(p < (int64_t(1) << 31), "wcc_cuda: too many wavelet positions per image for int32 indices");
}

// kept (N, k) int32 ascending and the slot map (N, P) int32 of x's k most energetic positions.
std::tuple<at::Tensor, at::Tensor> select_kept(const at::Tensor& x, int64_t levels, int64_t k) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t p = padded(h, levels) * padded(w, levels);
  auto i32 = x.options().dtype(at::kInt);
  at::Tensor score = at::empty({n, p}, x.options().dtype(at::kFloat));
  const int64_t chunks = wcc_energy_chunks(n, c, int(h), int(w), int(levels));
  at::Tensor partial = chunks > 1 ? at::empty({chunks, n, p}, score.options()) : at::Tensor();
  check(wcc_haar_energy(x.data_ptr(), dtype_code(x), score.data_ptr<float>(),
                        chunks > 1 ? partial.data_ptr<float>() : nullptr, chunks, n, c, int(h), int(w), int(levels),
                        stream()), "haar_energy");
  at::Tensor kept = at::empty({n, k}, i32);
  at::Tensor slot_map = at::empty({n, p}, i32);
  check(wcc_topk_select(score.data_ptr<float>(), n, p, k, kept.data_ptr<int32_t>(), slot_map.data_ptr<int32_t>(),
                        stream()), "topk_select");
  return {kept, slot_map};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> wcc_forward(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                           const c10::optional<at::Tensor>& bias_in, double alpha,
                                                           int64_t levels, int64_t k, int64_t act_bits, bool save,
                                                           const c10::optional<at::Tensor>& weight_codes,
                                                           double weight_step) {
  check_common(x_in, levels, k);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  TORCH_CHECK(weight.is_cuda() && weight.dim() == 2 && weight.size(1) == x.size(1) &&
                  weight.scalar_type() == x.scalar_type(),
              "wcc_cuda: weight must be a CUDA (C_out, C_in) tensor of the input's dtype");
  const int64_t n = x.size(0), c_in = x.size(1), h = x.size(2), w = x.size(3), c_out = weight.size(0);
  const int dt = dtype_code(x);
  at::Tensor bias;
  if (bias_in.has_value() && bias_in->defined()) {
    bias = bias_in->contiguous();
    TORCH_CHECK(bias.is_cuda() && bias.numel() == c_out && bias.scalar_type() == x.scalar_type(),
                "wcc_cuda: bias must be a CUDA (C_out,) tensor of the input's dtype");
  }
  auto [kept, slot_map] = select_kept(x, levels, k);
  const float a = float(alpha), qn = qlevels(act_bits);
  at::Tensor out_kept = at::empty({n, c_out, k}, x.options().dtype(at::kFloat));
  at::Tensor saved;
  const bool int8 = !save && act_bits > 0 && act_bits <= 8 && weight_codes.has_value() && weight_codes->defined();
  if (int8) {
    const at::Tensor codes = weight_codes->contiguous();
    TORCH_CHECK(codes.is_cuda() && codes.scalar_type() == at::kChar && codes.sizes() == weight.sizes(),
                "wcc_cuda: weight_codes must be CUDA int8 shaped like the weight");
    at::Tensor act_codes = at::empty({n, c_in, k}, x.options().dtype(at::kChar));
    check(wcc_haar_gather(x.data_ptr(), dt, slot_map.data_ptr<int32_t>(), act_codes.data_ptr(), WCC_CODES, a, qn, n,
                          c_in, int(h), int(w), int(levels), k, stream()), "haar_gather");
    // code_w * step_w * code_a * (alpha / n): the int32 sum is exact, one float scale at the end.
    const float scale = float(weight_step) * (a / qn);
    check(wcc_gemm_kept_int8(codes.data_ptr<int8_t>(), act_codes.data_ptr<int8_t>(), scale,
                             out_kept.data_ptr<float>(), n, c_out, c_in, k, stream()), "gemm_kept_int8");
  } else {
    at::Tensor cols = at::empty({n, c_in, k}, x.options());
    const int mode = save ? WCC_RAW : (act_bits ? WCC_QUANT : WCC_RAW);
    check(wcc_haar_gather(x.data_ptr(), dt, slot_map.data_ptr<int32_t>(), cols.data_ptr(), mode, a, qn, n, c_in,
                          int(h), int(w), int(levels), k, stream()), "haar_gather");
    at::Tensor operand = cols;
    if (save) {
      saved = cols;  // raw kept coefficients: the backward recomputes the quantizer from them
      if (act_bits) {
        operand = at::empty_like(cols);
        check(wcc_quantize(cols.data_ptr(), operand.data_ptr(), dt, cols.numel(), a, qn, stream()), "quantize");
      }
    }
    check(wcc_gemm_kept(weight.data_ptr(), operand.data_ptr(), dt, out_kept.data_ptr<float>(), n, c_out, c_in, k,
                        stream()), "gemm_kept");
  }
  at::Tensor y = at::empty({n, c_out, h, w}, x.options());
  check(wcc_scatter_ihaar(out_kept.data_ptr<float>(), slot_map.data_ptr<int32_t>(),
                          bias.defined() ? bias.data_ptr() : nullptr, y.data_ptr(), dt, n, c_out, int(h), int(w),
                          int(levels), k, stream()), "scatter_ihaar");
  if (!saved.defined()) saved = at::empty({0}, x.options());
  return {y, kept, saved};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> wcc_backward(const at::Tensor& gy_in, const at::Tensor& weight,
                                                            const at::Tensor& saved, const at::Tensor& kept,
                                                            double alpha, int64_t levels, int64_t act_bits,
                                                            bool need_x, bool need_w) {
  const c10::cuda::CUDAGuard guard(gy_in.device());
  const at::Tensor gy = gy_in.contiguous().to(saved.scalar_type());
  const int64_t n = gy.size(0), c_out = gy.size(1), h = gy.size(2), w = gy.size(3);
  const int64_t c_in = saved.size(1), k = kept.size(1);
  const int64_t p = padded(h, levels) * padded(w, levels);
  const float a = float(alpha), qn = qlevels(act_bits);
  // The slot map again, from the kept positions (cheaper to rebuild than to keep alive).
  at::Tensor slot_map = at::full({n, p}, -1, kept.options());
  slot_map.scatter_(1, kept.to(at::kLong), at::arange(k, kept.options()).unsqueeze(0).expand({n, k}).contiguous());
  at::Tensor g_kept = at::empty({n, c_out, k}, gy.options().dtype(at::kFloat));
  check(wcc_haar_gather(gy.data_ptr(), dtype_code(gy), slot_map.data_ptr<int32_t>(), g_kept.data_ptr(), WCC_RAW_F32,
                        1.0f, 1.0f, n, c_out, int(h), int(w), int(levels), k, stream()), "haar_gather(grad)");
  at::Tensor gx, gw, galpha;
  at::Tensor g_q = at::matmul(weight.to(at::kFloat).t(), g_kept);  // (N, C_in, k): dL/d(quantized kept)
  at::Tensor g_cols = g_q;
  at::Tensor q_cols = saved;
  if (act_bits) {
    g_cols = at::empty_like(g_q);
    galpha = at::zeros({}, g_q.options());
    check(wcc_quant_backward(saved.data_ptr(), dtype_code(saved), g_q.data_ptr<float>(), g_cols.data_ptr<float>(),
                             galpha.data_ptr<float>(), saved.numel(), a, qn, stream()), "quant_backward");
    if (need_w) {
      q_cols = at::empty_like(saved);
      check(wcc_quantize(saved.data_ptr(), q_cols.data_ptr(), dtype_code(saved), saved.numel(), a, qn, stream()),
            "quantize");
    }
  }
  if (need_x) {
    gx = at::empty({n, c_in, h, w}, gy.options());
    check(wcc_scatter_ihaar(g_cols.data_ptr<float>(), slot_map.data_ptr<int32_t>(), nullptr, gx.data_ptr(),
                            dtype_code(gy), n, c_in, int(h), int(w), int(levels), k, stream()), "scatter_ihaar(grad)");
  }
  if (need_w) {
    gw = at::matmul(g_kept, q_cols.to(at::kFloat).transpose(1, 2)).sum(0).to(weight.scalar_type());
  }
  return {gx, gw, galpha};
}

at::Tensor wcc_keep_indices(const at::Tensor& x_in, int64_t levels, int64_t k) {
  check_common(x_in, levels, k);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  dtype_code(x);
  auto [kept, slot_map] = select_kept(x, levels, k);
  return kept.to(at::kLong);
}

}  // namespace

TORCH_LIBRARY(wcc_cuda, m) {
  m.def("forward(Tensor x, Tensor weight, Tensor? bias, float alpha, int levels, int k, int act_bits, bool save,"
        " Tensor? weight_codes=None, float weight_step=1.0) -> (Tensor, Tensor, Tensor)");
  m.def("backward(Tensor gy, Tensor weight, Tensor saved, Tensor kept, float alpha, int levels, int act_bits,"
        " bool need_x, bool need_w) -> (Tensor, Tensor, Tensor)");
  m.def("keep_indices(Tensor x, int levels, int k) -> Tensor");
}

TORCH_LIBRARY_IMPL(wcc_cuda, CUDA, m) {
  m.impl("forward", &wcc_forward);
  m.impl("backward", &wcc_backward);
  m.impl("keep_indices", &wcc_keep_indices);
}

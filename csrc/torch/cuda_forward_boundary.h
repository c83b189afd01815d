// The torch side of the CUDA forward kernel, shared by the real CUDA registration (cuda/cuda_ops.cpp)
// and the emulated one (emulated/emulated_ops.cpp): what the kernel accepts beyond the common
// argument check, and the params it is launched with. Include it first: in emulated (host) mode
// the SIMT layer must come before any CUDA header.
#pragma once
#include "../swaa/cuda/forward_switch.h"
#include "arguments.h"
#include "paged_arguments.h"

#include <cmath>

namespace swaa::torch_boundary {

// A launch-ready forward: the tensors the params point into stay alive with it. With
// `plan.use_decode` the split-KV decode kernel runs on `decode` (params plus the split
// buffers), else the tile kernel on `decode`'s AttentionParams part.
struct CudaForward {
  at::Tensor q, k, v, full_from, out, lse, o_partial, lse_partial;
  cuda::Dtype dtype;
  cuda::DecodePlan plan;
  DecodeParams decode{};
  const AttentionParams& params() const { return decode; }
};

// How the boundary picks the forward kernel: decode_plan.h's rule for the device's SM count;
// `num_splits` > 0 forces the decode kernel with that many splits (the emulated tests' knob).
struct KernelChoice {
  int64_t num_sms;
  int64_t num_splits = 0;
};

inline cuda::Dtype kernel_dtype(const at::Tensor& q, const char* backend) {
  TORCH_CHECK_TYPE(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16,
                   "q, k and v must be float16 or bfloat16 on ", backend, ", got ",
                   q.scalar_type());
  return q.scalar_type() == at::kHalf ? cuda::Dtype::fp16 : cuda::Dtype::bf16;
}

// cp.async moves 16-byte chunks, so the base pointer and the batch/head/row strides must keep
// every row 16-byte aligned.
inline bool rows_aligned_for_kernel(const at::Tensor& t) {
  constexpr int64_t kAlignBytes = 16;
  const int64_t elems = kAlignBytes / t.element_size();
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % kAlignBytes == 0 &&
         t.stride(0) % elems == 0 && t.stride(1) % elems == 0 && t.stride(2) % elems == 0;
}
// The tile loader addresses a row in 32 bits: row index times the row stride in bytes, which
// must stay below 2^31 (tile_load.cuh, TileCopy).
inline bool row_stride_fits_loader(const at::Tensor& t) {
  return t.stride(2) * t.element_size() < (int64_t(1) << 31);
}
// Views that are not (rare: offsets into a wider buffer, rows of more than 2 GiB apart) get one
// copy. clone, not contiguous(): a contiguous tensor can still start at a misaligned address.
inline at::Tensor aligned_for_kernel(const at::Tensor& t) {
  return rows_aligned_for_kernel(t) && row_stride_fits_loader(t)
             ? t
             : t.clone(at::MemoryFormat::Contiguous);
}

// The checks every CUDA kernel (forward and backward) needs beyond the common argument check
// (check_attention_inputs / check_varlen_inputs / checked_paged, done by the caller); `batch`:
// batch rows (`packed` false) or sequences. Returns the kernel's element type.
inline cuda::Dtype check_cuda_kernel_inputs(const at::Tensor& q, double scale, const char* backend,
                                            int64_t batch, bool packed) {
  const cuda::Dtype dtype = kernel_dtype(q, backend);
  TORCH_CHECK_VALUE(cuda::forward_supports(dtype, q.size(-1)), "head_dim must be 64 or 128 on ",
                    backend, ", got ", q.size(-1));
  // The grids are (blocks, heads, batch or sequences); CUDA caps the last two at 65535.
  constexpr int64_t kMaxGridYZ = 65535;
  const int64_t heads = q.size(1);
  TORCH_CHECK_VALUE(batch <= kMaxGridYZ && heads <= kMaxGridYZ, packed ? "sequences" : "batch",
                    " and q's heads must be <= ", kMaxGridYZ, " on ", backend, ", got ", batch,
                    " and ", heads);
  // The kernel scales masked (-inf) scores: a zero, negative or NaN scale would turn them into NaN.
  TORCH_CHECK_VALUE(std::isfinite(scale) && scale > 0, "scale must be a positive finite number on ",
                    backend, ", got ", scale);
  return dtype;
}

// The decode plan and, for several splits, the float32 buffers of the partial results (through
// the caching allocator: no device allocation per call once warm).
inline void plan_kernel(CudaForward& f, const at::Tensor& q, const KernelChoice& choice) {
  f.plan = cuda::plan_decode(f.decode, choice.num_sms);
  if (choice.num_splits > 0) {
    f.plan.use_decode = true;
    f.plan.row_groups = ceil_div(f.decode.group_size() * f.decode.len_q, cuda::kDecodeBlockRows);
    f.plan.num_splits = choice.num_splits;
  }
  if (!f.plan.use_decode) return;
  f.decode.num_splits = f.plan.num_splits;
  f.decode.row_groups = f.plan.row_groups;
  f.decode.partial_split_stride = f.lse.numel();
  if (f.plan.num_splits == 1) return;
  const auto options = q.options().dtype(at::kFloat);
  f.o_partial = at::empty({f.plan.num_splits, f.lse.numel(), q.size(-1)}, options);
  f.lse_partial = at::empty({f.plan.num_splits, f.lse.numel()}, options);
  f.decode.o_partial = f.o_partial.data_ptr<float>();
  f.decode.lse_partial = f.lse_partial.data_ptr<float>();
}

// After the layout's argument check; `varlen` null: dense.
inline CudaForward prepare_cuda_forward(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, std::optional<int64_t> window,
                                        int64_t sinks, const std::optional<at::Tensor>& full_from,
                                        double scale, const char* backend, const Varlen* varlen,
                                        const KernelChoice& choice) {
  CudaForward f;
  f.dtype = check_cuda_kernel_inputs(q, scale, backend, batch_size(q, varlen), varlen != nullptr);
  f.q = aligned_for_kernel(heads_rows(q, varlen));
  f.k = aligned_for_kernel(heads_rows(k, varlen));
  f.v = aligned_for_kernel(heads_rows(v, varlen));
  f.out = at::empty(q.sizes(), q.options());
  f.lse = at::empty(lse_shape(q, varlen), q.options().dtype(at::kFloat));
  f.full_from = normalized_full_from(full_from);
  AttentionParams& params = f.decode;
  params = make_params(f.q, f.k, f.v, heads_rows(f.out, varlen), lse_rows(f.lse, varlen), window,
                       sinks, f.full_from, scale);
  if (varlen) apply_varlen(params, *varlen);
  plan_kernel(f, q, choice);
  return f;
}

// The paged forward (after checked_paged) into `out` (q's shape and dtype, any strides with a
// contiguous last dim) and `lse` ((Hq, total_q) float32, contiguous; undefined: a scratch one,
// since the kernels always write it). The caches are read where they are, so they must keep
// every row 16-byte aligned (cp.async): no copy of a cache is ever made.
inline CudaForward prepare_cuda_paged(const at::Tensor& q, const at::Tensor& k_cache,
                                      const at::Tensor& v_cache, const Paged& paged,
                                      std::optional<int64_t> window, int64_t sinks,
                                      const std::optional<at::Tensor>& full_from, double scale,
                                      const at::Tensor& out, const at::Tensor& lse,
                                      const char* backend, const KernelChoice& choice) {
  CudaForward f;
  f.dtype = check_cuda_kernel_inputs(q, scale, backend, paged.sequences(), true);
  for (const auto& [name, cache] : {std::pair{"k_cache", &k_cache}, {"v_cache", &v_cache}}) {
    TORCH_CHECK_VALUE(rows_aligned_for_kernel(*cache), name,
                      " must start at a 16-byte aligned address with page, head and row strides ",
                      "of whole 16-byte chunks on ", backend, ", got strides ", cache->strides());
  }
  // The kernels address V with K's strides (tile_load.cuh, PagedKVSource), and a row within a
  // page in 32 bits.
  TORCH_CHECK_VALUE(k_cache.strides() == v_cache.strides(), "k_cache and v_cache must have the ",
                    "same strides on ", backend, " (e.g. the key and value halves of one cache), ",
                    "got ", k_cache.strides(), " and ", v_cache.strides());
  TORCH_CHECK_VALUE(k_cache.stride(1) >= 0 && k_cache.stride(2) >= 0 &&
                        k_cache.stride(1) * k_cache.size(1) + k_cache.stride(2) * paged.page_size <
                            (int64_t(1) << 31),
                    "a page of k_cache must span fewer than 2^31 elements on ", backend,
                    ", got strides ", k_cache.strides());
  constexpr bool packed = true;
  f.q = aligned_for_kernel(heads_rows(q, packed));
  f.k = k_cache, f.v = v_cache;
  f.out = out;
  f.lse = lse.defined() ? lse : at::empty(lse_shape(q, packed), q.options().dtype(at::kFloat));
  f.full_from = normalized_full_from(full_from);
  AttentionParams& params = f.decode;
  params = make_params(f.q, k_cache, v_cache, heads_rows(out, packed), lse_rows(f.lse, packed),
                       window, sinks, f.full_from, scale);
  apply_paged(params, paged, window);
  plan_kernel(f, q, choice);
  return f;
}

}  // namespace swaa::torch_boundary

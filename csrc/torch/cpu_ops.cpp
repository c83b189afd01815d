// CPU registrations of swaa_ext::fwd / bwd and fwd_varlen / bwd_varlen: check, normalise, fill
// params, run. Both layouts share one path: the varlen one only adds cu_seqlens to the params.
#include <torch/library.h>

#include <cstring>

#include "../swaa/cpu/amx_tiles.h"
#include "../swaa/cpu/kernels.h"
#include "arguments.h"
#include "paged_arguments.h"

namespace swaa::torch_boundary {
namespace {

constexpr int64_t kCpuMaxHeadDim = 256;

// The CPU kernels compute in float32 (float64 for float64 inputs); bf16/fp16 inputs are
// converted once, which costs O(L * D) against the kernels' O(L * (window + sinks) * D).
at::ScalarType compute_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// After the layout's argument check. `varlen` null: dense.
std::tuple<at::Tensor, at::Tensor> run_forward(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, std::optional<int64_t> window,
                                               int64_t sinks,
                                               const std::optional<at::Tensor>& full_from,
                                               double scale, const Varlen* varlen) {
  check_head_dim(q, kCpuMaxHeadDim, "CPU");
  const at::ScalarType dtype = compute_dtype(q);
  const at::Tensor qc = q.to(dtype), kc = k.to(dtype), vc = v.to(dtype);
  at::Tensor out = at::empty(q.sizes(), q.options().dtype(dtype));
  at::Tensor lse = at::empty(lse_shape(q, varlen), q.options().dtype(dtype));
  const at::Tensor ff = normalized_full_from(full_from);
  AttentionParams p = make_params(heads_rows(qc, varlen), heads_rows(kc, varlen),
                                  heads_rows(vc, varlen), heads_rows(out, varlen),
                                  lse_rows(lse, varlen), window, sinks, ff, scale);
  if (varlen) apply_varlen(p, *varlen);
  if (dtype == at::kDouble) {
    cpu::forward<double>(p);
  } else {
    cpu::forward<float>(p);
  }
  return {out.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> run_backward(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
    double scale, const Varlen* varlen) {
  check_head_dim(q, kCpuMaxHeadDim, "CPU");
  check_backward_inputs(grad_out, grad_lse, q, out, lse, lse_shape(q, varlen));
  const at::ScalarType dtype = compute_dtype(q);
  const at::Tensor qc = q.to(dtype), kc = k.to(dtype), vc = v.to(dtype);
  // The kernels need a contiguous last dim; autograd may hand us any layout.
  const at::Tensor d_o = grad_out.to(dtype).contiguous();
  // delta = rowsum(dO * O) - dLSE: the softmax backward's per-row term, in the LSE's layout.
  at::Tensor delta = (d_o * out.to(dtype)).sum(-1);
  if (varlen) delta = delta.t();  // (total_q, Hq) -> (Hq, total_q)
  if (grad_lse.has_value()) delta = delta - grad_lse->to(dtype);
  delta = delta.contiguous();
  const at::Tensor lse_c = lse.to(dtype).contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options().dtype(dtype));
  at::Tensor dk = at::empty(k.sizes(), k.options().dtype(dtype));
  at::Tensor dv = at::empty(v.sizes(), v.options().dtype(dtype));
  const at::Tensor ff = normalized_full_from(full_from);

  AttentionBackwardParams p{};
  static_cast<AttentionParams&>(p) =
      make_params(heads_rows(qc, varlen), heads_rows(kc, varlen), heads_rows(vc, varlen),
                  heads_rows(dq, varlen), lse_rows(lse_c, varlen), window, sinks, ff, scale);
  if (varlen) apply_varlen(p, *varlen);
  set_backward_tensors(p, heads_rows(d_o, varlen), delta, heads_rows(dq, varlen),
                       heads_rows(dk, varlen), heads_rows(dv, varlen));
  if (dtype == at::kDouble) {
    cpu::backward<double>(p);
  } else {
    cpu::backward<float>(p);
  }
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, std::optional<int64_t> window,
                                               int64_t sinks,
                                               const std::optional<at::Tensor>& full_from,
                                               double scale) {
  check_attention_inputs(q, k, v, window, sinks, full_from);
  return run_forward(q, k, v, window, sinks, full_from, scale, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
    double scale) {
  check_attention_inputs(q, k, v, window, sinks, full_from);
  return run_backward(grad_out, grad_lse, q, k, v, out, lse, window, sinks, full_from, scale,
                      nullptr);
}

std::tuple<at::Tensor, at::Tensor> forward_varlen_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cu_seqlens_q,
    const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
    std::optional<int64_t> window, int64_t sinks, const std::optional<at::Tensor>& full_from,
    double scale) {
  const Varlen varlen = checked_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                       max_seqlen_k, window, sinks, full_from);
  return run_forward(q, k, v, window, sinks, full_from, scale, &varlen);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_varlen_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q,
    int64_t max_seqlen_k, std::optional<int64_t> window, int64_t sinks,
    const std::optional<at::Tensor>& full_from, double scale) {
  const Varlen varlen = checked_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                       max_seqlen_k, window, sinks, full_from);
  return run_backward(grad_out, grad_lse, q, k, v, out, lse, window, sinks, full_from, scale,
                      &varlen);
}

// Whether kv_layout asks for the amx layout of bf16 pages (cpu/amx_tiles.h), after checking
// that these caches can be in it and this CPU can read it.
bool amx_layout(const std::string& kv_layout, const at::Tensor& k_cache,
                const at::Tensor& v_cache) {
  if (kv_layout == "rows") return false;
  TORCH_CHECK_VALUE(kv_layout == "amx", "kv_layout must be 'rows' or 'amx', got '", kv_layout,
                    "'");
  TORCH_CHECK_VALUE(cpu::amx_usable(), "kv_layout='amx' needs a CPU with AMX-BF16 that this ",
                    "process may use (and SWAA_CPU_ISA not capping it); see swaa_ext.cpu_has_amx()");
  TORCH_CHECK_TYPE(k_cache.scalar_type() == at::kBFloat16, "kv_layout='amx' takes bfloat16 ",
                   "caches, got k_cache ", k_cache.scalar_type());
  const int64_t d = k_cache.size(3), page_size = k_cache.size(2);
  TORCH_CHECK_VALUE(cpu::amx_head_dim(d), "kv_layout='amx' needs a head dim that is a multiple ",
                    "of 32 and at most 256, got ", d);
  TORCH_CHECK_VALUE(page_size % 32 == 0, "kv_layout='amx' needs a page size that is a multiple ",
                    "of 32, got ", page_size);
  for (const auto& [name, cache] : {std::pair{"k_cache", &k_cache}, {"v_cache", &v_cache}}) {
    TORCH_CHECK_VALUE(cache->stride(3) == 1 && cache->stride(2) == d, "kv_layout='amx' needs ",
                      name, "'s pages contiguous (strides (..., head_dim, 1)), got strides ",
                      cache->strides());
  }
  return true;
}

// Forward only (serving): keys and values stay in their pages, in the cache's dtype; a bf16 /
// fp16 cache is converted tile by tile as the kernel visits it, never as a whole. Writes `out`
// (q's shape and dtype, any strides with a contiguous last dim, e.g. vLLM's output buffer) and,
// when given, `lse` (Hq, total_q) in the compute dtype.
void run_paged(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
               const at::Tensor& block_table, const at::Tensor& cu_seqlens_q,
               const at::Tensor& seqused_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
               std::optional<int64_t> window, int64_t sinks,
               const std::optional<at::Tensor>& full_from, double scale, const at::Tensor& out,
               const std::optional<at::Tensor>& lse, const std::string& kv_layout) {
  const Paged paged = checked_paged(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k,
                                    max_seqlen_q, max_seqlen_k, window, sinks, full_from);
  const bool amx = amx_layout(kv_layout, k_cache, v_cache);
  check_head_dim(q, kCpuMaxHeadDim, "CPU");
  constexpr bool packed = true;
  check_paged_outputs(q, out, lse, compute_dtype(q));
  at::Tensor lse_view;  // undefined unless asked for: the kernel skips it
  if (lse.has_value()) lse_view = lse_rows(*lse, packed);
  const at::Tensor ff = normalized_full_from(full_from);
  AttentionParams p = make_params(PackedHeadsRows{q}, k_cache, v_cache, PackedHeadsRows{out},
                                  lse_view, window, sinks, ff, scale);
  apply_paged(p, paged, window);
  p.amx_layout = amx;
  switch (q.scalar_type()) {
    case at::kDouble: cpu::forward<double>(p); break;
    case at::kFloat: cpu::forward<float>(p); break;
    case at::kBFloat16: cpu::forward<cpu::bf16>(p); break;
    case at::kHalf: cpu::forward<cpu::fp16>(p); break;
    default: TORCH_CHECK_TYPE(false, "unsupported dtype ", q.scalar_type());
  }
}

std::tuple<at::Tensor, at::Tensor> forward_paged_cpu(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const at::Tensor& block_table, const at::Tensor& cu_seqlens_q, const at::Tensor& seqused_k,
    int64_t max_seqlen_q, int64_t max_seqlen_k, std::optional<int64_t> window, int64_t sinks,
    const std::optional<at::Tensor>& full_from, double scale, std::string_view kv_layout) {
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty(lse_shape(q, true), q.options().dtype(compute_dtype(q)));
  run_paged(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k, max_seqlen_q,
            max_seqlen_k, window, sinks, full_from, scale, out, lse, std::string(kv_layout));
  return {out, lse};
}

void forward_paged_out_cpu(const at::Tensor& q, const at::Tensor& k_cache,
                           const at::Tensor& v_cache, const at::Tensor& block_table,
                           const at::Tensor& cu_seqlens_q, const at::Tensor& seqused_k,
                           int64_t max_seqlen_q, int64_t max_seqlen_k,
                           std::optional<int64_t> window, int64_t sinks,
                           const std::optional<at::Tensor>& full_from, double scale,
                           const at::Tensor& out, const std::optional<at::Tensor>& lse,
                           std::string_view kv_layout) {
  run_paged(q, k_cache, v_cache, block_table, cu_seqlens_q, seqused_k, max_seqlen_q,
            max_seqlen_k, window, sinks, full_from, scale, out, lse, std::string(kv_layout));
}

// Stores token t's key and value rows (T, Hkv, D) at slot slot_mapping[t] = page * page_size +
// row of k_cache / v_cache (num_pages, Hkv, page_size, D); slots < 0 (padding) are skipped.
// One pass of row copies in the cache's own dtype (no conversion, no temporaries), or of
// element stores into the amx layout.
void write_paged_cache_cpu(const at::Tensor& key, const at::Tensor& value,
                           const at::Tensor& k_cache, const at::Tensor& v_cache,
                           const at::Tensor& slot_mapping, std::string_view kv_layout) {
  TORCH_CHECK_VALUE(key.dim() == 3, "key must have 3 dims (tokens, heads, head_dim), got shape ",
                    key.sizes());
  TORCH_CHECK_VALUE(key.sizes() == value.sizes() && value.scalar_type() == key.scalar_type(),
                    "key and value must have one shape and dtype, got ", key.sizes(), " ",
                    key.scalar_type(), " and ", value.sizes(), " ", value.scalar_type());
  TORCH_CHECK_VALUE(k_cache.dim() != 4 || key.size(1) == k_cache.size(1), "key must have ",
                    "k_cache's ", k_cache.size(1), " heads, got ", key.size(1));
  check_qkv(key.unsqueeze(2), k_cache, v_cache, 4, "(num_pages, heads, page_size, head_dim)", 1,
            "k_cache", "v_cache", "key");
  TORCH_CHECK_VALUE(value.stride(2) == 1 || value.size(2) <= 1,
                    "value must have a contiguous last dim, got strides ", value.strides());
  TORCH_CHECK_TYPE(slot_mapping.scalar_type() == at::kLong || slot_mapping.scalar_type() == at::kInt,
                   "slot_mapping must be an int64 or int32 tensor, got ",
                   slot_mapping.scalar_type());
  TORCH_CHECK_VALUE(slot_mapping.dim() == 1 && slot_mapping.size(0) >= key.size(0) &&
                        slot_mapping.device() == key.device(),
                    "slot_mapping must be 1-D with at least one slot per token (", key.size(0),
                    ") on key's device, got ", slot_mapping.sizes(), " on ",
                    slot_mapping.device());
  const bool amx = amx_layout(std::string(kv_layout), k_cache, v_cache);
  const at::Tensor slots = slot_mapping.to(at::kLong).contiguous();
  const int64_t* slot = slots.data_ptr<int64_t>();
  const int64_t page_size = k_cache.size(2), capacity = k_cache.size(0) * page_size;
  const int64_t heads = key.size(1), row_bytes = key.size(2) * key.element_size();
  const int64_t es = key.element_size();
  auto* kc = static_cast<char*>(k_cache.data_ptr());
  auto* vc = static_cast<char*>(v_cache.data_ptr());
  const auto* kin = static_cast<const char*>(key.data_ptr());
  const auto* vin = static_cast<const char*>(value.data_ptr());
  for (int64_t t = 0; t < key.size(0); ++t) {
    if (slot[t] < 0) continue;
    TORCH_CHECK_VALUE(slot[t] < capacity, "slot_mapping[", t, "] = ", slot[t],
                      " is past the cache's ", capacity, " slots");
    const int64_t page = slot[t] / page_size, row = slot[t] % page_size;
    if (amx) {
      const int64_t d = key.size(2);
      for (int64_t h = 0; h < heads; ++h) {
        auto* kp = reinterpret_cast<uint16_t*>(kc) + page * k_cache.stride(0) + h * k_cache.stride(1);
        auto* vp = reinterpret_cast<uint16_t*>(vc) + page * v_cache.stride(0) + h * v_cache.stride(1);
        const auto* kr = reinterpret_cast<const uint16_t*>(kin) + t * key.stride(0) + h * key.stride(1);
        const auto* vr = reinterpret_cast<const uint16_t*>(vin) + t * value.stride(0) + h * value.stride(1);
        for (int64_t e = 0; e < d; ++e) {
          kp[cpu::amx_key_offset(row, e, d)] = kr[e];
          vp[cpu::amx_value_offset(row, e, page_size)] = vr[e];
        }
      }
      continue;
    }
    for (int64_t h = 0; h < heads; ++h) {
      std::memcpy(kc + (page * k_cache.stride(0) + h * k_cache.stride(1) + row * k_cache.stride(2)) * es,
                  kin + (t * key.stride(0) + h * key.stride(1)) * es, row_bytes);
      std::memcpy(vc + (page * v_cache.stride(0) + h * v_cache.stride(1) + row * v_cache.stride(2)) * es,
                  vin + (t * value.stride(0) + h * value.stride(1)) * es, row_bytes);
    }
  }
}

}  // namespace

// Whether this process can use the AMX tile products (kv_layout="amx", the bf16 fast path).
TORCH_LIBRARY_FRAGMENT(swaa_ext, m) {
  m.def("cpu_has_amx() -> bool", [] { return cpu::amx_usable(); });
}

TORCH_LIBRARY_IMPL(swaa_ext, CPU, m) {
  m.impl("fwd_paged", &forward_paged_cpu);
  m.impl("fwd_paged_out", &forward_paged_out_cpu);
  m.impl("write_paged_cache", &write_paged_cache_cpu);
  m.impl("fwd", &forward_cpu);
  m.impl("bwd", &backward_cpu);
  m.impl("fwd_varlen", &forward_varlen_cpu);
  m.impl("bwd_varlen", &backward_varlen_cpu);
}

}  // namespace swaa::torch_boundary

// The paged layout's argument check and params (swaa_ext::fwd_paged): queries packed as in the
// varlen layout, keys and values in caches of pages read where they are, through a block table
// (vLLM's, FlashAttention's flash_attn_with_kvcache). On the CPU (the CPU kernels and the
// emulated CUDA ones) the values of every index tensor are read and checked; on a GPU they are
// trusted, as the varlen op trusts cu_seqlens there: reading them would sync.
#pragma once
#include "arguments.h"

namespace swaa::torch_boundary {

struct Paged {
  at::Tensor cu_seqlens_q, block_table;
  // Prefix sums of seqused_k, which the kernels read for the sequences' key counts: on the host
  // for CPU tensors, else on the device (computed there, no sync).
  std::vector<int32_t> cu_seqlens_k;
  at::Tensor cu_seqlens_k_device;
  int64_t max_seqlen_q, max_seqlen_k, page_size;
  int64_t sequences() const { return cu_seqlens_q.size(0) - 1; }
  const int32_t* cu_seqlens_k_data() const {
    return cu_seqlens_k_device.defined() ? cu_seqlens_k_device.data_ptr<int32_t>()
                                         : cu_seqlens_k.data();
  }
};

// q (total_q, Hq, D); k_cache/v_cache (num_pages, Hkv, page_size, D), last dim contiguous (any
// other strides, e.g. the halves of vLLM's (num_pages, Hkv, page_size, 2 * D) cache);
// block_table int32 (n, max_pages); cu_seqlens_q int32 (n + 1,); seqused_k int32 (n,).
inline Paged checked_paged(const at::Tensor& q, const at::Tensor& k_cache,
                           const at::Tensor& v_cache, const at::Tensor& block_table,
                           const at::Tensor& cu_seqlens_q, const at::Tensor& seqused_k,
                           int64_t max_seqlen_q, int64_t max_seqlen_k,
                           std::optional<int64_t> window, int64_t sinks,
                           const std::optional<at::Tensor>& full_from) {
  TORCH_CHECK_VALUE(q.dim() == 3, "q must have 3 dims (total_q, heads, head_dim), got shape ",
                    q.sizes());
  check_qkv(q.unsqueeze(2), k_cache, v_cache, 4, "(num_pages, heads, page_size, head_dim)", 1,
            "k_cache", "v_cache");
  for (const auto& [name, t, dims, shape] :
       {std::tuple{"block_table", &block_table, 2, "(sequences, max_pages)"},
        {"cu_seqlens_q", &cu_seqlens_q, 1, "(sequences + 1,)"},
        {"seqused_k", &seqused_k, 1, "(sequences,)"}}) {
    TORCH_CHECK_TYPE(t->scalar_type() == at::kInt, name, " must be an int32 tensor, got ",
                     t->scalar_type());
    TORCH_CHECK_VALUE(t->dim() == dims, name, " must have shape ", shape, ", got ", t->sizes());
    TORCH_CHECK_VALUE(t->device() == q.device(), name, " must be on q's device ", q.device(),
                      ", got ", t->device());
  }
  const int64_t n = cu_seqlens_q.size(0) - 1;
  TORCH_CHECK_VALUE(n >= 0, "cu_seqlens_q must have shape (sequences + 1,), got ",
                    cu_seqlens_q.sizes());
  TORCH_CHECK_VALUE(seqused_k.size(0) == n && block_table.size(0) == n,
                    "seqused_k and block_table must have one row per sequence (", n,
                    ", from cu_seqlens_q), got ", seqused_k.sizes(), " and ", block_table.sizes());
  TORCH_CHECK_VALUE(max_seqlen_q >= 0, "max_seqlen_q must be >= 0, got ", max_seqlen_q);
  TORCH_CHECK_VALUE(max_seqlen_k >= 0, "max_seqlen_k must be >= 0, got ", max_seqlen_k);
  check_rule(q, n, "sequences", window, sinks, full_from);

  const at::Tensor cq = cu_seqlens_q.contiguous(), used = seqused_k.contiguous();
  const at::Tensor table = block_table.contiguous();
  const int64_t page_size = k_cache.size(2);
  if (!q.device().is_cpu()) {
    at::Tensor cu_k = at::zeros({n + 1}, used.options());
    if (n > 0) cu_k.slice(0, 1).copy_(used.cumsum(0, at::kInt));
    return {cq, table, {}, cu_k, max_seqlen_q, max_seqlen_k, page_size};
  }
  const int32_t* cuq = cq.data_ptr<int32_t>();
  const int32_t* lens = used.data_ptr<int32_t>();
  const int32_t* pages = table.data_ptr<int32_t>();
  const int64_t num_pages = k_cache.size(0), max_pages = table.size(1);
  TORCH_CHECK_VALUE(n == 0 || cuq[0] == 0, "cu_seqlens_q must start at 0, got ", cuq[0]);
  TORCH_CHECK_VALUE(cuq[n] == q.size(0), "cu_seqlens_q must end at q.size(0) = ", q.size(0),
                    ", got ", cuq[n]);
  std::vector<int32_t> cu_k(n + 1, 0);
  int32_t* cuk = cu_k.data();
  for (int64_t s = 0; s < n; ++s) {
    const int64_t len_q = cuq[s + 1] - cuq[s], len_k = lens[s];
    TORCH_CHECK_VALUE(len_q >= 0 && len_q <= max_seqlen_q,
                      "cu_seqlens_q must be non-decreasing with lengths <= max_seqlen_q (",
                      max_seqlen_q, "), got ", len_q, " at sequence ", s);
    TORCH_CHECK_VALUE(len_k >= len_q && len_k <= max_seqlen_k, "seqused_k must be >= the ",
                      "sequence's queries and <= max_seqlen_k (", max_seqlen_k, "), got ", len_k,
                      " for ", len_q, " queries at sequence ", s);
    const int64_t used_pages = (len_k + page_size - 1) / page_size;
    TORCH_CHECK_VALUE(used_pages <= max_pages, "block_table has ", max_pages,
                      " pages per sequence; sequence ", s, " needs ", used_pages, " for ", len_k,
                      " keys of ", page_size, " per page");
    for (int64_t i = 0; i < used_pages; ++i) {
      const int32_t page = pages[s * max_pages + i];
      TORCH_CHECK_VALUE(page >= 0 && page < num_pages, "block_table[", s, ", ", i, "] = ", page,
                        " is not a page of k_cache (", num_pages, " pages)");
    }
    TORCH_CHECK_VALUE(cuk[s] + len_k <= std::numeric_limits<int32_t>::max(),
                      "seqused_k sums past int32");
    cuk[s + 1] = static_cast<int32_t>(cuk[s] + len_k);
  }
  return {cq, table, std::move(cu_k), at::Tensor(), max_seqlen_q, max_seqlen_k, page_size};
}

// The caller's buffers of fwd_paged_out: `out` like q with a contiguous last dim (any other
// strides, e.g. vLLM's output buffer), `lse` (when given) (Hq, total_q), contiguous, lse_dtype.
inline void check_paged_outputs(const at::Tensor& q, const at::Tensor& out,
                                const std::optional<at::Tensor>& lse, at::ScalarType lse_dtype) {
  TORCH_CHECK_VALUE(out.sizes() == q.sizes() && out.scalar_type() == q.scalar_type() &&
                        out.device() == q.device(),
                    "out must have q's shape ", q.sizes(), ", dtype ", q.scalar_type(),
                    " and device, got ", out.sizes(), " ", out.scalar_type(), " on ",
                    out.device());
  TORCH_CHECK_VALUE(out.size(2) <= 1 || out.stride(2) == 1,
                    "out must have a contiguous last dim, got strides ", out.strides());
  if (!lse.has_value()) return;
  const auto shape = lse_shape(q, true);
  TORCH_CHECK_VALUE(lse->sizes() == at::IntArrayRef(shape) && lse->scalar_type() == lse_dtype &&
                        lse->is_contiguous() && lse->device() == q.device(),
                    "lse must be a contiguous ", lse_dtype, " tensor of shape (heads, total_q)",
                    " = ", at::IntArrayRef(shape), " on q's device, got ", lse->sizes(), " ",
                    lse->scalar_type(), " on ", lse->device());
}

// Params filled by make_params from heads_rows views of q / out (varlen) and the caches as
// they are: pages take the batch axis, the block table finds them (params.h). The window is
// encoded against max_seqlen_k, not a page's length.
inline void apply_paged(AttentionParams& p, const Paged& paged, std::optional<int64_t> window) {
  p.cu_seqlens_q = paged.cu_seqlens_q.data_ptr<int32_t>();
  p.cu_seqlens_k = paged.cu_seqlens_k_data();
  p.block_table = paged.block_table.data_ptr<int32_t>();
  p.block_table_stride = paged.block_table.size(1);
  p.page_size = paged.page_size;
  p.batch = paged.sequences();
  p.len_q = paged.max_seqlen_q, p.len_k = paged.max_seqlen_k;
  p.window = kernel_window(window, p.len_k);
  p.q_batch_stride = p.o_batch_stride = p.lse_batch_stride = 0;
}

}  // namespace swaa::torch_boundary

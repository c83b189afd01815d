// The op schemas, in one place (extension-cpp style). Each device registers its kernels in its
// own file; autograd and fake (meta) implementations live in swaa_ext/ops.py.
#include <Python.h>
#include <torch/library.h>

// `import swaa_ext._C` loads this library, which runs the registrations below.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(swaa_ext, m) {
  // Returns (out, lse). window None = full causal; full_from: (B,) int64 absolute positions.
  m.def(
      "fwd(Tensor q, Tensor k, Tensor v, int? window, int sinks, Tensor? full_from, float scale)"
      " -> (Tensor, Tensor)");
  // Returns (dq, dk, dv). grad_lse is None unless the caller used the LSE.
  m.def(
      "bwd(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, Tensor out,"
      " Tensor lse, int? window, int sinks, Tensor? full_from, float scale)"
      " -> (Tensor, Tensor, Tensor)");
  // The varlen layout (FlashAttention's flash_attn_varlen_func): q (total_q, Hq, D), k/v
  // (total_k, Hkv, D), cu_seqlens int32 (n + 1,); returns (out like q, lse (Hq, total_q)).
  // full_from: (n,) int64, positions in each sequence's own keys.
  m.def(
      "fwd_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k,"
      " int max_seqlen_q, int max_seqlen_k, int? window, int sinks, Tensor? full_from,"
      " float scale) -> (Tensor, Tensor)");
  m.def(
      "bwd_varlen(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, Tensor out,"
      " Tensor lse, Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q,"
      " int max_seqlen_k, int? window, int sinks, Tensor? full_from, float scale)"
      " -> (Tensor, Tensor, Tensor)");
  // The paged layout (forward only, CPU): q (total_q, Hq, D) as in varlen; k_cache / v_cache
  // (num_pages, Hkv, page_size, D) read in place through block_table int32 (n, max_pages);
  // seqused_k int32 (n,) keys per sequence. Returns (out like q, lse (Hq, total_q)).
  m.def(
      "fwd_paged(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table,"
      " Tensor cu_seqlens_q, Tensor seqused_k, int max_seqlen_q, int max_seqlen_k, int? window,"
      " int sinks, Tensor? full_from, float scale, str kv_layout=\"rows\") -> (Tensor, Tensor)");
  // The same into the caller's buffers (a serving engine's output tensor); the LSE only when
  // lse is given.
  m.def(
      "fwd_paged_out(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table,"
      " Tensor cu_seqlens_q, Tensor seqused_k, int max_seqlen_q, int max_seqlen_k, int? window,"
      " int sinks, Tensor? full_from, float scale, Tensor(a!) out, Tensor(b!)? lse,"
      " str kv_layout=\"rows\") -> ()");
  // Stores key / value rows (T, Hkv, D) into k_cache / v_cache (num_pages, Hkv, page_size, D)
  // at slot_mapping[t] = page * page_size + row (int64 or int32; < 0: padding, skipped).
  // kv_layout (also of the two ops above): "rows" (row j % page_size of the page) or "amx"
  // (bf16 pages as AMX tiles, csrc/swaa/cpu/amx_tiles.h, on CPUs with AMX).
  m.def(
      "write_paged_cache(Tensor key, Tensor value, Tensor(a!) k_cache, Tensor(b!) v_cache,"
      " Tensor slot_mapping, str kv_layout=\"rows\") -> ()");
}

// swaa_ext._C_emulated: the CUDA kernels' own source, compiled by g++ in SIMT host mode
// (-DSWAA_SIMT_HOST), so it runs on the CPU and the kernels are tested without a GPU (docs/architecture.md, "Testing CUDA kernels without a GPU").
// Ops (CPU tensors, same schemas as swaa_ext::fwd / swaa_ext::bwd):
//   swaa_emulated::fwd(q, k, v, window, sinks, full_from, scale) -> (out, lse)
//   swaa_emulated::bwd(grad_out, grad_lse, q, k, v, out, lse, window, sinks, full_from, scale)
//       -> (dq, dk, dv)
//   swaa_emulated::fwd_varlen / bwd_varlen / fwd_paged / fwd_paged_out  (swaa_ext's schemas;
//       the paged ops take kv_layout "rows" only)
//   swaa_emulated::set_mode(mode, seed)  the emulator's schedule (process-wide)
//   swaa_emulated::fwd_decode(q, k, v, window, sinks, full_from, scale, num_splits) -> (out, lse)
//       the split-KV decode kernel with num_splits splits, whatever decode_plan.h would pick
//   swaa_emulated::decode_plan(batch, heads_q, heads_kv, len_q, len_k, head_dim, window, sinks,
//       with_full_from, num_sms) -> [use_decode, row_groups, key_tiles, num_splits, blocks]
// fwd / fwd_varlen plan the decode kernel for kEmulatedSms SMs.
// The instantiations come from the generated lists (emulated_instantiations.h reads
// csrc/swaa/cuda/instantiations/*_list.inc), the same ones the nvcc build compiles.
#include "../cuda_backward_boundary.h"  // first: the SIMT layer precedes every CUDA header

#include <Python.h>
#include <torch/library.h>

#include <string>

#include "../../swaa/cuda/emulated_instantiations.h"

// `import swaa_ext._C_emulated` loads this library, which runs the registrations below.
extern "C" PyObject* PyInit__C_emulated(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_emulated", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

namespace swaa::torch_boundary {
namespace {

// The emulated backend: CPU tensors; host mode runs the whole grid at launch, and a kernel fault
// throws with the block and thread.
struct Emulated {
  static constexpr const char* kName = "the emulated CUDA kernel";
  struct CpuCheck {};
  static CpuCheck guard(const at::Tensor& q) {
    TORCH_CHECK_VALUE(q.device().is_cpu(), "q, k and v must be CPU tensors for ", kName, ", got ",
                      q.device());
    return {};
  }
  static void forward(const AttentionParams& p, cuda::Dtype dtype) {
    const cudaError_t err = cuda::forward(p, dtype, cudaStream_t{});
    TORCH_CHECK(err == cudaSuccess, kName, " failed to launch: error ", int(err));
  }
  static void decode(const DecodeParams& p, cuda::Dtype dtype) {
    const cudaError_t err = cuda::decode(p, dtype, cudaStream_t{});
    TORCH_CHECK(err == cudaSuccess, kName, " failed to launch: error ", int(err));
  }
  static void backward(const AttentionBackwardParams& p, cuda::Dtype dtype) {
    const cudaError_t err = cuda::backward(p, dtype, cudaStream_t{});
    TORCH_CHECK(err == cudaSuccess, kName, " failed to launch: error ", int(err));
  }
  // The emulator's default target is sm_80 (simt.h), so plan for an A100's 108 SMs.
  static constexpr int64_t kEmulatedSms = 108;
  static int64_t num_sms(const at::Tensor&) { return kEmulatedSms; }
};
using Ops = CudaKernelOps<Emulated>;

std::tuple<at::Tensor, at::Tensor> fwd_decode(const at::Tensor& q, const at::Tensor& k,
                                              const at::Tensor& v, std::optional<int64_t> window,
                                              int64_t sinks,
                                              const std::optional<at::Tensor>& full_from,
                                              double scale, int64_t num_splits) {
  [[maybe_unused]] const auto guard = Emulated::guard(q);
  check_attention_inputs(q, k, v, window, sinks, full_from);
  TORCH_CHECK_VALUE(num_splits >= 1, "num_splits must be >= 1, got ", num_splits);
  CudaForward f = prepare_cuda_forward(q, k, v, window, sinks, full_from, scale, Emulated::kName,
                                       nullptr, KernelChoice{Emulated::kEmulatedSms, num_splits});
  Ops::launch_forward(f);
  return {f.out, f.lse};
}

std::vector<int64_t> decode_plan(int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t len_q,
                                 int64_t len_k, int64_t head_dim, std::optional<int64_t> window,
                                 int64_t sinks, bool with_full_from, int64_t num_sms) {
  TORCH_CHECK_VALUE(heads_kv >= 1 && heads_q % heads_kv == 0,
                    "heads_q must be a multiple of heads_kv >= 1, got ", heads_q, " and ",
                    heads_kv);
  AttentionParams p{};
  p.batch = batch, p.heads_q = heads_q, p.heads_kv = heads_kv;
  p.len_q = len_q, p.len_k = len_k, p.head_dim = head_dim;
  p.window = kernel_window(window, len_k), p.sinks = sinks;
  static const int64_t any_full_from = 0;  // only "given or not" matters to the plan
  p.full_from = with_full_from ? &any_full_from : nullptr;
  const cuda::DecodePlan plan = cuda::plan_decode(p, num_sms);
  return {plan.use_decode, plan.row_groups, plan.key_tiles, plan.num_splits, plan.blocks};
}

void set_mode(const std::string& mode, int64_t seed) {
  const std::pair<const char*, simt::Mode> modes[] = {{"default", simt::Mode::Default},
                                                      {"random", simt::Mode::Random},
                                                      {"warp_serial", simt::Mode::WarpSerial},
                                                      {"race_check", simt::Mode::RaceCheck}};
  for (const auto& [name, value] : modes) {
    if (mode == name) return simt::set_mode(value, uint64_t(seed));
  }
  TORCH_CHECK_VALUE(false, "mode must be one of default, random, warp_serial, race_check, got '",
                    mode, "'");
}

}  // namespace

TORCH_LIBRARY(swaa_emulated, m) {
  m.def("fwd(Tensor q, Tensor k, Tensor v, int? window, int sinks, Tensor? full_from, float scale)"
        " -> (Tensor, Tensor)");
  m.def("bwd(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, Tensor out,"
        " Tensor lse, int? window, int sinks, Tensor? full_from, float scale)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("fwd_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k,"
        " int max_seqlen_q, int max_seqlen_k, int? window, int sinks, Tensor? full_from,"
        " float scale) -> (Tensor, Tensor)");
  m.def("bwd_varlen(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, Tensor out,"
        " Tensor lse, Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q,"
        " int max_seqlen_k, int? window, int sinks, Tensor? full_from, float scale)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("fwd_paged(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table,"
        " Tensor cu_seqlens_q, Tensor seqused_k, int max_seqlen_q, int max_seqlen_k, int? window,"
        " int sinks, Tensor? full_from, float scale, str kv_layout=\"rows\") -> (Tensor, Tensor)");
  m.def("fwd_paged_out(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table,"
        " Tensor cu_seqlens_q, Tensor seqused_k, int max_seqlen_q, int max_seqlen_k, int? window,"
        " int sinks, Tensor? full_from, float scale, Tensor(a!) out, Tensor(b!)? lse,"
        " str kv_layout=\"rows\") -> ()");
  m.def("set_mode(str mode, int seed) -> ()", &set_mode);
  m.def("fwd_decode(Tensor q, Tensor k, Tensor v, int? window, int sinks, Tensor? full_from,"
        " float scale, int num_splits) -> (Tensor, Tensor)");
  m.def("decode_plan(int batch, int heads_q, int heads_kv, int len_q, int len_k, int head_dim,"
        " int? window, int sinks, bool with_full_from, int num_sms) -> int[]", &decode_plan);
}

TORCH_LIBRARY_IMPL(swaa_emulated, CPU, m) {
  m.impl("fwd", &Ops::fwd);
  m.impl("bwd", &Ops::bwd);
  m.impl("fwd_varlen", &Ops::fwd_varlen);
  m.impl("bwd_varlen", &Ops::bwd_varlen);
  m.impl("fwd_decode", &fwd_decode);
  m.impl("fwd_paged", &Ops::fwd_paged);
  m.impl("fwd_paged_out", &Ops::fwd_paged_out);
}

}  // namespace swaa::torch_boundary

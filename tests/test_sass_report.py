"""tools/sass, the static SASS report, without nvcc: parsing nvdisasm / ptxas / cuobjdump text
(committed fixtures in tests/fixtures/sass/), finding the key loop and splitting its masked path,
the occupancy and bound model, the regression check, and the committed docs/sass-report.json:
what tools/sass derives from its counts (the Markdown, the loop figures, the estimates, the tile
sizes and the decode launch, the last two from the headers built by the host compiler) is what
the code computes today, and the numbers meet the kernels' targets."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil

import pytest

from tools.sass import build, decode, loops, model, report, sass
from tools.sass.machines import A100, H100, MACHINES

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "sass")
# The fixture's mask function occupies these lines of forward_kernel.cuh (its chains say 131).
FIXTURE_MASK = {"forward_kernel.cuh": [(125, 134)]}


def fixture(name: str) -> str:
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def committed_report() -> dict:
    with open(os.path.join(build.ROOT, "docs", "sass-report.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def host_build(tmp_path_factory):
    """(nvcc, a scratch folder, the traits table) for tools/sass's host programs: the host C++
    compiler with the toolkit's headers (found beside nvcc, as the report finds them)."""
    try:
        nvcc = build.find_nvcc()
    except SystemExit:
        pytest.skip("no CUDA toolkit (cuda_toolkit.py --nvcc): the kernels' headers need it")
    if not shutil.which(os.environ.get("CXX", "c++")):
        pytest.skip("no host C++ compiler")
    tmp = str(tmp_path_factory.mktemp("sass-host"))
    return nvcc, tmp, build.traits(nvcc, tmp)


@pytest.fixture(scope="module")
def tiny() -> sass.Function:
    return sass.parse(fixture("loop_kernel.sass"))["_Z11tiny_kernelv"]


def test_parse_functions_instructions_and_line_info(tiny):
    functions = sass.parse(fixture("loop_kernel.sass"))
    assert sorted(functions) == ["_Z11tiny_kernelv", "_Z12other_kernelv"]
    assert len(tiny.instructions) == 20 and len(functions["_Z12other_kernelv"].instructions) == 4
    assert tiny.labels == {".L_x_1": 0x30, ".L_x_2": 0xC0, ".L_x_3": 0x20, ".L_x_4": 0x130,
                           ".L_x_5": 1 << 62}
    branch = tiny.instructions[9]
    assert (branch.address, branch.predicate, branch.opcode, branch.target) == (
        0x90, "@P1", "BRA", ".L_x_2")
    padding = tiny.instructions[3]
    assert (padding.predicate, padding.mnemonic) == ("@!PT", "LDS")
    # An instruction carries every frame of the inline chain above it ...
    assert tiny.instructions[6].frames == {("device.h", 64), ("forward_kernel.cuh", 111),
                                           ("forward_kernel.cuh", 287)}
    # ... and keeps it across a label until the next line-info block.
    assert tiny.instructions[3].frames == tiny.instructions[2].frames


def test_loops_and_key_loop(tiny):
    assert loops.loops(tiny) == [loops.Loop(0x30, 0x50), loops.Loop(0x20, 0x110),
                                 loops.Loop(0x130, 0x130)]
    assert loops.key_loop(tiny) == loops.Loop(0x20, 0x110)  # the one with the HMMA
    other = sass.parse(fixture("loop_kernel.sass"))["_Z12other_kernelv"]
    assert loops.key_loop(other) is None and loops.count(other, FIXTURE_MASK) is None


def test_counts_of_the_fixture_loop(tiny):
    c = loops.count(tiny, FIXTURE_MASK)
    assert (c.instructions_masked, c.instructions_unmasked, c.hmma) == (16, 14, 4)
    assert (c.per_hmma_unmasked, c.per_hmma_masked) == (3.5, 4.0)
    assert (c.inner_loops, c.flops) == (1, 4 * 4096)
    # LDSM .4 (512 B) + LDSM .2 (256 B) + LDS.64 (8 B x 32 lanes); the @!PT LDS moves nothing.
    assert c.smem_read_bytes_unmasked == 512 + 256 + 256 and c.smem_write_bytes_unmasked == 0
    assert c.by_mnemonic["HMMA"] == 4 and "FSEL" not in c.by_mnemonic  # FSEL is mask-only
    # BAR and the three BRA are "other"; the loop's only integer op (ISETP) is mask-only.
    assert loops.group_counts(c.by_mnemonic) == {"memory": 5, "hmma": 4, "float": 1, "other": 4}


def test_without_mask_functions_both_paths_are_equal(tiny):
    c = loops.count(tiny, {})
    assert c.instructions_unmasked == c.instructions_masked == 16


def test_mask_functions_are_found_in_the_kernel_sources():
    for name, function in (("tile_math.cuh", "apply_mask"),
                           ("backward_kernel.cuh", "apply_mask_transposed")):
        with open(os.path.join(build.CUDA_DIR, name)) as f:
            lines = f.read().splitlines()
        first, last = loops.function_lines("\n".join(lines), function)
        assert re.search(rf"void {function}\(", lines[first - 1]) and lines[last - 1] == "}"
        assert "visible(" in "\n".join(lines[first - 1:last])


def test_opcode_widths():
    assert [loops.ldsm_bytes(op) for op in ("LDSM.16.M88.4", "LDSM.16.MT88.2", "LDSM.16.M88")] \
        == [512, 256, 128]
    widths = [loops.lane_bytes(op) for op in ("LDS", "LDS.64", "LDS.U.128", "STS.U8")]
    assert widths == [4, 8, 16, 1]


def test_ptxas_and_res_usage():
    name = ("_ZN4swaa4cuda14forward_kernelINS0_13ForwardTraitsI13__nv_bfloat16Li128EEEEEvNS_15"
            "AttentionParamsE")
    p = build.parse_ptxas(fixture("ptxas_forward_bf16_hdim128_sm80.log"))
    assert p == {name: build.PtxasFunction(224, 0, 0, 0, 0)}
    usage = build.parse_res_usage(fixture("res_usage_forward_bf16_hdim128_sm80.txt"))
    assert usage == {name: {"registers": 224, "stack_bytes": 0, "static_smem_bytes": 0,
                            "local_bytes": 0}}
    spilling = ("ptxas info    : Function properties for _Z1kv\n"
                "    96 bytes stack frame, 88 bytes spill stores, 92 bytes spill loads\n"
                "ptxas info    : Used 128 registers, used 1 barriers, 4096 bytes smem\n")
    assert build.parse_ptxas(spilling) == {"_Z1kv": build.PtxasFunction(128, 96, 88, 92, 4096)}


def test_instantiations_and_flags_match_the_build():
    found = {i.name for i in build.instantiations()}
    assert found == {f"{d}_{t}_hdim{h}"
                     for d in ("forward", "backward", "decode", "forward_paged", "decode_paged")
                     for t in ("fp16", "bf16") for h in (64, 128)}
    assert all(os.path.isfile(i.source) for i in build.instantiations())
    # The report compiles with the extension's own settings (build_config.py) and torch's flags.
    import build_config
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    assert build.TORCH_NVCC_FLAGS == tuple(COMMON_NVCC_FLAGS)
    assert build.NVCC_FLAGS == (*build_config.NVCC_FLAGS, *COMMON_NVCC_FLAGS)
    assert build.ARCHS == ("sm_80", "sm_90") == build_config.sass_archs("8.0;9.0+PTX")
    with open(os.path.join(build.ROOT, "setup.py")) as f:
        setup = f.read()
    assert "build_config.NVCC_FLAGS" in setup and "build_config.DEFAULT_CUDA_ARCHS" in setup


def test_occupancy():
    # 224 registers: 7168 per warp, 2 warps per 16K-register SM quarter: 8 warps, 2 blocks of 4.
    assert model.blocks_by_registers(A100, 224, 4) == 2
    assert model.blocks_by_registers(A100, 128, 4) == 4
    assert model.blocks_by_registers(H100, 242, 8) == 1
    assert model.blocks_by_registers(A100, 255, 8) == 1
    assert model.blocks_by_smem(A100, 64 * 1024) == 2 and model.blocks_by_smem(H100, 64 * 1024) == 3
    assert model.blocks_by_smem(A100, 40 * 1024) == 4 and model.blocks_by_smem(H100, 40 * 1024) == 5
    assert model.blocks_by_smem(A100, 200 * 1024) == 0  # over the per-block maximum
    assert (A100.clocks_per_hmma, H100.clocks_per_hmma) == (8, 4)
    assert round(A100.peak_tflops) == 312 and round(H100.peak_tflops) == 989


def test_estimate_of_a_forward_like_loop():
    counts = loops.LoopCounts(start=0, end=0, instructions_masked=1147, instructions_unmasked=906,
                              hmma=64, inner_loops=2, inner_loop_body=0, calls=0,
                              smem_read_bytes_unmasked=16384,
                              smem_write_bytes_unmasked=0, by_mnemonic={})
    traits = {"kernel": "forward", "warps": 4, "block_m": 64, "block_n": 32, "head_dim": 128,
              "stages": 3, "smem_bytes": 65536, "streamed_rows": 32, "element_bytes": 2}
    est = model.estimate(A100, counts, build.PtxasFunction(224, 0, 0, 0, 0), traits)
    assert est["blocks_per_sm"] == 2 and est["warps_per_sm"] == 8
    # (16 KiB ldmatrix + 16 KiB cp.async / 4 warps) / (64 x 4096 FLOPs); K+V tile / block FLOPs.
    assert est["smem_bytes_per_flop"] == round(20480 / 262144, 4)
    assert est["global_bytes_per_flop"] == round(1 / 64, 5)
    assert est["bound"]["issue"] == round(64 * 8 / 906, 3)
    assert est["bound"]["shared_memory"] == round(128 / (2048 * 20480 / 262144), 3)
    assert est["limited_by"] == "issue" and est["tensor_utilisation_bound"] == 0.565
    h100 = model.estimate(H100, counts, build.PtxasFunction(224, 0, 0, 0, 0), traits)
    assert h100["bound"]["issue"] == round(64 * 4 / 906, 3) and h100["blocks_per_sm"] == 2


def test_paged_row_loop_counts_the_rolled_body_once_per_row():
    """A paged forward at D=64 copies 64 keys x 8 chunks with 128 threads: 4 rows per thread, so
    the rolled row loop, counted once statically, runs 3 more times per tile."""
    counts = loops.LoopCounts(start=0, end=0, instructions_masked=1083, instructions_unmasked=730,
                              hmma=128, inner_loops=2, inner_loop_body=50, calls=0,
                              smem_read_bytes_unmasked=0, smem_write_bytes_unmasked=0,
                              by_mnemonic={})
    traits = {"warps": 4, "block_n": 64, "head_dim": 64, "element_bytes": 2}
    assert report.paged_row_loop(counts, traits) == {
        "rows_per_thread": 4, "instructions_unmasked_issued": 880,
        "per_hmma_unmasked_issued": 6.88}


def _row(kernel="forward", spill=0, unmasked=900, masked=1100, per_hmma=5.0, arch="sm_80",
         bound=0.9):
    return {"kernel": kernel, "dtype": "bf16", "head_dim": 128, "arch": arch,
            "spill_store_bytes": spill, "spill_load_bytes": 0,
            "hot_loop": {"instructions_unmasked": unmasked, "instructions_masked": masked,
                         "per_hmma_unmasked": per_hmma},
            "estimate": {"tensor_utilisation_bound": bound}}


def test_check_flags_spills_and_regressions_over_ten_percent():
    committed = {"kernels": [_row()]}
    assert report.check({"kernels": [_row(unmasked=990, masked=1210)]}, committed) == []
    assert report.check({"kernels": [_row(unmasked=500)]}, committed) == []
    failures = report.check({"kernels": [_row(unmasked=991)]}, committed)
    assert failures == ["forward bf16 D=128 sm_80: hot loop instructions_unmasked 900 -> 991 "
                        "(> 10% up)"]
    assert report.check({"kernels": [_row(spill=8)]}, committed)[0].endswith(
        "spills 8 B stores, 0 B loads")
    assert report.check({"kernels": [_row(kernel="dq", per_hmma=3.5)]}, committed) == []


def test_check_holds_each_kernel_to_its_target_on_sm80():
    committed = {"kernels": [_row()]}
    assert report.TARGETS[("forward", 128)] == 5.0 and report.TARGETS[("dkdv", 128)] == 5.0
    assert report.check({"kernels": [_row(per_hmma=5.0)]}, committed) == []
    assert report.check({"kernels": [_row(per_hmma=5.1)]}, committed) == [
        "forward bf16 D=128 sm_80: 5.1 instructions per HMMA, target 5.0"]
    assert report.check({"kernels": [_row(per_hmma=5.1, arch="sm_90")]}, committed) == []
    assert report.check({"kernels": [_row(kernel="dkdv", per_hmma=5.1)]}, committed) == [
        "dkdv bf16 D=128 sm_80: 5.1 instructions per HMMA, target 5.0"]


def test_committed_markdown_is_the_renderer_output():
    """docs/sass-report.md is report.markdown of the committed JSON: a change to the renderer (or
    a hand edit of either file) fails here until `make sass-report` regenerates both."""
    with open(os.path.join(build.ROOT, "docs", "sass-report.md")) as f:
        committed = f.read()
    # As lines, so a failure names the first one that differs.
    assert report.markdown(committed_report()).splitlines() == committed.splitlines()


def test_committed_machines_and_flags_are_today_s():
    committed = committed_report()
    assert committed["machines"] == {a: dataclasses.asdict(m) for a, m in MACHINES.items()}
    assert committed["nvcc_flags"] == list(build.NVCC_FLAGS)


def test_committed_rows_are_what_loops_and_the_model_compute(host_build):
    """Each row's derived figures from its own counts, through today's code: the loop's ratios
    and groups (loops.py), the machines (machines.py), the tile sizes (kernel_traits.h) and the
    estimate (model.py). Any of them changing without `make sass-report` fails here."""
    committed = committed_report()
    tile_traits = host_build[2]
    for r in committed["kernels"]:
        where = "{kernel} {dtype} D={head_dim} {arch}".format(**r)
        # A paged variant has its packed kernel's tiles.
        traits = tile_traits[(r["kernel"].removesuffix("_paged"), r["dtype"], r["head_dim"])]
        assert r["tile"] == {k: traits[k] for k in r["tile"]}, where
        loop = r.get("hot_loop")
        if loop is None:  # no HMMA loop, no estimate
            continue
        fields = {f.name for f in dataclasses.fields(loops.LoopCounts)}
        counts = loops.LoopCounts(**{k: loop[k] for k in fields - {"start", "end"}},
                                  start=int(loop["start"], 16), end=int(loop["end"], 16))
        assert loop["per_hmma_unmasked"] == round(counts.per_hmma_unmasked, 2), where
        assert loop["per_hmma_masked"] == round(counts.per_hmma_masked, 2), where
        assert loop["flops_per_warp"] == counts.flops, where
        assert loop["groups"] == loops.group_counts(counts.by_mnemonic), where
        if r["kernel"].endswith("_paged"):
            assert counts.inner_loop_body > 0, where
            paged = report.paged_row_loop(counts, traits)
            assert {k: loop[k] for k in paged} == paged, where
        # Static shared memory is not a column of its own: the rest of the block's share.
        static_smem = r["estimate"]["smem_per_block_bytes"] - traits["smem_bytes"]
        ptxas = build.PtxasFunction(r["registers"], r["stack_bytes"], r["spill_store_bytes"],
                                    r["spill_load_bytes"], static_smem)
        assert r["estimate"] == model.estimate(MACHINES[r["arch"]], counts, ptxas, traits), where


def test_committed_decode_launch_is_what_decode_plan_computes(host_build):
    """decode_plan.h (built and run here as tools/sass/decode.py does) gives the committed launch
    shapes: a change to the plan or to decode.py fails here until `make sass-report`."""
    nvcc, tmp, tile_traits = host_build
    committed = committed_report()["decode_launch"]
    block_m = tile_traits[("forward", "fp16", decode.HEAD_DIM)]["block_m"]
    assert decode.launch_shapes(nvcc, tmp, block_m) == committed


def test_committed_report_covers_every_instantiation():
    committed = committed_report()
    rows = {(r["kernel"], r["dtype"], r["head_dim"], r["arch"]): r for r in committed["kernels"]}
    # HMMA per warp per tile, from the traits' shapes (forward: two m-tiles per warp; decode: one
    # m-tile, key tiles twice the forward's; dK/dV: four products of 16 keys x 64 queries x D).
    hmma = {"forward": 128, "dq": 96, "decode": 128, "forward_paged": 128,
            "decode_paged": 128}
    hmma_dkdv = {64: 128, 128: 256}
    kernels = {"forward": ("forward",), "backward": ("dkdv", "dq"), "decode": ("decode",),
               "forward_paged": ("forward_paged",), "decode_paged": ("decode_paged",)}
    for inst in build.instantiations():
        for kernel in kernels[inst.direction]:
            for arch in build.ARCHS:
                r = rows[(kernel, inst.dtype, inst.head_dim, arch)]
                assert r["spill_store_bytes"] == r["spill_load_bytes"] == 0
                assert r["hot_loop"]["hmma"] == (hmma_dkdv[inst.head_dim] if kernel == "dkdv"
                                                  else hmma[kernel])
                loop = r["hot_loop"]
                assert loop["instructions_unmasked"] < loop["instructions_masked"]
                assert 0 < r["estimate"]["tensor_utilisation_bound"] <= 1
    assert len(rows) == 48


def test_committed_report_has_the_decode_launch_shape():
    """B=1, 32 / 8 heads at 32k and 128k keys on both machines: the decode kernel fills every SM
    twice over where the tile kernel has 32 blocks, and reads each KV head's tiles once."""
    launch = committed_report()["decode_launch"]
    assert {(r["arch"], r["len_k"]) for r in launch} == {
        (a, n) for a in build.ARCHS for n in (32768, 131072)}
    for r in launch:
        assert r["use_decode"] and r["tile_kernel_blocks"] == 32
        assert r["decode_blocks"] >= 2 * r["sms"]
        assert r["decode_kv_bytes"] * 4 == r["tile_kernel_kv_bytes"]
    # decode_plan.h's kDecodeBlocksPerSm = 2 must be what the registers and shared memory allow.
    for r in committed_report()["kernels"]:
        if r["kernel"] == "decode":
            assert r["estimate"]["blocks_per_sm"] >= 2, r


def test_committed_report_meets_the_forward_targets():
    """Issue 13's targets for the forward, from the committed report (sm_80 and sm_90, D=64 and
    D=128): at most 6 SASS instructions per HMMA in the unmasked key loop, at most 0.05
    shared-memory bytes per FLOP, no spills, and at least 8 resident warps per SM."""
    forward = [r for r in committed_report()["kernels"] if r["kernel"] == "forward"]
    assert len(forward) == 8
    for r in forward:
        where = f"{r['dtype']} D={r['head_dim']} {r['arch']}"
        assert r["hot_loop"]["per_hmma_unmasked"] <= 6.0, where
        assert r["estimate"]["smem_bytes_per_flop"] <= 0.05, where
        assert r["spill_store_bytes"] == r["spill_load_bytes"] == 0, where
        assert r["estimate"]["warps_per_sm"] >= 8, where


def test_the_unmasked_path_is_what_the_mask_branch_skips():
    """A loop that branches around its mask: the block the branch skips (mostly mask-function
    lines) is masked-only, with the instruction the compiler merged into it from another line
    (the SEL); the mask set-up it hoisted above the branch (the IADD3) runs on every tile. An outer
    branch that skips mostly other work (the @P5 one) is not taken for the mask."""
    fn = sass.parse(fixture("mask_branch.sass"))["_Z11mask_kernelv"]
    loop = loops.key_loop(fn)
    assert loop == loops.Loop(0x10, 0x110)
    assert loops.mask_blocks(fn, loop, FIXTURE_MASK) == [(0x70, 0xB0)]
    c = loops.count(fn, FIXTURE_MASK)
    assert (c.instructions_masked, c.instructions_unmasked, c.hmma) == (17, 13, 3)
    assert c.by_mnemonic["IADD3"] == 1 and "SEL" not in c.by_mnemonic
    assert "FSEL" not in c.by_mnemonic and "ISETP" not in c.by_mnemonic
    # Without mask functions nothing is masked-only.
    assert loops.count(fn, {}).instructions_unmasked == 17


def test_check_holds_every_kernel_to_the_tensor_core_bound_on_sm80():
    committed = {"kernels": [_row()]}
    assert report.MIN_TENSOR_BOUND == 0.80
    assert report.check({"kernels": [_row(kernel="dkdv", bound=0.8)]}, committed) == []
    assert report.check({"kernels": [_row(kernel="dkdv", bound=0.799)]}, committed) == [
        "dkdv bf16 D=128 sm_80: tensor-core bound 79.9%, at least 80% wanted"]
    assert report.check({"kernels": [_row(bound=0.4, arch="sm_90")]}, committed) == []


def test_the_committed_report_meets_the_tensor_core_bound():
    with open(os.path.join(build.ROOT, "docs", "sass-report.json")) as f:
        committed = json.load(f)
    rows = [r for r in committed["kernels"] if r["arch"] == report.TARGET_ARCH and r.get("estimate")]
    assert {r["kernel"] for r in rows} >= {"forward", "dkdv", "dq", "decode"}
    assert report.check(committed, committed) == []

"""Smoke test of an installed swaa_ext (tests/install/run.sh runs it in a fresh venv, from a folder
outside the checkout). Not a pytest module: it checks the install, not the source tree.

    python smoke.py --checkout DIR [--expect cuda,emulated]   kernels, emulated kernel, adapt
    python smoke.py --checkout DIR --cli                      the demo's and eval's --help

Exits non-zero on the first failed check."""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"smoke: FAILED: {what}")
    print(f"smoke: ok: {what}")


def inside(path: str | Path, folder: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def check_location(checkout: Path) -> None:
    import swaa_ext

    site = sysconfig.get_paths()["platlib"]
    check(inside(swaa_ext.__file__, site) and not inside(swaa_ext.__file__, checkout),
          f"import swaa_ext comes from this venv's site-packages: {swaa_ext.__file__}")
    # The library finds OpenBLAS by a relative rpath: it must be this venv's copy, not the one
    # in the venv that built the wheel.
    maps = Path("/proc/self/maps").read_text().splitlines()
    blas = {line.split()[-1] for line in maps if "libscipy_openblas" in line}
    check(bool(blas) and all(inside(p, site) for p in blas),
          f"OpenBLAS comes from this venv's site-packages: {sorted(blas)}")


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> bool:
    return torch.allclose(actual.double(), expected.double(), atol=atol, rtol=0)


def check_kernels(expected_builds: set[str]) -> None:
    import swaa_ext
    from swaa_ext import reference

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, heads, 37, 16, generator=gen, requires_grad=True)
               for heads in (4, 2, 2))  # GQA 2:1
    args = dict(window=8, sinks=3, full_from=30)
    out = swaa_ext.sliding_attention(q, k, v, **args)
    want = reference.sliding_attention(q, k, v, **args)
    check(close(out, want, 1e-5), "sliding_attention (CPU, fp32) matches the reference")
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    want_grads = torch.autograd.grad(want.sum(), (q, k, v))
    check(all(close(g, w, 1e-4) for g, w in zip(grads, want_grads)),
          "its gradients match the reference's")

    has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("swaa_ext::fwd", "CUDA")
    check(has_cuda == ("cuda" in expected_builds),
          f"CUDA kernels {'built' if has_cuda else 'not built'}, as expected")
    if "emulated" not in expected_builds:
        check(not hasattr(swaa_ext, "emulated"), "no emulated kernels, as expected")
        return
    half = [t.detach()[:1, :, :20].repeat(1, 1, 1, 4).half() for t in (q, k, v)]  # head dim 64
    out = swaa_ext.emulated.sliding_attention(*half, window=8, sinks=3)
    want = reference.sliding_attention(*half, window=8, sinks=3)
    check(close(out, want, 5e-3), "swaa_ext.emulated (the CUDA kernel, fp16) matches the reference")


def check_adapt() -> None:
    import swaa_ext
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (1, 24))
    with torch.no_grad():
        base = model(ids).logits
        swaa_ext.adapt(model, swaa_ext.SWAAConfig(window=6, sinks=2))
        windowed = model(ids).logits
        swaa_ext.restore(model)
        restored = model(ids).logits
    # Positions before the window's end see every earlier key either way; later ones do not.
    check(close(windowed[:, :6], base[:, :6], 1e-4) and not close(windowed, base, 1e-2),
          "adapt(LlamaForCausalLM, window=6, sinks=2): same logits where the window covers the "
          "prefix, different after")
    check(close(restored, base, 1e-5), "restore gives the original logits back")


def check_cli() -> None:
    for module in ("swaa_ext.demo", "swaa_ext.recipes.eval"):
        run = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                             text=True)
        check(run.returncode == 0 and "usage:" in run.stdout,
              f"python -m {module} --help{'' if run.returncode == 0 else ': ' + run.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkout", type=Path, required=True,
                        help="the source tree, which must not be what gets imported")
    parser.add_argument("--expect", default="cuda,emulated",
                        help="the optional libraries the wheel must hold (comma-separated)")
    parser.add_argument("--cli", action="store_true", help="check the CLIs only")
    args = parser.parse_args()
    check_location(args.checkout)
    if args.cli:
        check_cli()
        return
    check_kernels(set(filter(None, args.expect.split(","))))
    check_adapt()


if __name__ == "__main__":
    main()

"""The backends one suite runs against. A backend that cannot run here (no GPU) is a pytest
skip with the reason, never a pass."""

from __future__ import annotations

import pytest
import torch

from cases import TOLERANCE

BACKENDS = ["cpu", "cuda"]


def device_for(backend: str) -> str:
    if backend == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return backend


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype,
                 what: str = "") -> None:
    """Error relative to the tensor's own magnitude, at the input dtype's tolerance."""
    tol = TOLERANCE[dtype]
    expected = expected.detach().double().cpu()
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach().double().cpu(), expected, atol=tol * scale,
                               rtol=tol, msg=lambda m: f"{what}: {m}")

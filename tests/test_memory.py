"""Memory is O(L * D): a 65,536-token forward + backward never builds an L x L buffer."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    sys.path.insert(0, {root!r})
    import swaa_ext

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    L = {length}
    q = torch.randn(1, 2, L, 64, requires_grad=True)
    k = torch.randn(1, 1, L, 64, requires_grad=True)
    v = torch.randn(1, 1, L, 64, requires_grad=True)
    # Warm up on a small problem so one-time allocations (BLAS buffers, thread pools) are not
    # counted against the long sequence.
    small = [t[:, :, :256].detach().requires_grad_() for t in (q, k, v)]
    swaa_ext.sliding_attention(*small, 64, 4).sum().backward()
    before = peak_mib()
    out = swaa_ext.sliding_attention(q, k, v, 256, 16, full_from=L - 64)
    out.sum().backward()
    print(json.dumps({{"before_mib": before, "after_mib": peak_mib(),
                      "tensor_mib": 3 * 2 * q.numel() * 4 / 2**20}}))
""")


@pytest.mark.slow  # a 64k-token forward + backward in a fresh process
@pytest.mark.parametrize("length", [65536])
def test_long_sequence_forward_backward_peak_rss(length):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(root=root, length=length)],
                            capture_output=True, text=True, timeout=600, check=True)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    increase = stats["after_mib"] - stats["before_mib"]
    # Outputs and gradients are ~tensor_mib; an L x L fp32 buffer would be 16 GiB.
    assert increase < 1024, stats
    assert increase < 6 * stats["tensor_mib"] + 256, stats

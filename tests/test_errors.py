"""Bad input raises ValueError / TypeError naming the argument: never a crash or a wrong answer."""

import pytest
import torch

import swaa_ext


def qkv(shape_q=(1, 4, 8, 16), shape_k=(1, 2, 8, 16), dtype=torch.float32):
    return (torch.randn(shape_q).to(dtype), torch.randn(shape_k).to(dtype),
            torch.randn(shape_k).to(dtype))


@pytest.mark.parametrize("make,kwargs,error,match", [
    (lambda: (torch.randn(4, 8, 16),) + qkv()[1:], {}, ValueError, "q must have 4 dims"),
    (lambda: qkv(shape_k=(2, 2, 8, 16)), {}, ValueError, "batch"),
    (lambda: qkv(shape_k=(1, 2, 8, 32)), {}, ValueError, "head_dim"),
    (lambda: qkv(shape_k=(1, 3, 8, 16)), {}, ValueError, "multiple of k's heads"),
    (lambda: qkv(shape_q=(1, 4, 9, 16)), {}, ValueError, "must not exceed"),
    (lambda: qkv(), {"window": 0}, ValueError, "window"),
    (lambda: qkv(), {"window": -3}, ValueError, "window"),
    (lambda: qkv(), {"sinks": -1}, ValueError, "sinks"),
    (lambda: qkv(dtype=torch.int32), {}, TypeError, "float32, float64, bfloat16 or float16"),
    (lambda: (qkv()[0], qkv()[1].double(), qkv()[2]), {}, TypeError, "one dtype"),
    (lambda: (qkv()[0], qkv()[1].to("meta"), qkv()[2]), {}, ValueError, "one device"),
    (lambda: (qkv()[0].transpose(-1, -2).contiguous().transpose(-1, -2),) + qkv()[1:], {},
     ValueError, "contiguous last dim"),
    (lambda: (qkv()[0],) + (torch.randn(1, 2, 8, 16), torch.randn(1, 2, 7, 16)), {}, ValueError,
     "same shape"),
    (lambda: qkv(), {"full_from": torch.tensor([1, 2])}, ValueError, "full_from"),
    (lambda: qkv(), {"full_from": torch.tensor([1.0])}, TypeError, "full_from"),
    (lambda: qkv(), {"full_from": 2.5}, TypeError, "full_from"),
    (lambda: qkv(), {"window": 2.0}, TypeError, "window"),
    (lambda: qkv(), {"sinks": None}, TypeError, "sinks"),
    (lambda: qkv(shape_q=(1, 2, 8, 300), shape_k=(1, 2, 8, 300)), {}, ValueError, "head_dim"),
    (lambda: ("q", torch.randn(1), torch.randn(1)), {}, TypeError, "q must be a torch.Tensor"),
])
def test_bad_input_names_the_argument(make, kwargs, error, match):
    q, k, v = make()
    kwargs.setdefault("window", 4)
    with pytest.raises(error, match=match):
        swaa_ext.sliding_attention(q, k, v, **kwargs)

"""Magnitude (diagnostics.md section 3) and routing (section 5) metrics against direct definitions."""

import math

import pytest
import torch

from dardiag.metrics import route_entropy, route_weights, source_importance, token_cosine, token_rms

F64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_token_rms_matches_definition_and_upcasts():
    x = randn(2, 3, 5)
    ref = torch.tensor([[math.sqrt(sum(float(v) ** 2 for v in x[n, t]) / 5) for t in range(3)] for n in range(2)])
    torch.testing.assert_close(token_rms(x).float(), ref)
    xb = (x * 300).bfloat16()
    out = token_rms(xb)
    assert out.dtype == torch.float32 and out.shape == (2, 3)
    torch.testing.assert_close(out, token_rms(xb.float()))
    assert token_rms(x).dtype == F64


def test_token_cosine():
    a = randn(2, 4, 6, seed=1)
    b = randn(2, 4, 6, seed=2)
    ref = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    torch.testing.assert_close(token_cosine(a, b), ref)
    torch.testing.assert_close(token_cosine(a, 3 * a), torch.ones(2, 4, dtype=F64))
    torch.testing.assert_close(token_cosine(a, -a), -torch.ones(2, 4, dtype=F64))
    zero = token_cosine(torch.zeros(1, 2, 3), torch.ones(1, 2, 3))
    assert torch.equal(zero, torch.zeros(1, 2))
    assert token_cosine(a.bfloat16(), b.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError):
        token_cosine(a, b[:, :2])
    with pytest.raises(ValueError):
        token_rms(a[0])


def test_route_entropy_uniform_and_one_hot():
    S = 5
    uniform = torch.full((S, 2, 3), 1.0 / S)
    assert route_entropy(uniform).item() == pytest.approx(math.log(S), rel=1e-6)
    one_hot = torch.zeros(S, 2, 3)
    one_hot[2] = 1.0
    assert route_entropy(one_hot).item() == 0.0
    mixed = torch.stack([uniform[:, 0], one_hot[:, 0]], dim=1)  # (S, 2, 3): one image uniform, one one-hot
    assert route_entropy(mixed).item() == pytest.approx(math.log(S) / 2, rel=1e-6)
    torch.testing.assert_close(route_weights(mixed), torch.tensor([0.1, 0.1, 0.6, 0.1, 0.1], dtype=F64))
    with pytest.raises(ValueError):
        route_entropy(torch.ones(S, 2, 3))
    with pytest.raises(ValueError):
        route_entropy(torch.ones(S, 2))


def test_source_importance_equals_gate_gradient():
    N, T, D, S = 3, 4, 6, 4
    sources = [randn(N, T, D, seed=i) for i in range(S)]
    gates = torch.ones(S, dtype=F64, requires_grad=True)
    h = sum(gates[i] * sources[i] for i in range(S))  # (N, T, D)
    h.retain_grad()
    W = randn(N, T, D, seed=99)
    loss = (torch.tanh(h) * W).mean()  # non-linear so dL/dh depends on h
    loss.backward()
    out = source_importance(h.grad, sources)
    assert out.dtype == F64 and out.shape == (S,)
    torch.testing.assert_close(out, gates.grad / N)  # one gate per source, averaged over images
    with pytest.raises(ValueError):
        source_importance(h.grad, [sources[0][:, :2]])

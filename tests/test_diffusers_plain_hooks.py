"""act_rms and grad_rms of the image stream, profiled through the class table, equal a computation with
plain hooks written here from the definitions (diagnostics.md §3), for a single-stream (Sana), a
double-stream (Flux: double then single blocks) and a video (Wan) class: 1e-6 relative."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from dardiag.api import profile  # noqa: E402
from dardiag.adapters.diffusers import diffusers_subject  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, TINY, build, save  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# class -> (block lists in call order, index of the image stream in a block's tuple output or None)
PLAIN = {
    "SanaTransformer2DModel": (("transformer_blocks",), None),
    "FluxTransformer2DModel": (("transformer_blocks", "single_transformer_blocks"), 1),
    "WanTransformer3DModel": (("blocks",), None),
}
N = 4


def rms_stat(z: torch.Tensor) -> float:
    """Mean over (image, token) of sqrt(mean over channels of z^2); z: (N, T, D)."""
    return z.double().pow(2).mean(-1).sqrt().mean().item()


def plain_hooks(s, x0, noise, cond, lists, index):
    """z_0..z_D and dL/dz_k from forward hooks written here, L = mean (prediction - (noise - x0))^2."""
    model, states = s.model, []
    blocks = [b for name in lists for b in model.get_submodule(name)]

    def keep(z):
        z.retain_grad()
        states.append(z)

    handles = [blocks[0].register_forward_pre_hook(
        lambda m, args, kwargs: keep(kwargs.get("hidden_states", args[0] if args else None)), with_kwargs=True)]
    for b in blocks:
        handles.append(b.register_forward_hook(lambda m, a, out: keep(out if index is None else out[index])))
    t = torch.full((N,), 500.0)  # noise level 0.5, flow1000: t = sigma * 1000
    x_t = (0.5 * x0 + 0.5 * noise).requires_grad_(True)
    try:
        out = s.call(model, x_t, t, torch.zeros(N, dtype=torch.long), cond)
        loss = (out[:, : x0.shape[1]].float() - (noise - x0)).pow(2).mean()
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    return [rms_stat(z) for z in states], [rms_stat(z.grad) for z in states]


@pytest.mark.parametrize("cls", list(PLAIN))
def test_act_and_grad_rms_equal_plain_hooks(tmp_path, cls):
    s = diffusers_subject(save(build(cls), tmp_path / cls), text_tokens=TEXT_TOKENS, **TINY[cls].options)
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(N, *s.input_shape, generator=g), torch.randn(N, *s.input_shape, generator=g)
    cond = {k: torch.randn(N, *shape, generator=g) for k, shape in s.make_cond.shapes.items()}
    df = profile(s, inputs={"x0": x0, "noise": noise, "y": torch.zeros(N, dtype=torch.long), **cond},
                 noise_levels=[0.5], batch_size=N, analyses=Analyses(cka=False, probe=False, outliers=False))
    act, grad = plain_hooks(s, x0, noise, cond, *PLAIN[cls])
    assert len(act) == s.spec.depth + 1
    for metric, want in (("act_rms", act), ("grad_rms", grad)):
        got = df[df.metric == metric].sort_values("block").value.to_numpy()
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)

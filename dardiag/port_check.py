"""How far dardiag's DiT and its diffusers port are apart on the same weights: outputs, and act_rms
from a profile of both. A check that runs the sweep, so it lives above the engine (the engine never
imports an adapter).
"""

from __future__ import annotations

import torch

from dardiag.adapters.diffusers import diffusers_model_subject
from dardiag.adapters.dit import dit_subject
from dardiag.checkpoints import ModelInfo
from dardiag.engine.config import Analyses
from dardiag.engine.inputs import make_inputs
from dardiag.engine.plan import resolve_grid
from dardiag.engine.sweep import profile


def compare_dit_port(ours, port, *, samples: int = 16, batch_size: int = 8, noise_levels=(0.1, 0.5, 0.9),
                     seed: int = 0, act_rms: bool = True) -> dict:
    """Our DiT and its diffusers port on the same inputs: output and per-block act_rms differences.

    Returns ``max_abs_output_diff`` (over all outputs at all levels), ``max_output`` (max |output| of
    ours, for scale), ``max_act_rms_rel_diff`` (max over blocks and levels of |port - ours| / ours)
    and ``table`` (act_rms per noise level and block, both models, with the relative difference);
    ``act_rms=False`` skips the profile (outputs only: cheap for XL on a CPU).
    """
    a = dit_subject(ours, ModelInfo.in_memory(ours, family="dit", name="dardiag"))
    b = diffusers_model_subject(port, name="diffusers")
    inputs = make_inputs(None, a, samples, seed)
    max_diff = max_out = 0.0
    with torch.no_grad():
        for level, t_native in resolve_grid(a, list(noise_levels), None):
            t = torch.full((samples,), t_native).long()  # (N,)
            x_t = a.family.corrupt(inputs.x0, inputs.noise, t)  # (N, C, H, W)
            out_a = a.call(ours.eval(), x_t, t, inputs.y, None)  # (N, C_out, H, W)
            out_b = b.call(port.eval(), x_t, t, inputs.y, None)
            max_diff = max(max_diff, (out_a - out_b).abs().max().item())
            max_out = max(max_out, out_a.abs().max().item())
    if not act_rms:
        return {"max_abs_output_diff": max_diff, "max_output": max_out}
    analyses = Analyses(cka=False, sublayers=False, routes=False, probe=False)
    df = profile([a, b], inputs={"x0": inputs.x0, "y": inputs.y, "noise": inputs.noise},
                 noise_levels=list(noise_levels), samples=samples, batch_size=batch_size, seed=seed,
                 analyses=analyses)
    act = df[df.metric == "act_rms"].pivot_table(index=["noise_level", "block"], columns="model", values="value")
    act["rel_diff"] = (act["diffusers"] - act["dardiag"]).abs() / act["dardiag"]
    return {"max_abs_output_diff": max_diff, "max_output": max_out,
            "max_act_rms_rel_diff": float(act["rel_diff"].max()), "table": act}

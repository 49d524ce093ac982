"""Call parity: for every table class with a pipeline that tiny components can assemble, dardiag's own call of
the class, given the latents, noise level and conditioning that the pipeline handed its transformer at an
ordinary denoising step, returns what the pipeline's call of the transformer returned (1e-5, float32).

The recorded step is the second of two (sigma strictly between 0 and 1, so a wrong timestep scale or shift
shows); the pipeline is stopped right after it (no decoding: no VAE needed). Latents, conditioning and the
prediction are read back by the pipeline's own helpers or layout (tests/pipelines_tiny.py); the noise level
comes from the scheduler's state at that step, by the family's convention (diagnostics.md section 1).
Classes without a case have a stated reason in dardiag/adapters/classes/pipelines.py (checked below).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from dardiag.adapters.classes import TABLE  # noqa: E402
from dardiag.adapters.classes.pipelines import NO_PIPELINE, PIPELINES  # noqa: E402
from dardiag.adapters.diffusers import diffusers_model_subject  # noqa: E402
from dardiag.families import FlowFamily, SiTFamily  # noqa: E402
from diffusers_tiny import TINY  # noqa: E402
from pipelines_tiny import CASES, STEPS, Seen, make  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
STEP = STEPS - 1


class _Stop(Exception):
    """Raised after the recorded call: the rest of the pipeline (later steps, decoding) is not needed."""


def _clone(v):
    if torch.is_tensor(v):
        return v.detach().clone()
    if isinstance(v, (list, tuple)):
        return type(v)(_clone(u) for u in v)
    if isinstance(v, dict):
        return {k: _clone(u) for k, u in v.items()}
    return v


def _raw(output) -> torch.Tensor:
    if hasattr(output, "sample"):
        return output.sample
    return output[0] if isinstance(output, (tuple, list)) and not torch.is_tensor(output) else output


def record(pipe, call: dict, index: int) -> Seen:
    """Run ``pipe(**call)`` up to its transformer's call number ``index`` (0-based), recording that call."""
    seen = []

    def before(module, args, kwargs):
        seen.append([_clone(args), _clone(kwargs)])

    def after(module, args, kwargs, output):
        seen[-1].append(_clone(_raw(output)))
        if len(seen) > index:
            raise _Stop

    hooks = [pipe.transformer.register_forward_pre_hook(before, with_kwargs=True),
             pipe.transformer.register_forward_hook(after, with_kwargs=True)]
    try:
        with torch.no_grad():
            pipe(**call)
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) > index, f"the pipeline called its transformer {len(seen)} times"
    args, kwargs, output = seen[index]
    return Seen(pipe, args, kwargs, output)


def native_t(pipe, family, step: int) -> torch.Tensor:
    """dardiag's native timestep at the scheduler's ``step``: the latents' sigma (the scheduler's own, whatever
    timestep the pipeline derives from it) by the family's convention for flow families; the integer DDPM
    timestep otherwise."""
    if isinstance(family, (FlowFamily, SiTFamily)):
        return family.to_native(pipe.scheduler.sigmas[step].double()).float()
    return pipe.scheduler.timesteps[step].float()


@pytest.mark.parametrize("cls", sorted(CASES))
def test_call_is_the_pipelines(cls):
    case = CASES[cls]
    pipe, call = make(cls)
    assert type(pipe).__name__ == case.pipeline
    seen = record(pipe, call, STEP * case.calls + case.branch)
    s = diffusers_model_subject(pipe.transformer, raw_config={"sample_size": TINY[cls].sample_size},
                                **TINY[cls].options)
    x = case.x(seen)
    n = x.shape[0]
    t = case.t(seen, STEP) if case.t else native_t(pipe, s.family, STEP)
    y = seen.kwargs.get("class_labels", torch.zeros(n, dtype=torch.long))
    with torch.no_grad():
        ours = s.call(s.model, x, t.expand(n), y, case.cond(seen))
    theirs = case.out(seen)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_every_class_is_checked_or_has_a_reason():
    import diffusers

    assert not set(PIPELINES) & set(NO_PIPELINE) and set(NO_PIPELINE) <= set(TABLE)
    missing = sorted(set(TABLE) - set(PIPELINES) - set(NO_PIPELINE))
    assert not missing, f"classes with neither a pipeline-parity case nor a stated reason: {missing}"
    assert {c: CASES[c].pipeline for c in CASES} == PIPELINES  # what the README says is what is tested
    assert all(hasattr(diffusers, p) for p in PIPELINES.values()) and all(NO_PIPELINE.values())

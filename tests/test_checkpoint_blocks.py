"""``--checkpoint-blocks``: every block recomputed in the backward gives the plain table (every metric),
each tap records once per forward however often the recomputation runs the block again, and the cost
line chooses it when the plain backward would not fit. Tiny models, in process."""

from __future__ import annotations

import collections
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import dardiag
from dardiag.adapters.open import open_subject
from dardiag.adapters.options import LoadOptions
from dardiag.engine import cost
from dardiag.engine.inputs import make_inputs, noisy_batch
from dardiag.engine.memory import checkpointing
from dardiag.hooks.recorder import frozen_parameters, record
from tests.helpers import randomised_dit
from tests.test_train_cli_errors import run_cli

sys.path.insert(0, str(Path(__file__).parent))  # diffusers_tiny, as the diffusers tests import it
diffusers = pytest.importorskip("diffusers")
from diffusers_tiny import TEXT_TOKENS, TINY, build, save  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

DIT = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)
KEYS = ["model", "metric", "site", "block", "other_block", "sublayer", "source", "noise_level"]
# single-stream (PixArt: diffusers checkpoints it; HunyuanDiT: it cannot, dardiag wraps each block),
# joint text-image (Flux, its blocks wrapped in ImagePart), video (Wan)
CLASSES = ["PixArtTransformer2DModel", "HunyuanDiT2DModel", "FluxTransformer2DModel", "WanTransformer3DModel"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt_blocks")
    return {cls: save(build(cls), root / cls) for cls in CLASSES}


def dit(routing: str):
    return randomised_dit({**DIT, "routing": routing}, 0, scale=0.05)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    key = df[KEYS].astype("object").where(df[KEYS].notna(), -1)  # nulls sort (and compare) as -1
    return df.assign(**{k: key[k] for k in KEYS}).sort_values(KEYS).reset_index(drop=True)


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = _sorted(a), _sorted(b)
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS], check_dtype=False)
    np.testing.assert_array_equal(a["n_samples"], b["n_samples"])
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(a["stderr"], b["stderr"], rtol=1e-6, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("routing", ["residual", "dar"])
def test_checkpointed_dit_equals_plain(routing):
    kw = dict(samples=8, batch_size=4, noise_levels=[0.2, 0.9], family="sit")
    plain = dardiag.profile(dit(routing), checkpoint_blocks=False, **kw)
    ckpt = dardiag.profile(dit(routing), checkpoint_blocks=True, **kw)
    assert set(plain.metric) >= {"act_rms", "grad_rms", "cos_prev", "cka", "probe_r2", "h_rms", "v_rms", "act_kurtosis",
                                 "channel_top_share", "route_alpha" if routing == "dar" else "route_importance"}
    assert_same_table(ckpt, plain)
    assert ckpt.attrs["dardiag"]["settings"]["checkpoint_blocks"] is True


@pytest.mark.parametrize("cls", CLASSES)
def test_checkpointed_diffusers_class_equals_plain(saved, cls):
    kw = dict(samples=4, batch_size=2, noise_levels=[0.3, 0.8], text_tokens=TEXT_TOKENS, **TINY[cls].options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # synthetic latents and text: said, and the same in both runs
        plain = dardiag.profile(str(saved[cls]), checkpoint_blocks=False, **kw)
        ckpt = dardiag.profile(str(saved[cls]), checkpoint_blocks=True, **kw)
    assert {"grad_rms", "cka", "act_kurtosis"} <= set(plain.metric)
    assert_same_table(ckpt, plain)


class Count:
    def __init__(self):
        self.forward, self.backward = collections.Counter(), collections.Counter()

    def on_forward(self, name, x):
        self.forward[name] += 1

    def on_backward(self, name, grad):
        self.backward[name] += 1


def _one_pass(subject, on: bool) -> tuple[Count, int]:
    """One forward+backward of 2 images under the recorder -> (records per tap, calls of the blocks' linears)."""
    model, fam = subject.model, subject.family
    inp = make_inputs(None, subject, 2, 0)
    linears = [m for p in subject.blocks for m in model.get_submodule(p).modules() if isinstance(m, torch.nn.Linear)]
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in linears]
    sink = Count()
    try:
        with frozen_parameters(model), checkpointing(subject, on), record(model, list(subject.spec.taps), sink):
            t_native = float(fam.to_native(torch.tensor([0.5], dtype=torch.float64))[0])
            x0, noise, y, t, x_t = noisy_batch(inp, slice(0, 2), t_native, fam, "cpu")
            x_t.requires_grad_(True)
            cond = subject.make_cond(2, torch.arange(2)) if subject.make_cond else None
            fam.loss_per_image(subject.call(model, x_t, t, y, cond), x0, noise, t).mean().backward()
    finally:
        for h in handles:
            h.remove()
    return sink, len(calls)


@pytest.mark.parametrize("which", ["dit", "FluxTransformer2DModel", "WanTransformer3DModel"])
def test_each_tap_records_once_per_forward_and_once_per_backward(saved, which):
    """The recomputation runs the blocks (and, in Flux and Wan, the taps inside diffusers' checkpointed
    call) again: the recorder must not take those, nor hook their tensors."""
    if which == "dit":
        subject = open_subject(dit("residual"), LoadOptions(family="sit"))
    else:
        from dardiag.adapters.diffusers import diffusers_subject

        subject = diffusers_subject(saved[which], text_tokens=TEXT_TOKENS, **TINY[which].options)
    plain, plain_calls = _one_pass(subject, False)
    ckpt, ckpt_calls = _one_pass(subject, True)
    taps = {t.name for t in subject.spec.taps}
    assert ckpt_calls > plain_calls  # the blocks did run again in the backward
    for counts in (plain.forward, plain.backward, ckpt.forward, ckpt.backward):
        assert set(counts) == taps and set(counts.values()) == {1}, counts


def test_the_cost_line_says_both_and_chooses_checkpointing_when_the_plain_backward_does_not_fit(monkeypatch):
    model = dit("residual")
    kw = dict(samples=8, batch_size=4, noise_levels=[0.5], family="sit", analyses={"probe": False})
    lines: list[str] = []
    dardiag.profile(model, report=lines.append, **kw)
    plan = next(line for line in lines if line.startswith("plan: "))
    assert "with --checkpoint-blocks" in plan and not any("checkpointing every block" in line for line in lines)

    from dardiag.engine.config import ProfileConfig
    from dardiag.engine.plan import plan_models

    config = ProfileConfig(samples=8, batch_size=4, noise_levels=[0.5], device="cpu")
    p = plan_models([open_subject(model, LoadOptions(family="sit"))], config, None, None, "cpu")[0]
    c = cost.estimate(p, config, "cpu")
    assert c.checkpointed_bytes < c.minibatch_bytes
    room = int((c.checkpointed_bytes + c.cka_bytes) / cost.HEADROOM) + 1  # the checkpointed backward fits
    monkeypatch.setattr(cost, "free_memory", lambda device: room)
    lines.clear()
    df = dardiag.profile(model, report=lines.append, **kw)
    said = [line for line in lines if line.startswith("checkpointing every block")]
    plan = next(line for line in lines if line.startswith("plan: "))
    assert len(said) == 1 and "without checkpointing" in plan and "with every block checkpointed" in plan
    assert lines.index(said[0]) < lines.index(plan)
    assert not any(line.startswith("warning:") for line in lines)
    assert df.attrs["dardiag"]["settings"]["checkpoint_blocks"] is True
    lines.clear()
    dardiag.profile(model, report=lines.append, checkpoint_blocks=False, **kw)  # refused: warned instead
    assert any(line.startswith("warning:") and "--checkpoint-blocks" in line for line in lines)


def test_the_cli_flag_continues_a_plain_run(tmp_path, capsys):
    """Checkpointing does not change what is measured: a run started plain continues checkpointed."""
    from dardiag.checkpoints import save_checkpoint

    save_checkpoint(tmp_path / "m.pt", dit("residual"), family="sit", step=1)
    args = ["profile", tmp_path / "m.pt", "--out", tmp_path / "p", "--levels", "2", "--samples", "4",
            "--batch-size", "2", "--no-figures", "--no-progress"]
    code, text, err = run_cli(capsys, *args, "--no-checkpoint-blocks")
    assert code == 0, err
    code, text, err = run_cli(capsys, *args, "--checkpoint-blocks")  # no --force needed
    assert code == 0 and "complete" in text and "replacing" not in text, text + err

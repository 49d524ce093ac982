"""Every class of dardiag's diffusers table, built tiny and random, saved with ``save_pretrained`` and
profiled end to end; the coverage table (README) is the current one; unknown classes get a guess.

The tiny configs live in tests/diffusers_tiny.py (one per table entry, a test says which are missing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from dardiag.adapters.classes import TABLE, refusal  # noqa: E402
from dardiag.adapters.classes import coverage  # noqa: E402
from dardiag.adapters.diffusers import diffusers_subject  # noqa: E402
from dardiag.api import profile  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from dardiag.errors import DardiagError  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, TINY, build, save  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)
README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    cache = {}

    def get(cls: str) -> Path:
        if cls not in cache:
            cache[cls] = save(build(cls), root / cls)
        return cache[cls]
    return get


def subject_of(path: Path, cls: str):
    return diffusers_subject(path, text_tokens=TEXT_TOKENS, **TINY[cls].options)


def test_every_table_class_has_a_tiny_config():
    assert sorted(set(TABLE) - set(TINY)) == []


def test_every_diffusers_transformer_is_covered():
    """Each transformer/DiT class the installed diffusers exports is in the table (or resolved to a table
    class, as the legacy Transformer2DModel is) or refused by name."""
    left = [n for n, status, _ in coverage.rows() if status == "guessed"]
    assert left == [], f"neither in the table nor refused: {left}"


def test_the_readme_coverage_table_is_current():
    text = README.read_text()
    assert coverage.rewrite(text) == text, "run: python scripts/update_coverage.py"


@pytest.mark.parametrize("cls", sorted(TINY))
def test_profiles_end_to_end(saved, cls):
    s = subject_of(saved(cls), cls)
    entry = TABLE[cls]
    D = sum(len(s.model.get_submodule(st.path)) for st in entry.stacks)
    assert s.spec.depth == D and len(s.input_shape) == (4 if entry.video else 3)
    df = profile(s, samples=4, batch_size=4, noise_levels=[0.3, 0.8],
                 analyses=Analyses(probe=False, outliers=False))
    for metric in ("act_rms", "grad_rms", "cos_prev", "cka"):
        rows = df[df.metric == metric]
        first = 1 if metric == "cos_prev" else 0
        assert set(rows.block.astype(int)) == set(range(first, D + 1)), metric
        assert rows.value.notna().all() and torch.isfinite(torch.tensor(rows.value.to_numpy())).all(), metric
    assert (df[df.metric == "grad_rms"].value > 0).all()
    assert (df[df.metric == "act_rms"].value > 0).all()


@pytest.mark.parametrize("cls", sorted(TINY))
def test_prediction_has_the_latents_layout(saved, cls):
    s = subject_of(saved(cls), cls)
    n = 2
    x = torch.randn(n, *s.input_shape)
    t = torch.full((n,), 500) if s.family.integer_time else torch.full((n,), 0.5 * s.family.t_max)
    cond = s.make_cond(n, torch.arange(n)) if s.make_cond else None
    with torch.no_grad():
        out = s.call(s.model, x, t, torch.zeros(n, dtype=torch.long), cond)
    assert out.shape[0] == n and out.shape[1] >= x.shape[1] and out.shape[2:] == x.shape[2:]


WRAPPED = sorted(c for c in TINY if any(st.stream.wrapped for st in TABLE[c].stacks))


@pytest.mark.parametrize("cls", WRAPPED)
def test_wrapped_blocks_change_no_output(saved, cls):
    """Blocks wrapped so that the taps see their image tokens as (N, T, D) (a text part, a sequence-first
    or folded layout) return what they did: the wrapped model predicts what the plain one does."""
    s = subject_of(saved(cls), cls)
    plain = getattr(diffusers, cls).from_pretrained(saved(cls)).eval()
    n = 2
    x = torch.randn(n, *s.input_shape, generator=torch.Generator().manual_seed(2))
    t = torch.full((n,), 500) if s.family.integer_time else torch.full((n,), 0.5 * s.family.t_max)
    cond = s.make_cond(n, torch.arange(n)) if s.make_cond else None
    y = torch.zeros(n, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(s.call(s.model, x, t, y, cond), s.call(plain, x, t, y, cond), rtol=0, atol=0)


def test_a_class_that_is_not_a_dit_is_refused_by_name():
    for name, words in (("UNet2DConditionModel", "a UNet"), ("AutoencoderKL", "an autoencoder"),
                        ("FluxControlNetModel", "ControlNet"), ("StableAudioDiTModel", "audio")):
        reason = refusal(name)
        assert reason and words in reason, name


def test_an_unknown_transformer_class_gets_a_guess(saved):
    """A class the table does not know (here: SD3's, renamed) is profiled with its largest block list."""
    from dardiag.adapters.diffusers import diffusers_model_subject

    model = build("SD3Transformer2DModel")
    with pytest.warns(UserWarning, match=r"not in dardiag's table; guessed: blocks transformer_blocks \(2"):
        s = diffusers_model_subject(model, class_name="MyNewTransformer2DModel", text_tokens=TEXT_TOKENS)
    assert s.info["adapter"] == "guessed" and s.spec.depth == 2
    df = profile(s, samples=4, batch_size=4, noise_levels=[0.5], analyses=Analyses(probe=False, outliers=False))
    known = profile(subject_of(saved("SD3Transformer2DModel"), "SD3Transformer2DModel"), samples=4, batch_size=4,
                    noise_levels=[0.5], analyses=Analyses(probe=False, outliers=False))
    a = df[df.metric == "act_rms"].sort_values("block").value.to_numpy()
    b = known[known.metric == "act_rms"].sort_values("block").value.to_numpy()
    torch.testing.assert_close(torch.tensor(a), torch.tensor(b))  # same stream, same call


def test_blocks_flag_must_name_a_submodule():
    from dardiag.adapters.diffusers import diffusers_model_subject

    with pytest.raises(DardiagError, match="--blocks nowhere: .* its block lists: transformer_blocks"):
        diffusers_model_subject(build("SD3Transformer2DModel"), blocks=("nowhere",), text_tokens=TEXT_TOKENS)

"""A routed pipeline (``dardiag to-dar PIPELINE OUT_DIR``) keeps its text encoders: ``dardiag prompts`` encodes
with OUT_DIR as with the source, and the routed model profiles with that conditioning."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from dardiag.api import profile  # noqa: E402
from dardiag.convert.folder import convert_folder  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from dardiag.adapters.prompts import encode_prompts  # noqa: E402
from tests.test_prompts import PROMPTS, pipeline  # noqa: E402,F401  (a tiny Flux pipeline with its text encoders)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_routed_pipeline_encodes_prompts_and_profiles_with_them(pipeline, tmp_path):
    """`dardiag prompts --pipeline OUT_DIR`: a converted pipeline keeps its text encoders (hard links); their
    encoding is the source pipeline's, and the routed model profiles with it."""
    root, _ = pipeline
    out = tmp_path / "flux-dar"
    convert_folder(root, out, check_samples=0)
    want = encode_prompts(PROMPTS, root, max_length=8)
    got = encode_prompts(PROMPTS, out, max_length=8)
    torch.testing.assert_close(got["encoder_hidden_states"], want["encoder_hidden_states"])
    torch.save(got, tmp_path / "cond.pt")
    df = profile(str(out), conditioning=tmp_path / "cond.pt", noise_levels=[0.5], batch_size=4,
                 analyses=Analyses(probe=False, outliers=False, cka=False))
    assert set(df.routing) == {"dar-static_t-block"} and "route_alpha" in set(df.metric)
    assert set(df.inputs) == {"synthetic N(0, 1) latents (seed 0), conditioning cond.pt"}

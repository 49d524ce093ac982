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


def test_a_routed_pipeline_samples_with_its_routing_from_the_source_start(tmp_path):
    """The pipeline of OUT_DIR samples with the routed transformer (no flag): at the exact start its latents
    are the source pipeline's, and moved off the start they are not (the routing is in the sampler's path)."""
    from dardiag.pipelines.generate import generate
    from dardiag.pipelines.options import PipelineOptions
    from pipeline_fixtures import CALLS, SIZES, build_pipeline

    src = build_pipeline("flux", tmp_path)
    out = tmp_path / "flux-dar"
    convert_folder(src, out, check_samples=0)
    opts = PipelineOptions(prompts=("a photo of a cat", "a red house"), call=CALLS["flux"], **SIZES["flux"])
    kw = dict(options=opts, samples=2, steps=3, device="cpu")
    want = generate(src, tmp_path / "src.pt", **kw)["x0"]
    got = generate(out, tmp_path / "dar.pt", **kw)
    assert got["meta"]["routing"].startswith("dar"), got["meta"]
    torch.testing.assert_close(got["x0"], want, rtol=1e-4, atol=1e-5)
    from safetensors.torch import load_file, save_file

    routing = next(out.rglob("dardiag_routing.safetensors"))
    g = torch.Generator().manual_seed(0)
    save_file({k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in load_file(routing).items()}, routing)
    moved = generate(out, tmp_path / "moved.pt", **kw)["x0"]
    assert (moved - want).abs().max() > 1e-3

"""Single original files (as released, in the original key layout) load through diffusers' single-file
loader with a local --config; without one, offline, the error names the repo to copy.

The original file is made here from a tiny diffusers Wan model by undoing diffusers' key renames (Wan's
conversion is renames only), so the test checks the round trip: same weights, same outputs.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from safetensors.torch import save_file  # noqa: E402

from dardiag.adapters.open import open_subject  # noqa: E402
from dardiag.adapters.options import LoadOptions  # noqa: E402
from dardiag.checkpoints.single_file import is_single_file, model_type  # noqa: E402
from dardiag.errors import DardiagError  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, build, save  # noqa: E402

# diffusers name -> original name, applied in this order (the inverse of convert_wan_transformer_to_diffusers)
WAN_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn2", "cross_attn"), ("attn1", "self_attn"),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
    ("norm2", "norm__swap"), ("norm3", "norm2"), ("norm__swap", "norm3"),
    ("proj_out", "head.head"),
)


def original_wan(model) -> dict:
    out = {}
    for key, value in model.state_dict().items():
        new = key
        for a, b in WAN_ORIGINAL:
            new = new.replace(a, b)
        if new == "scale_shift_table":
            new = "head.modulation"
        elif new.endswith(".scale_shift_table"):
            new = new.replace("scale_shift_table", "modulation")
        out[f"model.diffusion_model.{new}"] = value.contiguous()
    return out


@pytest.fixture(scope="module")
def wan_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    model = build("WanTransformer3DModel")
    folder = save(model, root / "wan-diffusers")
    file = root / "wan2.1_tiny.safetensors"
    save_file(original_wan(model), str(file))
    return file, folder


def test_the_layout_is_recognised(wan_file):
    file, folder = wan_file
    assert model_type(file).startswith("wan") and is_single_file(file)
    assert not is_single_file(folder / "diffusion_pytorch_model.safetensors")  # diffusers layout: a folder's file


def test_a_single_file_equals_its_diffusers_folder(wan_file):
    file, folder = wan_file
    opts = LoadOptions(frames=3, text_tokens=TEXT_TOKENS, config=str(folder))
    a, b = open_subject(file, opts), open_subject(folder, opts.replace(config=None))
    assert a.info["class_name"] == "WanTransformer3DModel" and a.spec.depth == b.spec.depth
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(2, *a.input_shape)
    t = torch.full((2,), 500.0)
    cond = a.make_cond(2, torch.arange(2))
    with torch.no_grad():
        torch.testing.assert_close(a.call(a.model, x, t, None, cond), b.call(b.model, x, t, None, cond))


def test_bfloat16_weights_load_as_bfloat16(wan_file):
    file, folder = wan_file
    s = open_subject(file, LoadOptions(frames=3, config=str(folder), weights_dtype="bfloat16"))
    assert {p.dtype for p in s.model.parameters()} == {torch.bfloat16}


def test_offline_without_config_names_the_repo(wan_file, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    file, _ = wan_file
    with pytest.raises(DardiagError, match=r"pass --config DIR \(a copy of Wan-AI/.*/transformer"):
        open_subject(file, LoadOptions(frames=3))
    with pytest.raises(DardiagError, match="no config.json there"):
        open_subject(file, LoadOptions(frames=3, config=str(tmp_path)))

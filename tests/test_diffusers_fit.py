"""The rules issue 32 asks of every diffusers class: sizes come from the config when no flag names them,
a failure inside the model's own forward is one line (the class, the shapes, the model's message, the
flag), every top-level block list is profiled or said left out (in inspect and on the first lines), and
configs that are not image or video denoisers are refused by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

diffusers = pytest.importorskip("diffusers")

from dardiag.adapters.classes import TABLE, coverage, refusal  # noqa: E402
from dardiag.adapters.classes.spec import ClassEntry, Stack  # noqa: E402
from dardiag.adapters.diffusers import TableAdapter, diffusers_model_subject, diffusers_subject  # noqa: E402
from dardiag.adapters.failures import optional_import  # noqa: E402
from dardiag.api import profile  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from dardiag.errors import DardiagError  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, TINY, build, save  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
NONE = Analyses(cka=False, sublayers=False, routes=False, probe=False, outliers=False)


def profiles(s) -> None:
    df = profile(s, samples=1, batch_size=1, noise_levels=[0.5], analyses=NONE)
    assert torch.isfinite(torch.tensor(df[df.metric == "grad_rms"].value.to_numpy())).all()


#################################################################################
#                       Sizes come from the config                              #
#################################################################################


def test_a_short_rope_table_shrinks_the_default_size():
    """Wan's pipeline default (21 frames at 60 x 104) indexes past a 4-position rotary table: with no flag
    the sizes shrink to 4 frames of 8 x 8 (4 tokens a side, patch 2), said in the plan, and profile."""
    s = diffusers_model_subject(build("WanTransformer3DModel", rope_max_seq_len=4), text_tokens=TEXT_TOKENS)
    assert list(s.input_shape) == [4, 4, 8, 8]
    assert "rope_max_seq_len 4" in s.info["plan"]["sizes"]
    assert any("sizes from its config" in line for line in s.info["first_lines"])
    profiles(s)


def test_a_flag_past_the_table_is_refused_in_one_line():
    model = build("WanTransformer3DModel", rope_max_seq_len=4)
    with pytest.raises(DardiagError, match=r"--input-size 16: .* at most 8 latent height \(rope_max_seq_len 4"):
        diffusers_model_subject(model, input_size=16, text_tokens=TEXT_TOKENS)
    with pytest.raises(DardiagError, match=r"--frames 6: .* at most 4 frames"):
        diffusers_model_subject(model, frames=6, text_tokens=TEXT_TOKENS)
    s = diffusers_model_subject(model, input_size=8, frames=4, text_tokens=TEXT_TOKENS)  # at the limit: taken
    assert list(s.input_shape) == [4, 4, 8, 8] and s.info["plan"]["sizes"] == ""


def test_a_default_side_the_patch_does_not_divide_is_rounded_down():
    """A config's sample size of 10 latent pixels with 4-pixel patches: 8 with no flag (said), a refusal as a flag."""
    model = build("DiTTransformer2DModel", sample_size=10, patch_size=4)
    s = diffusers_model_subject(model)
    assert list(s.input_shape) == [4, 8, 8] and "a multiple of the patch 4" in s.info["plan"]["sizes"]
    profiles(s)
    with pytest.raises(DardiagError, match="--input-size 10: the latent side must be a positive multiple"):
        diffusers_model_subject(model, input_size=10)


def test_the_caption_positions_of_axes_lens_bound_the_text_tokens(tmp_path):
    """Lumina-2 places the caption on the first rotary axis, then the image: 256 pipeline tokens do not fit a
    32-position table, 31 do (saved and loaded, as a user's folder)."""
    path = save(build("Lumina2Transformer2DModel", axes_lens=(32, 16, 16)), tmp_path / "lumina2")
    s = diffusers_subject(path)
    assert s.make_cond.shapes["encoder_hidden_states"][0] == 31
    profiles(s)
    with pytest.raises(DardiagError, match=r"--text-tokens 64: .* at most 31 text tokens \(axes_lens\[0\] 32"):
        diffusers_subject(path, text_tokens=64)


def test_position_embeddings_of_fixed_text_length_take_exactly_it():
    """CogVideoX's sin-cos position embedding has rows for max_text_seq_length text tokens: the default
    follows it, not the pipeline's 226."""
    model = build("CogVideoXTransformer3DModel", use_rotary_positional_embeddings=False, patch_size_t=None,
                  ofs_embed_dim=None, in_channels=4, max_text_seq_length=5)
    s = diffusers_model_subject(model, frames=3)
    assert s.make_cond.shapes["encoder_hidden_states"][0] == 5
    profiles(s)


def test_a_pad_token_id_of_zero_keeps_synthetic_ids_in_range():
    """OmniGen's ordinary ids follow pad_token_id 0 (diffusers' own test config): ids 1..vocab-1."""
    from dardiag.adapters.classes.image import _token_ids

    z = torch.randn(2, 500, generator=torch.Generator().manual_seed(0))
    ids = _token_ids(z, 1, 100)
    assert ids.min() >= 1 and ids.max() <= 99 and len(ids.unique()) > 50
    s = diffusers_model_subject(build("OmniGenTransformer2DModel", pad_token_id=0), text_tokens=TEXT_TOKENS)
    profiles(s)


#################################################################################
#                    A failure inside the model is one line                     #
#################################################################################


def test_a_rotary_helper_that_rejects_the_head_dim_is_one_line():
    """Allegro with 8-dim heads (diffusers' own test config): its 3-D rotary split cannot be applied at any
    size. The error names the class, what dardiag passed, the model's message and what (not) to change."""
    s = diffusers_model_subject(build("AllegroTransformer3DModel", attention_head_dim=8), text_tokens=TEXT_TOKENS)
    x = torch.randn(1, *s.input_shape)
    with pytest.raises(DardiagError) as err:
        s.call(s.model, x, torch.full((1,), 500), None, s.make_cond(1, torch.arange(1)))
    msg = str(err.value)
    assert "\n" not in msg
    for words in ("AllegroTransformer3DModel failed in its own forward", f"latents {list(x.shape)}",
                  f"encoder_hidden_states [1, {TEXT_TOKENS}, ", "RuntimeError: The size of tensor a",
                  "--input-size", "--frames", "--text-tokens", "head dimension 8"):
        assert words in msg, (words, msg)


def test_a_bug_in_dardiags_own_call_keeps_its_traceback():
    """Only failures raised inside diffusers become one line: an error of dardiag's own code stays a bug."""
    model = build("DiTTransformer2DModel")

    def broken(m, x, t, y, cond):
        raise ValueError("dardiag's own mistake")
    entry = ClassEntry("DiTTransformer2DModel", (Stack("transformer_blocks"),), "dit", broken)
    adapter = TableAdapter(model, entry, {})
    with pytest.raises(ValueError, match="dardiag's own mistake"):
        adapter.call(model, torch.randn(1, 4, 8, 8), torch.full((1,), 500), torch.zeros(1, dtype=torch.long), None)


def test_a_name_imported_only_with_an_optional_package_is_named():
    """Cosmos resizes its padding mask with torchvision, which diffusers imports only when installed."""
    where = "forward in diffusers/models/transformers/transformer_cosmos.py"
    assert optional_import(where, "transforms") == "torchvision"
    assert optional_import(where, "no_such_name") is None


#################################################################################
#           Every top-level block list is profiled or said left out             #
#################################################################################


def _has_attention(module: nn.Module) -> bool:
    return any("Attention" in type(m).__name__ for m in module.modules())


def block_lists(model: nn.Module, accounted) -> list[str]:
    """ModuleLists of attention blocks outside the accounted paths and outside each other."""
    found: list[str] = []
    for path, m in model.named_modules():
        if not (isinstance(m, nn.ModuleList) and len(m) and all(_has_attention(b) for b in m)):
            continue
        if any(path == a or path.startswith(a + ".") for a in [*accounted, *found]):
            continue
        found.append(path)
    return found


@pytest.mark.parametrize("cls", sorted(TINY))
def test_every_block_list_is_profiled_or_said_left_out(cls):
    entry = TABLE[cls]
    accounted = [*entry.stack_paths(), *(path for path, _ in entry.left_out)]
    assert block_lists(build(cls), accounted) == [], f"{cls}: neither a stack nor in left_out"


def test_a_branch_left_out_is_said_on_the_first_lines():
    """WanAnimate's face adapter (cross-attention beside the main blocks) is named, with why, before the
    profile starts and in the plan inspect prints."""
    s = diffusers_model_subject(build("WanAnimateTransformer3DModel"), frames=3, text_tokens=TEXT_TOKENS)
    assert "face_adapter" in s.info["plan"]["left_out"]
    lines = []
    profile(s, samples=1, batch_size=1, noise_levels=[0.5], analyses=NONE, report=lines.append)
    said = [line for line in lines if "left out" in line]
    assert said and "face_adapter (face cross-attention" in said[0]


#################################################################################
#                          Refused by name, in one line                         #
#################################################################################


def test_classes_that_are_not_image_or_video_denoisers_are_refused_by_name():
    for name, words in (("LongCatAudioDiTTransformer", "audio"), ("Cosmos3OmniTransformer", "packed"),
                        ("Transformer2DModel (norm_type layer_norm)", "UNets use inside their blocks")):
        assert words in (refusal(name) or ""), name
    rows = {name: status for name, status, _ in coverage.rows()}
    assert rows["LongCatAudioDiTTransformer"] == rows["Cosmos3OmniTransformer"] == "refused"


def test_a_config_without_in_channels_is_one_line():
    """An unknown class whose config has no in_channels (an audio DiT, renamed): said, not a KeyError."""
    model = diffusers.LongCatAudioDiTTransformer(dit_dim=64, dit_depth=2, dit_heads=4, dit_text_dim=32,
                                                 latent_dim=8, text_conv=False)
    with pytest.warns(UserWarning, match="guessed"), \
            pytest.raises(DardiagError, match="config has no in_channels, from which dardiag reads the latent"):
        diffusers_model_subject(model, class_name="MyAudioDiTTransformer")

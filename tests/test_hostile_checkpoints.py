"""Hostile and damaged checkpoint files: every one is a one-line ``DardiagError`` naming what is wrong,
both from ``load_model`` and from ``dardiag inspect`` (exit 2, one ``error:`` line), never a traceback,
and nothing in a file ever runs.

Every case is built here from a tiny model (width 384, a preset width, so no flag is needed).
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dardiag.checkpoints import checkpoint_dict, load_model, read_file
from dardiag.cli.app import app
from dardiag.errors import DardiagError
from dardiag.models import DiT, DiTConfig

pytestmark = pytest.mark.usefixtures("single_thread")

FLAGS = {"family": "--family", "num_heads": "--num-heads", "input_size": "--input-size"}


@pytest.fixture(scope="module")
def model() -> DiT:
    torch.manual_seed(0)
    cfg = DiTConfig(input_size=4, patch_size=2, in_channels=4, hidden_size=384, depth=1, num_heads=6,
                    num_classes=10)
    return DiT(cfg).eval()


@pytest.fixture(scope="module")
def sd(model) -> dict:
    return model.state_dict()


def save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def write(data: bytes, path: Path) -> Path:
    path.write_bytes(data)
    return path


def inspect_error(path: Path, **kw) -> str:
    """``dardiag inspect`` in-process: exit status 2 and exactly one ``error:`` line."""
    argv = ["inspect", str(path)]
    for name, value in kw.items():
        argv += [FLAGS[name], str(value)]
    with pytest.raises(SystemExit) as exc:
        app(argv)
    assert exc.value.code == 2
    return exc.value


def expect_error(path: Path, needles: tuple[str, ...], capsys=None, **kw) -> str:
    """The same one-line message from ``load_model`` and, given ``capsys``, from ``dardiag inspect``."""
    with pytest.raises(DardiagError) as exc:
        load_model(path, **kw)
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg
    if capsys is not None:
        capsys.readouterr()
        inspect_error(path, **kw)
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [f"error: {msg}"]
    return msg


#################################################################################
#                     Files that are not checkpoints at all                     #
#################################################################################


CONTENTS = {
    "text": (b"hello world\n", ("text/HTML", "not a checkpoint", "failed download")),
    "one-byte": (b"e", ("text/HTML", "not a checkpoint")),
    "html": (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>", ("text/HTML", "404 Not Found")),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 123\n",
            ("Git LFS pointer", "git lfs pull")),
    "zeros": (b"\x00" * 10, ("truncated or not a PyTorch checkpoint",)),
    "pickle-indexerror": (b"\x80\x02e", ("truncated or not a PyTorch checkpoint",)),  # was IndexError
    "pickle-keyerror": (b"\x80\x02}q\x00h\x01.", ("truncated or not a PyTorch checkpoint",)),  # was KeyError
    "control-bytes": (b"\x01e", ("truncated or not a PyTorch checkpoint",)),
}


@pytest.mark.parametrize("name", list(CONTENTS))
def test_content_says_what_the_file_is(tmp_path, capsys, name):
    data, needles = CONTENTS[name]
    msg = expect_error(write(data, tmp_path / "x.pt"), needles, capsys, family="dit")
    assert "arbitrary code" not in msg


def test_numpy_array(tmp_path, capsys):
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    expect_error(write(buf.getvalue(), tmp_path / "x.pt"), ("NumPy array",), capsys, family="dit")


def test_lfs_pointer_named_safetensors(tmp_path):
    path = write(CONTENTS["lfs"][0], tmp_path / "model.safetensors")
    expect_error(path, ("Git LFS pointer",), family="dit")


def test_safetensors_renamed_pt_loads_as_safetensors(tmp_path, sd):
    from safetensors.torch import save_file

    path = tmp_path / "model.pt"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    loaded, info = load_model(path, family="dit")
    assert info.file_format == "safetensors"
    for k, v in sd.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_random_bytes_never_traceback(tmp_path, sd):
    """A small seeded version of the audit's fuzz run: garbage, truncations and flipped bytes."""
    rng = random.Random(0)
    good = io.BytesIO()
    torch.save(sd, good)
    good = good.getvalue()
    cases = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) for _ in range(60)]
    cases += [good[: rng.randrange(1, len(good))] for _ in range(10)]
    path = tmp_path / "fz.pt"
    for data in cases:
        path.write_bytes(data)
        try:
            read_file(path)
        except DardiagError as e:
            assert "\n" not in str(e)


class Marker:
    """Unpickling this would run ``Path.touch(marker)``: the proof that no code from a file ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("layout", ["torch.save", "plain pickle"])
def test_code_bearing_pickle_names_the_global(tmp_path, capsys, sd, layout):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    if layout == "torch.save":
        save({"model": sd, "extra": Marker(marker)}, path)
    else:  # torch's unpickler stops at an opcode before naming the global: dardiag reads it unrun
        path.write_bytes(pickle.dumps({"extra": Marker(marker)}, protocol=4))
    msg = expect_error(path, ("pathlib.Path", "refused", "nothing in it ran", "state_dict()"),
                       capsys, family="dit")
    assert "Weights only load failed" not in msg
    assert not marker.exists()


def test_permission_denied(tmp_path, capsys, sd, monkeypatch):
    path = save(sd, tmp_path / "x.pt")

    def denied(*args, **kwargs):  # root reads any file, so chmod cannot test this
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("dardiag.checkpoints.files.open", denied, raising=False)
    msg = expect_error(path, ("cannot read", "permission denied"), capsys, family="dit")
    assert "truncated" not in msg and "re-download" not in msg


#################################################################################
#                        State dicts with unusable entries                      #
#################################################################################


def _replace(key, value):
    return lambda sd: {**sd, key: value}


STATE_DICTS = {
    "non-numeric block": (_replace("blocks.abc.w", torch.zeros(1)), ("blocks.abc.w", "block number")),
    "non-string key": (_replace(1, torch.zeros(1)), ("key 1", "str")),
    "non-tensor value": (_replace("blocks.0.extra", "text"), ("blocks.0.extra", "not a tensor")),
    "1-D pos_embed": (_replace("pos_embed", torch.zeros(15)), ("pos_embed", "[15]", "[1, T, H]")),
    "non-square pos_embed": (_replace("pos_embed", torch.zeros(1, 3, 384)), ("pos_embed", "square")),
    "2-D patch conv": (_replace("x_embedder.proj.weight", torch.zeros(384, 4)),
                       ("x_embedder.proj.weight", "[H, C, p, p]")),
    "int64 weight": (_replace("blocks.0.attn.qkv.weight", torch.zeros(1152, 384, dtype=torch.int64)),
                     ("blocks.0.attn.qkv.weight", "int64", "floating point")),
    "0-row label table": (_replace("y_embedder.embedding_table.weight", torch.zeros(0, 384)),
                          ("y_embedder.embedding_table.weight", "[0, 384]", "num_classes")),
    "qkv of another width": (_replace("blocks.0.attn.qkv.weight", torch.zeros(1152, 96)),
                             ("blocks.0.attn.qkv.weight", "H = 384")),
    "gap in blocks": (_replace("blocks.5.mlp.fc2.bias", torch.zeros(384)), ("without gaps", "blocks.1")),
    "meta tensor": (_replace("final_layer.linear.bias", torch.empty(8, device="meta")),
                    ("final_layer.linear.bias", "meta tensor")),
}


@pytest.mark.parametrize("name", list(STATE_DICTS))
def test_bad_state_dict_entry(tmp_path, capsys, sd, name):
    change, needles = STATE_DICTS[name]
    expect_error(save(change(sd), tmp_path / "bad.pt"), needles, capsys, family="dit")


def test_bad_entry_inside_training_checkpoint(tmp_path, sd):
    obj = {"model": sd, "ema": {**sd, "blocks.0.extra": [1, 2]}, "args": argparse.Namespace(model="DiT-S/2")}
    expect_error(save(obj, tmp_path / "0000100.pt"), ("blocks.0.extra", "list", "not a tensor"))


#################################################################################
#                           dardiag metadata and flags                          #
#################################################################################


def _meta(model, **config):
    obj = checkpoint_dict(model, family="dit")
    obj["dardiag"]["config"].update(config)
    return obj


@pytest.mark.parametrize("config, needles", [
    ({"depth": "x"}, ("damaged dardiag metadata", "depth", "'x'", "positive int")),
    ({"num_heads": 0}, ("damaged dardiag metadata", "num_heads", "positive int")),
    ({"mlp_ratio": float("nan")}, ("mlp_ratio", "positive float")),
    ({"learn_sigma": "yes"}, ("learn_sigma", "bool")),
    ({"num_heads": 5}, ("damaged dardiag metadata", "not divisible")),
    ({"colour": "red"}, ("damaged dardiag metadata", "colour")),
], ids=["depth-str", "heads-0", "mlp-nan", "sigma-str", "heads-5", "unknown-field"])
def test_damaged_dardiag_metadata(tmp_path, capsys, model, config, needles):
    expect_error(save(_meta(model, **config), tmp_path / "m.pt"), needles, capsys)


def test_metadata_without_family_is_damaged_not_a_disagreement(tmp_path, capsys, model):
    obj = checkpoint_dict(model, family="dit")
    del obj["dardiag"]["family"]
    msg = expect_error(save(obj, tmp_path / "m.pt"), ("damaged dardiag metadata", "family None"), capsys,
                       family="dit")
    assert "disagrees" not in msg


def test_metadata_that_is_not_a_dict(tmp_path, sd):
    expect_error(save({"dardiag": "v1", "model": sd}, tmp_path / "m.pt"), ("damaged dardiag metadata",))


@pytest.mark.parametrize("kw, needles", [
    ({"num_heads": 0}, ("--num-heads must be a positive integer", "0")),
    ({"num_heads": -4}, ("--num-heads must be a positive integer", "-4")),
    ({"num_heads": 5, "input_size": 4}, ("--num-heads 5 does not divide the hidden size 384",)),
    ({"input_size": 0}, ("--input-size must be a positive integer",)),
    ({"input_size": 7}, ("latent side 7", "--input-size", "multiple of the patch size 2")),
], ids=["heads-0", "heads-neg", "heads-5", "input-0", "input-7"])
def test_bad_flag_values(tmp_path, capsys, sd, kw, needles):
    nopos = save({k: v for k, v in sd.items() if k != "pos_embed"}, tmp_path / "nopos.pt")
    expect_error(nopos, needles, capsys, family="dit", **kw)


def test_input_size_must_agree_with_dardiag_metadata(tmp_path, model):
    path = save(checkpoint_dict(model, family="dit"), tmp_path / "m.pt")
    expect_error(path, ("--input-size 8 disagrees", "4"), input_size=8)


#################################################################################
#              Attention heads and steps of official training files             #
#################################################################################


def training(sd, path: Path, **extra) -> Path:
    """The DiT/SiT training layout: ``{"model", "ema", "opt", "args"}`` and no step entry."""
    args = argparse.Namespace(model="DiT-S/2", image_size=32)
    return save({"model": sd, "ema": sd, "opt": {}, "args": args, **extra}, path)


def test_num_heads_flag_must_agree_with_saved_args(tmp_path, capsys, sd):
    path = training(sd, tmp_path / "ckpt.pt")
    expect_error(path, ("--num-heads 4 disagrees", "args.model=DiT-S/2 says 6"), capsys, num_heads=4)
    _, info = load_model(path, num_heads=6)
    assert info.config.num_heads == 6 and info.sources["num_heads"] == "--num-heads"


def test_num_heads_flag_overrides_a_preset_width_guess_and_says_so(tmp_path, sd):
    """A bare state dict of width 384 need not be DiT-S: the flag is how a non-standard model loads."""
    _, info = load_model(save(sd, tmp_path / "w384.pt"), family="dit", num_heads=4)
    assert info.config.num_heads == 4
    assert info.sources["num_heads"] == "--num-heads (overrides preset width 384 -> 6)"


def test_step_from_official_training_file_name(tmp_path, sd):
    _, info = load_model(training(sd, tmp_path / "0400000.pt"))
    assert info.step == 400000 and info.sources["step"] == "file name"


def test_step_entry_wins_over_file_name(tmp_path, sd):
    _, info = load_model(training(sd, tmp_path / "0400000.pt", steps=123))  # REPA saves "steps"
    assert info.step == 123 and info.sources["step"] == "'steps' entry"


@pytest.mark.parametrize("name, bare", [("last.pt", False), ("0400000.pt", True)])
def test_no_step_without_entry_or_digit_name(tmp_path, sd, name, bare):
    path = save(sd, tmp_path / name) if bare else training(sd, tmp_path / name)
    _, info = load_model(path, family="dit")
    assert info.step is None and "step" not in info.sources


#################################################################################
#                          diffusers config.json values                         #
#################################################################################


@pytest.fixture(scope="module")
def diffusers_dir(tmp_path_factory) -> Path:
    import diffusers

    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        sample_size=8, patch_size=2, num_embeds_ada_norm=10,
    )
    path = tmp_path_factory.mktemp("diffusers") / "dit"
    model.save_pretrained(path)
    return path


def _edited_copy(src: Path, dst: Path, **changes) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, **changes}))
    return dst


def _diffusers_error(path: Path, capsys) -> str:
    from dardiag.adapters.diffusers import diffusers_subject

    with pytest.raises(DardiagError) as exc:
        diffusers_subject(path)
    msg = str(exc.value)
    assert "\n" not in msg
    capsys.readouterr()
    inspect_error(path)
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {msg}"]
    return msg


@pytest.mark.parametrize("changes, needles", [
    ({"num_layers": "two"}, ("num_layers", "'two'", "positive integer")),
    ({"sample_size": 0}, ("sample_size", "positive integer")),
    ({"sample_size": 7}, ("sample_size 7", "patch_size 2")),
    ({"num_layers": None}, ("cannot build DiTTransformer2DModel",)),
    ({"norm_type": "bogus"}, ("cannot build DiTTransformer2DModel", "bogus")),
], ids=["layers-str", "sample-0", "sample-7", "layers-null", "norm-bogus"])
def test_diffusers_config_values(tmp_path, capsys, diffusers_dir, changes, needles):
    msg = _diffusers_error(_edited_copy(diffusers_dir, tmp_path / "dit", **changes), capsys)
    assert "config.json" in msg
    for needle in needles:
        assert needle in msg, msg


def test_diffusers_integer_weights(tmp_path, capsys, diffusers_dir):
    from safetensors.torch import load_file, save_file

    path = _edited_copy(diffusers_dir, tmp_path / "dit")
    file = path / "diffusion_pytorch_model.safetensors"
    weights = load_file(str(file))
    key = "proj_out_2.weight"
    weights[key] = weights[key].to(torch.int64)
    save_file(weights, str(file))
    msg = _diffusers_error(path, capsys)
    assert key in msg and "int64" in msg


def test_diffusers_weights_that_are_an_lfs_pointer(tmp_path, capsys, diffusers_dir):
    """The common case of a model repository cloned without git-lfs."""
    path = _edited_copy(diffusers_dir, tmp_path / "dit")
    (path / "diffusion_pytorch_model.safetensors").write_bytes(CONTENTS["lfs"][0])
    msg = _diffusers_error(path, capsys)
    assert "diffusion_pytorch_model.safetensors is a Git LFS pointer" in msg


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_torch_file_named_safetensors_is_read_by_its_content(tmp_path, model, zip_format):
    """torch >= 2.13 reads any path named .safetensors as safetensors ("header too large"): the content
    decides here, as for every other name."""
    path = tmp_path / "model.safetensors"
    torch.save(checkpoint_dict(model, family="dit"), path, _use_new_zipfile_serialization=zip_format)
    loaded, info = load_model(path)
    assert info.file_format == "dardiag" and info.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))

"""The strict checkpoint loader (checkpoints.md): one line per bad input, every real layout loads.

Bad inputs must raise ``DardiagError`` whose message names the problem; good ones must reproduce the
official model's output (fixtures/README.md) or round-trip bit-exactly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn

from dardiag.checkpoints import checkpoint_dict, load_model, save_checkpoint
from dardiag.errors import DardiagError
from dardiag.models import DiT, DiTConfig

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def official_sd(official_ckpt) -> dict:
    return torch.load(official_ckpt, map_location="cpu", weights_only=True)


def save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def assert_reproduces(model, ref, atol=1e-5):
    with torch.no_grad():
        out = model(ref["x"], ref["t"], ref["y"])
    torch.testing.assert_close(out, ref["out"], atol=atol, rtol=0)


def expect_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(DardiagError, match=match) as exc:
        load_model(*args, **kwargs)
    msg = str(exc.value)
    assert "\n" not in msg, "one-line message"
    return msg


def small_model(hidden: int = 384, heads: int = 6, seed: int = 0, **kw) -> DiT:
    """Width-384 (a preset width) but depth 1 and 4 tokens: small enough to build in milliseconds."""
    torch.manual_seed(seed)
    cfg = DiTConfig(input_size=4, patch_size=2, in_channels=4, hidden_size=hidden, depth=1,
                    num_heads=heads, num_classes=10, **kw)
    model = DiT(cfg).eval()
    with torch.no_grad():  # adaLN-Zero and the zero head would make every output equal
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.normal_(0, 0.02)
    return model


def small_inputs(cfg: DiTConfig, n: int = 2):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    return x, torch.tensor([3, 700])[:n], torch.tensor([1, 7])[:n]


class Marker:
    """Unpickling this would run ``Path.touch(marker)``: the proof that no code from a file ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


#################################################################################
#                       Bad inputs: one line, one message each                  #
#################################################################################


def test_missing_file(tmp_path):
    expect_error("no such file", tmp_path / "nope.pt", family="dit", num_heads=4)


def test_directory_without_config_json(tmp_path):
    msg = expect_error("is a directory", tmp_path, family="dit", num_heads=4)
    assert "config.json" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    expect_error("empty", path, family="dit", num_heads=4)


def test_truncated_file(tmp_path, official_ckpt):
    data = official_ckpt.read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    expect_error("truncated", path, family="dit", num_heads=4)


def test_pickle_needing_code_is_refused_unrun(tmp_path, official_sd):
    marker = tmp_path / "code_ran"
    path = save({"model": official_sd, "extra": Marker(marker)}, tmp_path / "evil.pt")
    msg = expect_error("refused", path, family="dit", num_heads=4)
    assert "nothing in it ran" in msg and "pathlib.Path" in msg  # names what it would have run
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the trap is armed: a trusting load does run it
    assert marker.exists()


@pytest.mark.parametrize("obj", [["a", "b"], {"a": "b", "c": "d"}, {}], ids=["list", "dict-of-str", "empty-dict"])
def test_not_a_checkpoint(tmp_path, obj):
    path = save(obj, tmp_path / "x.pt")
    expect_error("is not a checkpoint", path, family="dit", num_heads=4)


def test_not_a_dit(tmp_path):
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Linear(8, 2))
    path = save(other.state_dict(), tmp_path / "other.pt")
    msg = expect_error("not a DiT/SiT checkpoint", path, family="dit", num_heads=4)
    assert "x_embedder.proj.weight" in msg


def test_shape_mismatch_bare_state_dict(tmp_path, official_sd):
    sd = dict(official_sd)
    sd["blocks.2.attn.proj.weight"] = torch.zeros(128, 64)
    path = save(sd, tmp_path / "bad.pt")
    msg = expect_error("shape mismatch", path, family="dit", num_heads=4)
    assert "blocks.2.attn.proj.weight" in msg and "[128, 64]" in msg and "[128, 128]" in msg


def test_shape_mismatch_dardiag_checkpoint(tmp_path):
    model = small_model(routing="dar", query="dynamic", chunk_size=2)
    obj = checkpoint_dict(model, family="sit")
    obj["model"]["routing.aggregators.3.query.weight"] = torch.zeros(384, 383)
    path = save(obj, tmp_path / "bad.pt")
    msg = expect_error("shape mismatch", path)
    assert "routing.aggregators.3.query.weight" in msg


def test_nan_weights_warn_but_load(tmp_path, official_sd, official_reference):
    sd = dict(official_sd)
    w = sd["blocks.4.mlp.fc2.bias"].clone()
    w[3] = float("nan")
    sd["blocks.4.mlp.fc2.bias"] = w
    path = save(sd, tmp_path / "nan.pt")
    with pytest.warns(UserWarning, match=r"blocks\.4\.mlp\.fc2\.bias has 1 non-finite"):
        model, info = load_model(path, family="dit", num_heads=4)
    assert info.warnings == ["blocks.4.mlp.fc2.bias has 1 non-finite values (NaN/inf)"]
    assert torch.isnan(model.blocks[4].mlp.fc2.bias).sum() == 1


def test_non_preset_width_needs_num_heads(official_ckpt):
    msg = expect_error("--num-heads", official_ckpt, family="dit")
    assert "128" in msg


def test_bare_state_dict_needs_family(official_ckpt):
    msg = expect_error("--family", official_ckpt, num_heads=4)
    assert "dit" in msg and "sit" in msg


def test_unknown_family_flag(official_ckpt):
    expect_error("unknown family", official_ckpt, family="flux", num_heads=4)


#################################################################################
#                           Good inputs: every layout loads                     #
#################################################################################


def test_bare_state_dict_with_flags(official_ckpt, official_reference):
    model, info = load_model(official_ckpt, family="dit", num_heads=4)
    assert info.file_format == "state_dict" and info.weights == "state_dict"
    assert (info.config.depth, info.config.hidden_size, info.config.in_channels) == (6, 128, 1)
    assert info.config.learn_sigma and info.config.num_classes == 10 and info.config.input_size == 16
    assert info.ignored_keys == [] and info.rebuilt == [] and info.warnings == []
    assert_reproduces(model, official_reference)


def test_training_checkpoint_prefers_ema_and_reads_args(tmp_path):
    ema, raw = small_model(seed=0), small_model(seed=1)
    args = argparse.Namespace(model="SiT-S/2", path_type="Linear", prediction="velocity",
                              image_size=32, global_batch_size=256)
    opt = torch.optim.AdamW(raw.parameters()).state_dict()
    obj = {"model": raw.state_dict(), "ema": ema.state_dict(), "opt": opt, "args": args}
    path = save(obj, tmp_path / "0400000.pt")
    model, info = load_model(path)  # no flags
    assert info.family == "sit" and info.weights == "ema" and info.file_format == "training"
    assert info.config.num_heads == 6 and info.sources["num_heads"] == "args.model=SiT-S/2"
    for k, v in ema.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    raw_model, raw_info = load_model(path, weights="model")
    assert raw_info.weights == "model"
    assert torch.equal(raw_model.blocks[0].attn.qkv.weight, raw.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_prefixes_are_stripped(tmp_path, official_sd, official_reference, prefix):
    path = save({prefix + k: v for k, v in official_sd.items()}, tmp_path / "ddp.pt")
    model, _ = load_model(path, family="dit", num_heads=4)
    assert_reproduces(model, official_reference)


def test_safetensors(tmp_path, official_sd, official_reference):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in official_sd.items()}, str(path))
    model, info = load_model(path, family="dit", num_heads=4)
    assert info.file_format == "safetensors"
    assert_reproduces(model, official_reference)


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    expect_error("not a readable safetensors", path, family="dit", num_heads=4)


def repa_projectors() -> dict:
    proj = {}
    for k in range(2):  # one MLP per target encoder: Linear, SiLU, Linear, SiLU, Linear
        for j, shape in ((0, (256, 128)), (2, (256, 256)), (4, (64, 256))):
            proj[f"projectors.{k}.{j}.weight"] = torch.randn(shape)
            proj[f"projectors.{k}.{j}.bias"] = torch.randn(shape[0])
    return proj


def test_repa_projectors_ignored_and_named(tmp_path, official_sd, official_reference):
    proj = repa_projectors()
    path = save({**official_sd, **proj}, tmp_path / "last.pt")
    model, info = load_model(path, family="repa", num_heads=4)
    assert info.family == "repa"
    assert info.ignored_keys == sorted(proj)
    assert_reproduces(model, official_reference)


def test_repa_family_read_from_projector_keys(tmp_path, official_sd):
    path = save({**official_sd, **repa_projectors()}, tmp_path / "last.pt")
    _, info = load_model(path, num_heads=4)  # no --family: the projector keys say REPA
    assert info.family == "repa"
    assert info.sources["family"] == "REPA projector keys / args"


def test_legacy_repa_decoder_blocks(tmp_path, official_sd, official_reference):
    enc = 4  # blocks 0..3 keep their names; blocks 4, 5 become decoder_blocks 0, 1
    sd = {}
    for k, v in official_sd.items():
        if k.startswith("blocks.") and int(k.split(".")[1]) >= enc:
            _, i, rest = k.split(".", 2)
            k = f"decoder_blocks.{int(i) - enc}.{rest}"
        sd[k] = v
    assert any(k.startswith("decoder_blocks.1.") for k in sd)
    path = save(sd, tmp_path / "legacy.pt")
    model, info = load_model(path, family="repa", num_heads=4)
    assert info.config.depth == 6
    assert_reproduces(model, official_reference)


def test_missing_pos_embed_is_rebuilt(tmp_path, official_sd, official_reference):
    sd = {k: v for k, v in official_sd.items() if k != "pos_embed"}
    path = save(sd, tmp_path / "nopos.pt")
    expect_error("--input-size", path, family="dit", num_heads=4)
    model, info = load_model(path, family="dit", num_heads=4, input_size=16)
    assert info.rebuilt == ["pos_embed"]
    # the official file's table is ~1e-5 off the exact sin-cos table (it is an EMA parameter: most
    # likely float32 rounding of 3,000 EMA updates of a constant); the rebuilt one is exact
    torch.testing.assert_close(model.pos_embed, official_sd["pos_embed"], atol=3e-5, rtol=0)
    assert_reproduces(model, official_reference, atol=1e-4)


def test_preset_width_needs_no_num_heads(tmp_path):
    model = small_model()
    path = save(model.state_dict(), tmp_path / "w384.pt")
    loaded, info = load_model(path, family="dit")
    assert info.config.num_heads == 6 and info.sources["num_heads"] == "preset width 384"
    x, t, y = small_inputs(model.config)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))


@pytest.mark.parametrize("with_ema", [False, True], ids=["model-only", "with-ema"])
def test_dardiag_checkpoint_round_trips_bit_exactly(tmp_path, with_ema):
    model = small_model(routing="dar", query="dynamic", chunk_size=2, seed=0)
    ema = small_model(routing="dar", query="dynamic", chunk_size=2, seed=1) if with_ema else None
    path = tmp_path / "run" / "step_7.pt"
    save_checkpoint(path, model, family="sit", ema=ema, step=7)
    loaded, info = load_model(path)  # no flags
    want = ema if with_ema else model
    assert info.file_format == "dardiag" and info.family == "sit" and info.step == 7
    assert info.weights == ("ema" if with_ema else "model")
    assert info.config == model.config and info.config.routing_name == "dar-dynamic-c2"
    a, b = loaded.state_dict(), want.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x, t, y = small_inputs(model.config)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), want(x, t, y))
    assert not list(path.parent.glob(".*")), "no temporary file left behind"


def test_dardiag_checkpoint_flags_must_agree(tmp_path):
    model = small_model(routing="dar", query="static", chunk_size=1)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, family="sit")
    expect_error("--family dit disagrees", path, family="dit")
    expect_error("--num-heads 3 disagrees", path, num_heads=3)
    load_model(path, family="sit", num_heads=6)

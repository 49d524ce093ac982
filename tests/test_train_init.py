"""``train --init``: fine-tuning starts from the file's function (a converted DAR model's first loss
is the residual model's), LoRA trains only its factors and the routing and resumes bit-identically,
and model flags that contradict the file are refused."""

from __future__ import annotations

import pytest
import torch

from dardiag.checkpoints import load_model
from dardiag.convert import convert_file
from dardiag.data import digits_latents
from dardiag.families import get_family
from dardiag.train import train
from dardiag.train.init import init_config
from dardiag.train.rng import seed_for
from dardiag.train.trainer import DIGITS_SPLIT_SEED, _draw
from tests.test_train_cli_errors import one_line_error

pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(steps=1, batch_size=8, save_every=0, warmup=0, lr=1e-3)


@pytest.fixture(scope="module")
def converted(official_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "dar.pt"
    convert_file(official_ckpt, out, family="dit", num_heads=4, query="static_t")
    return out


def source_loss(path, config, **load) -> float:
    """The source model's loss on step 0's batch of ``config``, label dropout drawn as the trainer does."""
    model, info = load_model(path, **load)
    data = digits_latents("train", DIGITS_SPLIT_SEED)
    fam = get_family(info.family)
    x0, y, noise, t = _draw(config, fam.name, 0, data["x0"], data["y"], "cpu")
    torch.manual_seed(seed_for(config.seed, "dropout", 0))
    with torch.no_grad():
        return fam.loss(model.train()(fam.corrupt(x0, noise, t), t, y), x0, noise, t).item()


def first_loss(config) -> float:
    losses = []
    train(config, on_step=lambda step, loss: losses.append(loss))
    return losses[0]


@pytest.mark.parametrize("lora", [0, 4])
def test_first_loss_of_converted_model_is_the_source_loss(official_ckpt, converted, tmp_path, lora):
    config = init_config(converted, given={}, out=str(tmp_path / "ft"), lora=lora, **FAST)
    assert (config.routing, config.query, config.chunk_size, config.family) == ("dar", "static_t", 1, "dit")
    ref = source_loss(official_ckpt, config, family="dit", num_heads=4)
    got = first_loss(config)
    assert abs(got - ref) <= 1e-5 * ref, (got, ref)


def test_residual_init_starts_bit_identical(official_ckpt, tmp_path):
    config = init_config(official_ckpt, given={"family": "dit", "num_heads": 4}, out=str(tmp_path / "ft"), **FAST)
    assert first_loss(config) == source_loss(official_ckpt, config, family="dit", num_heads=4)


def test_lora_trains_factors_and_routing_only_and_files_read_as_plain_dit(converted, tmp_path):
    config = init_config(converted, given={}, out=str(tmp_path / "ft"), lora=2, **{**FAST, "steps": 3})
    last = train(config)
    base, _ = load_model(converted)
    tuned, info = load_model(last, weights="model")  # merged W + BA under the usual keys
    assert info.config == base.config.replace(class_dropout_prob=config.class_dropout)
    sb, st = base.state_dict(), tuned.state_dict()
    changed = {k for k in sb if not torch.equal(sb[k], st[k])}
    assert any(k.startswith("routing.") for k in changed)
    assert "blocks.0.attn.qkv.weight" in changed and "blocks.5.mlp.fc2.weight" in changed  # B A merged in
    frozen = {k for k in sb if k.startswith(("x_embedder", "t_embedder", "y_embedder", "final_layer"))
              or "adaLN" in k or (k.endswith(".bias") and k.startswith("blocks."))}
    assert frozen and not (changed & frozen)
    obj = torch.load(last, weights_only=True)
    names = obj["train"]["lora"]["model"].keys()
    assert all(".lora_" in k or k.startswith("routing.") for k in names)
    # the merged EMA is what profile, sample and inspect read
    ema, _ = load_model(last)
    assert ema.config.routing_name == "dar-static_t-c1"


def test_lora_resume_is_bit_identical(converted, tmp_path):
    kw = dict(given={}, lora=2, **{**FAST, "steps": 4, "save_every": 2})
    train(init_config(converted, out=str(tmp_path / "a"), **kw))
    train(init_config(converted, out=str(tmp_path / "b"), **{**kw, "steps": 2}))
    train(init_config(converted, out=str(tmp_path / "b"), **kw))  # the same command, more steps: continues
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=True) for r in "ab")
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert all(torch.equal(a["train"]["lora"]["ema"][k], b["train"]["lora"]["ema"][k]) for k in a["train"]["lora"]["ema"])


def test_changed_init_file_is_refused_on_resume(converted, tmp_path):
    import shutil

    from dardiag.errors import DardiagError

    init = tmp_path / "init.pt"
    shutil.copy(converted, init)
    kw = dict(given={}, out=str(tmp_path / "a"), **{**FAST, "steps": 1})
    train(init_config(init, **kw))
    config = init_config(init, **{**kw, "steps": 2})
    obj = torch.load(init, weights_only=True)
    obj["model"]["routing.t_query.bias"] += 1.0
    torch.save(obj, init)
    with pytest.raises(DardiagError, match="not the file this run started from|--init \\(its content\\)"):
        train(config)


@pytest.mark.parametrize("flags,needle", [
    (["--depth", "3"], "--depth 3 contradicts the --init checkpoint"),
    (["--hidden", "64"], "--hidden 64 contradicts"),
    (["--preset", "DiT-S/2"], "--preset DiT-S/2 contradicts"),
    (["--query", "dynamic"], "--query dynamic contradicts"),
    (["--chunk-size", "4"], "--chunk-size 4 contradicts"),
    (["--routing", "residual"], "--routing residual contradicts"),
    (["--family", "sit"], "--family sit disagrees"),
    (["--class-dropout", "0"], "--class-dropout 0.0 contradicts"),
])
def test_contradicting_flags_are_refused(capsys, converted, tmp_path, flags, needle):
    out = tmp_path / "ft"
    line = one_line_error(capsys, "train", "--out", out, "--init", converted, "--steps", "1", *flags)
    assert needle in line, line
    assert not out.exists()


def test_residual_init_with_dar_flags_is_refused(capsys, official_ckpt, tmp_path):
    base = ["train", "--out", tmp_path / "ft", "--init", official_ckpt, "--family", "dit", "--heads", "4"]
    assert "dardiag to-dar" in one_line_error(capsys, *base, "--routing", "dar")
    assert "is a DAR setting" in one_line_error(capsys, *base, "--query", "static")
    assert "--lora fine-tunes a checkpoint" in one_line_error(capsys, "train", "--out", tmp_path / "x", "--lora", "4")
    assert "no such checkpoint" in one_line_error(capsys, "train", "--out", tmp_path / "x", "--init", tmp_path / "nope.pt")
    assert not (tmp_path / "ft").exists() and not (tmp_path / "x").exists()


def test_lora_checkpoint_holds_the_ema_factors(converted, tmp_path):
    last = train(init_config(converted, given={}, out=str(tmp_path / "a"), lora=2, **{**FAST, "steps": 2}))
    state = torch.load(last, weights_only=True)["train"]["lora"]
    assert state["ema"].keys() == state["model"].keys() and len(state["ema"]) > 20

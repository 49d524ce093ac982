"""``train --init DIR`` for diffusers transformers: a fine-tune of a converted folder starts at the source
model's loss, LoRA trains only its factors and the routing (the base weights stay bit for bit), gradient
checkpointing changes no gradient, a run resumes bit-identically and profiles as the DiT trainer does,
and flags that contradict the folder are refused."""

from __future__ import annotations

import csv
import importlib
import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from dardiag.adapters.classes import TABLE  # noqa: E402
from dardiag.adapters.diffusers import diffusers_subject  # noqa: E402
from dardiag.adapters.routed import enable_checkpointing, router_of  # noqa: E402
from dardiag.convert.folder import convert_folder  # noqa: E402
from dardiag.errors import DardiagError  # noqa: E402
from dardiag.families import get_family  # noqa: E402
from dardiag.train.diffusers_export import check_export_dir  # noqa: E402
from dardiag import read_profile  # noqa: E402
from dardiag.train import TrainConfig, train  # noqa: E402
from dardiag.train.diffusers_data import check_matches_subject  # noqa: E402
from dardiag.train.diffusers_loop import step_inputs  # noqa: E402
from dardiag.train.diffusers_model import diffusers_init_config, load_diffusers_init, prepare_model  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, build, save  # noqa: E402
from tests.test_routed import live  # noqa: E402
from tests.test_train_cli_errors import one_line_error  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(steps=1, batch_size=4, save_every=0, warmup=0, lr=1e-3)


def data_file(path, cls: str, n: int = 8, frames: int | None = None):
    """Latents in the transformer's layout and its conditioning, as dardiag latents + prompts write them."""
    g = torch.Generator().manual_seed(0)
    shape = (4, frames, 8, 8) if frames else (4, 8, 8)
    obj = {"x0": torch.randn(n, *shape, generator=g), "meta": {"source": "test latents"}}
    if cls == "FluxTransformer2DModel":
        obj.update(encoder_hidden_states=torch.randn(n, TEXT_TOKENS, 12, generator=g),
                   pooled_projections=torch.randn(n, 10, generator=g))
    elif cls in ("WanTransformer3DModel", "QwenImageTransformer2DModel"):
        obj["encoder_hidden_states"] = torch.randn(n, TEXT_TOKENS, 12, generator=g)
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    """(residual folder, routed folder, data file) of a tiny Flux whose blocks all change the stream."""
    root = tmp_path_factory.mktemp("ft")
    src = save(live("FluxTransformer2DModel"), root / "flux")
    dar = root / "flux-dar"
    convert_folder(src, dar, check_samples=0)
    return src, dar, data_file(root / "data.pt", "FluxTransformer2DModel")


def config(init, data, out, **kw) -> TrainConfig:
    return diffusers_init_config(init, given={}, out=str(out), data=str(data), **{**FAST, **kw})


def logged(out) -> list[float]:
    with open(out / "loss.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def source_loss(init, c: TrainConfig) -> float:
    """The source model's loss on step 0's batch of ``c``, outside the trainer's loop."""
    s = diffusers_subject(init)
    data = torch.load(c.data, weights_only=True)
    data.pop("meta")
    check_matches_subject(data, s, what="test data")
    x0, noise, x_t, t, y, cond = step_inputs(s, data, c, get_family(c.family), 0, "cpu")
    with torch.no_grad():
        return get_family(c.family).loss(s.call(s.model.train(), x_t, t, y, cond), x0, noise, t).item()


@pytest.mark.parametrize("lora", [0, 4])
def test_first_loss_of_a_converted_folder_is_the_source_loss(flux, tmp_path, lora):
    src, dar, data = flux
    c = config(dar, data, tmp_path / "run", lora=lora)
    assert c.family == "flow1000" and c.routing == "dar" and c.query == "static_t"
    losses = []
    train(c, on_step=lambda step, loss: losses.append(loss))
    assert losses[0] == pytest.approx(source_loss(src, c), rel=1e-5)
    assert logged(tmp_path / "run")[0] == float(f"{losses[0]:.6g}")


def test_first_loss_at_the_sublayer_level_is_the_source_loss(tmp_path):
    """QwenImage (the paper's MM-DiT) routed per sublayer, gain-free, with LoRA: the same start."""
    src = save(live("QwenImageTransformer2DModel"), tmp_path / "qwen")
    convert_folder(src, tmp_path / "qwen-dar", check_samples=0, level="sublayer")
    data = data_file(tmp_path / "data.pt", "QwenImageTransformer2DModel")
    c = config(tmp_path / "qwen-dar", data, tmp_path / "run", lora=2)
    losses = []
    train(c, on_step=lambda step, loss: losses.append(loss))
    assert losses[0] == pytest.approx(source_loss(src, c), rel=1e-5)


def test_residual_folder_first_loss_is_its_own(flux, tmp_path):
    src, _, data = flux
    c = config(src, data, tmp_path / "run")
    assert c.routing == "residual"
    losses = []
    train(c, on_step=lambda step, loss: losses.append(loss))
    assert losses[0] == source_loss(src, c)  # the same model on the same batch: bit for bit


def test_lora_trains_factors_and_routing_only(flux, tmp_path):
    _, dar, data = flux
    c = config(dar, data, tmp_path / "run", lora=2, steps=2)
    s = load_diffusers_init(c, "cpu")
    check_matches_subject(torch.load(data, weights_only=True), s, what="test data")
    model, what = prepare_model(s, c)
    assert "LoRA rank 2" in what and "routing in full" in what
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".lora_" in n or n.startswith("dar_routing.") for n in trained)
    assert any(n.startswith("dar_routing.") for n in trained)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    routing = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("dar_routing.")}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    fam = get_family(c.family)
    for step in range(2):
        x0, noise, x_t, t, y, cond = step_inputs(s, torch.load(data, weights_only=True), c, fam, step, "cpu")
        fam.loss(s.call(model, x_t, t, y, cond), x0, noise, t).backward()
        opt.step()
        opt.zero_grad()
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in base.items())  # the base weights, bit for bit
    assert any(not torch.equal(after[n], v) for n, v in routing.items())  # the routing learned
    assert any(".lora_B" in n and after[n].abs().max() > 0 for n in trained)  # B left its zero start
    train(c)  # the run's checkpoint holds what it changed and nothing of the frozen base
    obj = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert set(obj["model"]) == set(obj["ema"]) == trained


def test_a_run_resumes_bit_identically_and_profiles(flux, tmp_path):
    _, dar, data = flux
    kw = dict(lora=2, steps=4, save_every=2, profile_every=2, profile_samples=4, profile_batch_size=4,
              profile_noise_levels=(0.5,), profile_cka=False)
    train(config(dar, data, tmp_path / "straight", **kw))
    train(config(dar, data, tmp_path / "split", **{**kw, "steps": 2}))
    train(config(dar, data, tmp_path / "split", **kw))  # the same run, continued to step 4
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert logged(tmp_path / "straight") == logged(tmp_path / "split")
    df = read_profile(tmp_path / "straight" / "profile")
    assert sorted(df.step.unique()) == [2, 4] and set(df.routing) == {"dar-static_t-block"}
    assert {"act_rms", "grad_rms", "route_alpha", "loss"} <= set(df.metric)


def test_export_is_the_ema_as_a_folder(flux, tmp_path, capsys):
    """--export writes the EMA (LoRA merged, the routing's own) as a diffusers folder that computes what the
    EMA computes, and that every reader loads as a routed model."""
    from dardiag.adapters.routed.start import outputs
    from dardiag.train.diffusers_export import export_diffusers

    _, dar, data = flux
    c = config(dar, data, tmp_path / "run", lora=2, steps=3, lr=5e-2)
    train(c)
    folder = export_diffusers(tmp_path / "run" / "last.pt", tmp_path / "ema")
    s = diffusers_subject(folder, text_tokens=TEXT_TOKENS)
    assert s.routing == "dar-static_t-block"
    ref = diffusers_subject(dar, text_tokens=TEXT_TOKENS)
    model, _ = prepare_model(ref, c)
    obj = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    import dardiag.train.lora as lora

    lora.load_trainable(model, obj["ema"], "last.pt", like=model)
    from dardiag.adapters.routed.start import check_batch

    batch = check_batch(s, 3, seed=2)
    want = outputs(ref, batch)
    assert (want - outputs(diffusers_subject(dar, text_tokens=TEXT_TOKENS), batch)).abs().max() > 1e-4  # it moved
    torch.testing.assert_close(outputs(s, batch), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(DardiagError, match="already exists"):
        check_export_dir(folder, tmp_path / "run", overwrite=False)


def test_a_video_class_fine_tunes(tmp_path):
    src = save(build("WanTransformer3DModel"), tmp_path / "wan")
    convert_folder(src, tmp_path / "wan-dar", check_samples=0, query="dynamic")
    data = data_file(tmp_path / "data.pt", "WanTransformer3DModel", frames=3)
    c = config(tmp_path / "wan-dar", data, tmp_path / "run", lora=2)
    losses = []
    train(c, on_step=lambda step, loss: losses.append(loss))
    assert losses[0] == pytest.approx(source_loss(src, c), rel=1e-5)


@pytest.mark.parametrize("cls,level", [("DiTTransformer2DModel", "sublayer"), ("FluxTransformer2DModel", "block")])
def test_gradient_checkpointing_changes_no_gradient(cls, level, monkeypatch):
    """Recomputing a block's own forward in the backward runs no routing twice (the sublayer level's MLP norm
    reads a snapshot of the sources): every parameter's gradient is the one without checkpointing."""
    from tests.test_routed import _randomise, routed

    _, dar = routed(cls, level, "dynamic")
    _randomise(router_of(dar.model))
    model = dar.model.train()
    from dardiag.adapters.routed.start import check_batch

    b = check_batch(dar, 2, seed=0)
    x_t = dar.family.corrupt(b["x0"], b["noise"], b["t"])

    def grads():
        model.zero_grad()
        torch.manual_seed(0)  # the same label dropout (DiT's embedding drops labels in training mode)
        dar.family.loss(dar.call(model, x_t, b["t"], b["y"], b["cond"]), b["x0"], b["noise"], b["t"]).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    graft_module = importlib.import_module("dardiag.adapters.routed.graft")  # the package exports a function graft

    calls = []
    real = graft_module.checkpoint
    monkeypatch.setattr(graft_module, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    assert enable_checkpointing(model, TABLE[cls]) == dar.spec.depth
    again = grads()
    assert len(calls) == dar.spec.depth  # every block's own forward ran checkpointed
    assert set(plain) == set(again) and any(n.startswith("dar_routing.") for n in plain)
    for n in plain:
        torch.testing.assert_close(again[n], plain[n], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("flags,needle", [
    (["--depth", "4"], "--depth 4 does not apply"),
    (["--routing", "residual"], "--routing residual contradicts"),
    (["--query", "dynamic"], "--query dynamic contradicts"),
    (["--family", "dit"], "--family dit contradicts"),
])
def test_contradicting_flags_are_refused(capsys, flux, tmp_path, flags, needle):
    _, dar, data = flux
    assert needle in one_line_error(capsys, "train", "--init", dar, "--data", data, "--out", tmp_path / "o", *flags)
    assert not (tmp_path / "o").exists()


def test_residual_folder_with_dar_flags_and_digits_are_refused(capsys, flux, tmp_path):
    src, _, data = flux
    assert "convert it first" in one_line_error(capsys, "train", "--init", src, "--data", data, "--out", tmp_path / "o",
                                                "--routing", "dar")
    assert "latents file" in one_line_error(capsys, "train", "--init", src, "--out", tmp_path / "o")
    bad = tmp_path / "bad.pt"
    torch.save({"x0": torch.randn(4, 3, 8, 8)}, bad)
    assert "C = 4" in one_line_error(capsys, "train", "--init", src, "--data", bad, "--out", tmp_path / "o")
    assert json.loads((src / "config.json").read_text())["_class_name"] == "FluxTransformer2DModel"


def test_a_routed_lora_step_runs_under_bfloat16_autocast(flux):
    """The CUDA path's autocast (here on the CPU, where it exists too): routed forward and backward stay finite,
    the softmax in float32, and the loss is the float32 one to bfloat16's precision."""
    _, dar, data = flux
    c = config(dar, data, "unused", lora=2)
    s = load_diffusers_init(c, "cpu")
    d = torch.load(data, weights_only=True)
    check_matches_subject(d, s, what="test data")
    model, _ = prepare_model(s, c)
    fam = get_family(c.family)
    x0, noise, x_t, t, y, cond = step_inputs(s, d, c, fam, 0, "cpu")
    exact = fam.loss(s.call(model, x_t, t, y, cond), x0, noise, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = s.call(model, x_t, t, y, cond)
    assert out.dtype == torch.bfloat16
    loss = fam.loss(out, x0, noise, t)
    loss.backward()
    assert loss.item() == pytest.approx(exact.item(), rel=3e-2)
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert router_of(model).gain.grad.abs().sum() > 0

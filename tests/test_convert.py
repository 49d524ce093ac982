"""``dardiag to-dar``: a converted dense DAR model starts as the residual function (eps included); the
chunked start is what dardiag.convert.to_dar says it is; bad input is one line and writes nothing."""

from __future__ import annotations

import argparse

import pytest
import torch

from dardiag.checkpoints import load_model
from dardiag.convert import fixed_batch, start_gap, to_dar
from dardiag.data import digits_latents
from dardiag.errors import DardiagError
from dardiag.families import get_family
from dardiag.models.routing import dar_sources
from tests.helpers import randomised_dit
from tests.test_train_cli_errors import one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
QUERIES = ("static", "static_t", "dynamic")
DIT = get_family("dit")


@pytest.fixture(scope="module")
def official(official_ckpt):
    model, _ = load_model(official_ckpt, family="dit", num_heads=4)
    return model


@pytest.fixture(scope="module")
def digits_batch(official):
    d = digits_latents("test")
    return fixed_batch(official.config, DIT, n=8, x0=d["x0"], y=d["y"])


@pytest.mark.parametrize("query", QUERIES)
def test_dense_start_is_the_official_model(official, digits_batch, query):
    gap = start_gap(official, to_dar(official, query=query, chunk_size=1), DIT, digits_batch)
    assert gap.output <= 1e-5 and gap.loss <= 1e-5, gap


def test_eps_handling_is_what_makes_it_exact(official, digits_batch):
    """The same model with every reader's eps left at 1e-6 is off by ~1e-3: scaling the eps is needed."""
    dar = to_dar(official, query="static", chunk_size=1)
    for norm in [b.norm1 for b in dar.blocks] + [b.norm2 for b in dar.blocks] + [dar.final_layer.norm_final]:
        norm.eps = 1e-6
    assert start_gap(official, dar, DIT, digits_batch).output > 1e-4


@pytest.mark.parametrize("query", QUERIES)
def test_dense_start_at_xl_depth(query):
    """Depth 28 (57 sources at the final reader, eps / 3249) with every branch carrying signal."""
    cfg = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=28, num_heads=4, num_classes=10)
    model = randomised_dit(cfg, seed=1, scale=0.05)
    batch = fixed_batch(model.config, get_family("sit"), n=4, seed=3)
    gap = start_gap(model, to_dar(model, query=query), get_family("sit"), batch)
    assert gap.output <= 1e-5, gap
    ref = model(*_inputs(model, batch)).abs().max()
    assert ref > 1e-3  # not a model that outputs ~0 everywhere


def _inputs(model, batch):
    return get_family("sit").corrupt(batch["x0"], batch["noise"], batch["t"]), batch["t"], batch["y"]


def test_converted_model_shares_weights_and_starts_uniform(official):
    dar = to_dar(official, query="dynamic", chunk_size=1)
    assert dar.blocks[0].attn.qkv.weight.data_ptr() == official.blocks[0].attn.qkv.weight.data_ptr()
    extra = {k for k in dar.state_dict()} - set(official.state_dict())
    assert extra and all(k.startswith("routing.") for k in extra)
    assert all(agg.query.weight.abs().max() == 0 for agg in dar.routing.aggregators.values())
    assert not dar.pos_embed.requires_grad
    st = to_dar(official, query="static_t")
    assert st.routing.t_query.weight.abs().max() == 0
    assert torch.equal(st.t_embedder.mlp[2].weight, official.t_embedder.mlp[2].weight)  # conditioning kept


@pytest.mark.parametrize("S", [2, 4])
def test_chunked_start_reads_the_sum_of_its_sources(official, digits_batch, S):
    """dardiag.convert.to_dar's claim for S > 1, computed by hand with the residual model's own blocks
    (eps 1e-6): each sublayer reads LN(sum of its chunk sources); and that is far from the residual model."""
    dar = to_dar(official, chunk_size=S)
    x_t, t, y = DIT.corrupt(digits_batch["x0"], digits_batch["noise"], digits_batch["t"]), digits_batch["t"], digits_batch["y"]
    with torch.no_grad():
        m = official
        c = m.t_embedder(t) + m.y_embedder(y, False)
        vs = {0: m.x_embedder(x_t) + m.pos_embed}
        L = 2 * m.config.depth
        for k, block in enumerate(m.blocks):
            mod = block.modulation(c)
            for j, branch in enumerate((block.attn_branch, block.mlp_branch)):
                l = 2 * k + j + 1
                h = vs[0] if l == 1 else sum(vs[i] for i in dar_sources(l, L, S))
                vs[l] = branch(h, mod)
        ref = m.unpatchify(m.final_layer(sum(vs[i] for i in dar_sources(L + 1, L, S)), c))
        out = dar.eval()(x_t, t, y)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert start_gap(official, dar, DIT, digits_batch).output > 0.1


# ----------------------------------------------------------------------------- the command


def test_cli_writes_a_dar_checkpoint_that_loads(capsys, official_ckpt, tmp_path):
    out = tmp_path / "dar.pt"
    code, stdout, err = run_cli(capsys, "to-dar", official_ckpt, out, "--family", "dit", "--num-heads", "4",
                                "--query", "dynamic")
    assert code == 0, err
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("start gap: ") and float(last.split("= ")[1].split()[0]) <= 1e-5
    model, info = load_model(out)  # no flags: the file says everything
    assert (info.family, info.config.routing_name, info.file_format) == ("dit", "dar-dynamic-c1", "dardiag")
    assert info.config.reader_eps_per_source and model.blocks[-1].norm2.eps == pytest.approx(1e-6 / 12**2)


def test_reads_training_dicts_and_safetensors(official, tmp_path):
    from safetensors.torch import save_file

    from dardiag.convert import convert_file

    sd = {k: v.clone() for k, v in official.state_dict().items()}
    noisy = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"model": noisy, "ema": sd, "opt": {}, "args": argparse.Namespace(model="DiT-custom")}, tmp_path / "0001000.pt")
    r = convert_file(tmp_path / "0001000.pt", tmp_path / "a.pt", family="dit", num_heads=4)
    assert r.source.weights == "ema" and r.source.step == 1000 and r.gap.output <= 1e-5
    save_file(sd, tmp_path / "w.safetensors")
    r = convert_file(tmp_path / "w.safetensors", tmp_path / "b.pt", family="dit", num_heads=4, query="static")
    assert r.source.file_format == "safetensors" and r.gap.output <= 1e-5


def _bundled_dar():
    from dardiag.bundled import bundled_checkpoints

    return bundled_checkpoints()["DAR static_t c4"]


@pytest.mark.parametrize("case,needle", [
    ("dar", "already a DAR model"),
    ("not_dit", "not a DiT/SiT checkpoint"),
    ("text", "not"),
    ("diffusers", "does not apply to the diffusers folder"),  # DiT flags on a folder (to-dar DIR: tests/test_routed.py)
    ("chunk", "chunk size 5 does not divide the 12 sublayers"),
    ("exists", "already exists"),
    ("query", "--query must be one of"),
])
def test_bad_input_is_one_line_and_writes_nothing(capsys, official_ckpt, tmp_path, case, needle):
    out = tmp_path / "out.pt"
    src, extra = official_ckpt, ["--family", "dit", "--num-heads", "4"]
    if case == "dar":
        src, extra = _bundled_dar(), []
    elif case == "not_dit":
        src = tmp_path / "latents.pt"
        torch.save({"x0": torch.zeros(2, 1, 4, 4), "y": torch.zeros(2, dtype=torch.long)}, src)
    elif case == "text":
        src = tmp_path / "notes.pt"
        src.write_text("not a checkpoint\n")
    elif case == "diffusers":
        src = tmp_path / "transformer"
        src.mkdir()
        (src / "config.json").write_text('{"_class_name": "DiTTransformer2DModel"}')
    elif case == "chunk":
        extra = extra + ["--chunk-size", "5"]
    elif case == "exists":
        out.write_bytes(b"mine")
    elif case == "query":
        extra = extra + ["--query", "learned"]
    line = one_line_error(capsys, "to-dar", src, out, *extra)
    assert needle in line, line
    assert (out.read_bytes() == b"mine") if case == "exists" else not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_force_replaces(capsys, official_ckpt, tmp_path):
    out = tmp_path / "out.pt"
    out.write_bytes(b"old")
    code, _, err = run_cli(capsys, "to-dar", official_ckpt, out, "--family", "dit", "--num-heads", "4", "--force")
    assert code == 0, err
    assert load_model(out)[1].config.routing == "dar"


def test_library_refuses_dar_model():
    with pytest.raises(DardiagError, match="already a DAR"):
        to_dar(to_dar(randomised_dit(dict(input_size=4, hidden_size=32, depth=1, num_heads=2, num_classes=2), 0)))


def test_profile_of_converted_file_has_the_source_loss(capsys, official_ckpt, tmp_path):
    """``dardiag profile`` reads the converted file, and its loss column is the residual model's."""
    import dardiag
    from dardiag.bundled import held_out_digits

    out = tmp_path / "dar.pt"
    assert run_cli(capsys, "to-dar", official_ckpt, out, "--family", "dit", "--num-heads", "4")[0] == 0
    inputs = held_out_digits()
    inputs = {**inputs, "x0": inputs["x0"][:8], "y": inputs["y"][:8]}
    df = dardiag.profile([str(official_ckpt), str(out)], inputs=inputs, names=["residual", "dar"], family="dit",
                         num_heads=4, samples=8, batch_size=8, noise_levels=[0.2, 0.8], analyses={"cka": False})
    loss = df[df["metric"] == "loss"].pivot_table(index="noise_level", columns="model", values="value")
    assert ((loss["dar"] - loss["residual"]).abs() <= 1e-5 * loss["residual"]).all(), loss
    alpha = df[(df["model"] == "dar") & (df["metric"] == "route_alpha") & (df["sublayer"] == 13)]
    assert len(alpha) and (alpha["value"] - 1 / 13).abs().max() < 1e-6  # uniform over the 13 sources


def test_check_can_be_skipped(capsys, official_ckpt, tmp_path):
    code, stdout, _ = run_cli(capsys, "to-dar", official_ckpt, tmp_path / "d.pt", "--family", "dit", "--num-heads", "4",
                              "--check-samples", "0")
    assert code == 0 and stdout.strip().splitlines()[-1] == "start gap: not measured (--check-samples 0)"
    assert torch.load(tmp_path / "d.pt", weights_only=True)["converted"]["start_gap"] is None
    assert "--check-samples must be in 0..1024" in one_line_error(capsys, "to-dar", official_ckpt, tmp_path / "e.pt",
                                                           "--family", "dit", "--num-heads", "4", "--check-samples", "-1")

"""DAR routing grafted onto diffusers transformers (``dardiag to-dar DIR``, dardiag.adapters.routed).

Every class of the table, tiny and random: the routed model computes the source's function at the start
(each query kind; the sublayer level where the table allows it), the routing is really in the path, and
its act_rms / grad_rms / route_alpha table profiles. For a single-stream, a joint and a video class the
routing weights equal a softmax computed here from the blocks' hooked inputs. Folders round-trip; bad
input is one line and writes nothing.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from dardiag.adapters.classes import TABLE  # noqa: E402
from dardiag.adapters.diffusers import diffusers_model_subject, diffusers_subject  # noqa: E402
from dardiag.adapters.generic import first_input  # noqa: E402
from dardiag.adapters.image_stream import image_of, innermost, stream_blocks, entry_streams  # noqa: E402
from dardiag.adapters.routed import RoutingSpec, graft, router_of  # noqa: E402
from dardiag.checkpoints.routing_files import ROUTING_JSON, ROUTING_WEIGHTS  # noqa: E402
from dardiag.adapters.routed.start import check_batch, first_call, outputs  # noqa: E402
from dardiag.adapters.routed.sublayers import SUBLAYERS  # noqa: E402
from dardiag.api import profile  # noqa: E402
from dardiag.convert.folder import convert_folder  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from dardiag.errors import DardiagError  # noqa: E402
from dardiag.hooks.recorder import Keep, record  # noqa: E402
from diffusers_tiny import TEXT_TOKENS, TINY, build, save  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
QUERIES = ("static", "static_t", "dynamic")
TOL = 1e-5


def live(cls: str):
    """The tiny model, with every all-zero parameter (zero-initialised gates, modulations, output heads) redrawn
    small: otherwise some classes' blocks start as the identity and routing them changes nothing."""
    model = build(cls)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def subject_for(model, cls: str):
    opts = dict(TINY[cls].options)
    if TINY[cls].sample_size is not None and "input_size" not in opts:  # 8x8 latents as the saved tiny configs
        opts["input_size"] = TINY[cls].sample_size
    return diffusers_model_subject(model, class_name=cls, text_tokens=TEXT_TOKENS, **opts)


def routed(cls: str, level: str = "block", query: str = "static_t", model=None):
    """(source subject, routed subject) of one tiny model; the routed one is a deep copy, grafted."""
    src = subject_for(model if model is not None else live(cls), cls)
    seen = first_call(src, TABLE[cls])
    spec = RoutingSpec(cls, level, query, src.spec.depth, seen.dim, seen.timestep_arg, seen.t_clean, seen.t_noise)
    model = copy.deepcopy(src.model)
    graft(model, TABLE[cls], spec, count_tokens=src.call.__self__.tokens)
    return src, subject_for(model, cls)


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


@torch.no_grad()
def _randomise(router) -> None:
    """Queries, key norms and gains away from the start, so that the routing changes the function."""
    g = torch.Generator().manual_seed(7)
    for p in router.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("cls", sorted(TINY))
def test_every_class_starts_exactly_and_profiles(cls):
    levels = ["block"] + (["sublayer"] if cls in SUBLAYERS else [])
    src = subject_for(live(cls), cls)
    batch = check_batch(src, 3, seed=0)
    ref = outputs(src, batch)
    assert ref.abs().max() > 0
    for level in levels:
        for query in QUERIES:
            _, dar = routed(cls, level, query, model=src.model)
            got = outputs(dar, batch)
            assert gap(ref, got) <= TOL, (level, query, gap(ref, got))
    _randomise(router_of(dar.model))  # the routing is in the path: moved off the start, the function changes
    assert gap(ref, outputs(dar, batch)) > 1e-3
    _, dar = routed(cls)
    df = profile(dar, samples=4, batch_size=4, noise_levels=[0.6], analyses=Analyses(probe=False, outliers=False, cka=False))
    D = dar.spec.depth
    assert (df.routing == "dar-static_t-block").all()
    for metric in ("act_rms", "grad_rms"):
        rows = df[df.metric == metric]
        assert set(rows.block.astype(int)) == set(range(D + 1)), metric
        assert (rows.value > 0).all() and rows.value.map(math.isfinite).all(), metric
    alpha = df[df.metric == "route_alpha"]
    assert set(alpha.sublayer.astype(int)) == {2 * k - 1 for k in range(2, D + 2)}
    sums = alpha.groupby("sublayer").value.sum()
    assert ((sums - 1).abs() < 1e-6).all()  # uniform weights that sum to 1 per aggregator


def test_the_block_level_state_is_the_residual_state_at_the_start():
    """z_k of the routed model (its routed block inputs, times the gain) is the source's z_k at the start;
    its gradient is not: dL/dh_k reaches h_k only through block k (h_k is not passed on, the sources are),
    as in dardiag's own DAR DiT."""
    src, dar = routed("FluxTransformer2DModel")
    a = profile(src, samples=4, batch_size=4, noise_levels=[0.5], analyses=Analyses(probe=False, cka=False))
    b = profile(dar, samples=4, batch_size=4, noise_levels=[0.5], analyses=Analyses(probe=False, cka=False))
    for metric in ("act_rms", "cos_prev"):
        x = a[a.metric == metric].sort_values("block").value.to_numpy()
        y = b[b.metric == metric].sort_values("block").value.to_numpy()
        torch.testing.assert_close(torch.tensor(y), torch.tensor(x), rtol=1e-5, atol=0)


#################################################################################
#             The routing weights, against a softmax computed here              #
#################################################################################


def _reference_alpha(router, l: int, values: list[torch.Tensor], t_emb) -> torch.Tensor:
    """softmax_i(q . RMSNorm(v_i) / sqrt(D)) over sources, keys built in full, as dar.md writes it."""
    agg = router.aggregators[str(l)]
    D = values[0].shape[-1]
    keys = [v / v.pow(2).mean(-1, keepdim=True).add(agg.eps).sqrt() * agg.norm_weight for v in values]  # (N, T, D)
    if router.spec.query == "dynamic":
        q = values[-1] @ agg.query.weight.T  # (N, T, D): W_q v_{l-1}
    elif router.spec.query == "static_t":
        q = (agg.query + t_emb)[:, None, :]  # (N, 1, D)
    else:
        q = agg.query
    logits = torch.stack([(k * q).sum(-1) for k in keys]) / math.sqrt(D)  # (S, N, T)
    return torch.softmax(logits, dim=0)


@pytest.mark.parametrize("cls,query", [("PixArtTransformer2DModel", "static_t"), ("FluxTransformer2DModel", "dynamic"),
                                       ("WanTransformer3DModel", "static")])
def test_routing_weights_equal_a_softmax_of_the_hooked_block_inputs(cls, query):
    """The blocks' arriving image streams (pre-hooks, before the routing replaces them) give the sources
    v_0 = a_1, v_k = a_{k+1} - h_k; each routed input h_k is recomputed here and compared with the
    router's alpha sites and its z sites."""
    src, dar = routed(cls, query=query)
    router = router_of(dar.model)
    _randomise(router)
    model = dar.model
    blocks = [innermost(model.get_submodule(p)) for p, _ in stream_blocks(model, TABLE[cls], entry_streams(model, TABLE[cls]))]
    streams = [s for _, s in stream_blocks(model, TABLE[cls], entry_streams(model, TABLE[cls]))]
    arriving = []

    def pre(i):
        def hook(mod, args, kwargs):
            x = first_input(args, kwargs)
            T = router.current.tokens()
            arriving.append(image_of(x, type(streams[i])(part=streams[i].part, layout=streams[i].layout), T).detach())
        return hook

    handles = [b.register_forward_pre_hook(pre(i), with_kwargs=True) for i, b in enumerate(blocks)]
    keep = Keep()
    batch = check_batch(dar, 2, seed=1)
    try:
        with record(model, list(dar.spec.taps), keep, grads=False):
            outputs(dar, batch)
    finally:
        for h in handles:
            h.remove()
    D = dar.spec.depth
    assert len(arriving) == D
    t_emb = None
    if query == "static_t":
        level = torch.linspace(0, 1, 2)  # check_batch's noise levels
        t_emb = router.t_embedder(level * 1000.0)
    values, h = [arriving[0]], arriving[0]
    for k in range(2, D + 1):
        values.append(arriving[k - 1] - h)
        alpha = _reference_alpha(router, 2 * k - 1, values, t_emb)
        torch.testing.assert_close(keep.seen[f"alpha_{2 * k - 1}"], alpha, rtol=1e-4, atol=1e-6)
        h = router.gain[router._slot[2 * k - 1]] * sum(a[..., None] * v for a, v in zip(alpha, values))
        torch.testing.assert_close(keep.seen[f"z_{k - 1}"], h, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(keep.seen[f"alpha_{2 * D - 1}"], torch.full_like(keep.seen[f"alpha_{2 * D - 1}"], 1 / D))


#################################################################################
#                           Folders: write, read, refuse                        #
#################################################################################


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("routed")
    return {c: save(build(c), root / c) for c in ("FluxTransformer2DModel", "DiTTransformer2DModel")}


def test_a_converted_folder_loads_routed_and_profiles_side_by_side(folders, tmp_path):
    src = folders["FluxTransformer2DModel"]
    out = tmp_path / "flux-dar"
    r = convert_folder(src, out, query="dynamic", check_samples=3, options=_opts("FluxTransformer2DModel"))
    assert r.gap.output <= TOL and r.gap.loss <= TOL
    assert {p.name for p in out.iterdir()} == {p.name for p in src.iterdir()} | {ROUTING_JSON, ROUTING_WEIGHTS}
    assert (out / "config.json").read_text() == (src / "config.json").read_text()
    doc = json.loads((out / ROUTING_JSON).read_text())
    assert doc["routing"]["query"] == "dynamic" and doc["converted"]["start_gap"]["output"] == r.gap.output
    s = diffusers_subject(out, text_tokens=TEXT_TOKENS)
    assert s.routing == "dar-dynamic-block" and s.spec.routes and not s.spec.residual
    base = diffusers_subject(src, text_tokens=TEXT_TOKENS)
    batch = check_batch(base, 3, seed=0)
    assert gap(outputs(base, batch), outputs(s, batch)) <= TOL
    df = profile([src, out], samples=4, batch_size=4, noise_levels=[0.5], text_tokens=TEXT_TOKENS,
                 analyses=Analyses(probe=False, cka=False))
    assert set(df.routing) == {"residual", "dar-dynamic-block"}
    assert set(df[df.metric == "route_alpha"].model) == {"flux-dar"}


def test_sublayer_level_folder(folders, tmp_path):
    out = tmp_path / "dit-dar"
    r = convert_folder(folders["DiTTransformer2DModel"], out, level="sublayer", check_samples=3)
    assert r.gap.output <= TOL
    s = diffusers_subject(out)
    assert s.routing == "dar-static_t-sublayer" and s.spec.has_sublayers
    df = profile(s, samples=4, batch_size=4, noise_levels=[0.5], analyses=Analyses(probe=False, cka=False))
    D = s.spec.depth
    assert set(df[df.metric == "v_rms"].sublayer.astype(int)) == set(range(1, 2 * D + 1))
    assert set(df[df.metric == "route_alpha"].sublayer.astype(int)) == set(range(2, 2 * D + 2))


def test_a_pipeline_folder_is_mirrored_with_the_routing_beside_its_transformer(folders, tmp_path):
    pipe = tmp_path / "pipe"
    (pipe / "scheduler").mkdir(parents=True)
    (pipe / "scheduler" / "scheduler_config.json").write_text("{}")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"],
                                                      "scheduler": ["diffusers", "DDIMScheduler"]}))
    save(build("DiTTransformer2DModel"), pipe / "transformer")
    out = tmp_path / "pipe-dar"
    convert_folder(pipe, out, check_samples=0)
    assert (out / "scheduler" / "scheduler_config.json").is_file() and (out / "model_index.json").is_file()
    assert (out / "transformer" / ROUTING_JSON).is_file() and not (out / ROUTING_JSON).exists()
    assert diffusers_subject(out).routing == "dar-static_t-block"  # a pipeline: its denoiser, routed


def _opts(cls):
    from dardiag.adapters.options import LoadOptions
    return LoadOptions(text_tokens=TEXT_TOKENS, **TINY[cls].options)


@pytest.mark.parametrize("args,words", [
    (("--level", "sublayer"), "cannot be routed per sublayer"),
    (("--query", "sideways"), "--query must be one of"),
    (("--chunk-size", "2"), "--chunk-size 2 does not apply"),
    (("--num-heads", "4"), "--num-heads 4 does not apply"),
])
def test_bad_flags_are_one_line_and_write_nothing(folders, tmp_path, capsys, args, words):
    from tests.test_train_cli_errors import one_line_error

    out = tmp_path / "out"
    assert words in one_line_error(capsys, "to-dar", folders["FluxTransformer2DModel"], out, *args)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_routed_and_refused_folders_are_refused(folders, tmp_path):
    out = tmp_path / "dar"
    convert_folder(folders["DiTTransformer2DModel"], out, check_samples=0)
    with pytest.raises(DardiagError, match="routed already"):
        convert_folder(out, tmp_path / "again", check_samples=0)
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "config.json").write_text(json.dumps({"_class_name": "StableAudioDiTModel"}))
    with pytest.raises(DardiagError, match="audio"):
        convert_folder(audio, tmp_path / "x", check_samples=0)
    with pytest.raises(DardiagError, match="already exists"):
        convert_folder(folders["DiTTransformer2DModel"], out, check_samples=0)
    assert not (tmp_path / "again").exists() and not (tmp_path / "x").exists()
    (out / ROUTING_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(DardiagError, match="not a readable safetensors"):
        diffusers_subject(out)


"""`dardiag prompts`: prompts encoded by a pipeline's own text encoders (tiny random CLIP + T5 here, in a
Flux pipeline folder; T5 alone in a PixArt one, whose padding mask is kept), stored for `profile --cond`;
synthetic conditioning is said in the table."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import dardiag  # noqa: E402
from helpers import cli  # noqa: E402
from dardiag.engine.config import Analyses  # noqa: E402
from diffusers_tiny import build  # noqa: E402
from pipeline_fixtures import PROMPTS, WORDS, tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    torch.manual_seed(0)
    n = len(WORDS) + 3
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=n, hidden_size=10, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, eos_token_id=2, pad_token_id=0, bos_token_id=2)).eval()
    t5 = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=n, d_model=12, d_ff=16, d_kv=6, num_layers=1, num_heads=2, pad_token_id=0)).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=clip,
                        tokenizer=tokenizer(16), text_encoder_2=t5, tokenizer_2=tokenizer(512),
                        transformer=build("FluxTransformer2DModel"))
    root = tmp_path_factory.mktemp("pipe") / "tiny-flux"
    pipe.save_pretrained(root)
    cfg = json.loads((root / "transformer" / "config.json").read_text())
    (root / "transformer" / "config.json").write_text(json.dumps({**cfg, "sample_size": 8}))
    return root, pipe


run = cli  # in this process: a new Python per command costs seconds of imports


def test_prompts_are_the_pipelines_own_encoding(pipeline, tmp_path):
    root, pipe = pipeline
    (tmp_path / "p.txt").write_text("# captions\n" + "\n".join(PROMPTS) + "\n\n")
    res = run("prompts", tmp_path / "p.txt", "--pipeline", root, "--out", tmp_path / "cond.pt", "--max-length", 8)
    assert res.returncode == 0, res.stderr
    assert "encoded 4 prompts" in res.stdout.splitlines()[-1]
    cond = torch.load(tmp_path / "cond.pt", weights_only=True)
    assert cond["meta"]["prompts"] == PROMPTS and cond["meta"]["denoiser"] == "FluxTransformer2DModel"
    ids = pipe.tokenizer_2(PROMPTS, padding="max_length", max_length=8, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        t5 = pipe.text_encoder_2(ids)[0]  # (N, 8, 12)
        pooled = pipe.text_encoder(pipe.tokenizer(PROMPTS, padding="max_length", max_length=16, truncation=True,
                                                  return_tensors="pt").input_ids).pooler_output  # (N, 10)
    torch.testing.assert_close(cond["encoder_hidden_states"], t5)
    torch.testing.assert_close(cond["pooled_projections"], pooled)
    assert cond["meta"]["masks"] == [] and not any(k.endswith("_mask") for k in cond)  # Flux passes no mask
    again = run("prompts", tmp_path / "p.txt", "--pipeline", root, "--out", tmp_path / "cond.pt")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_profile_takes_the_conditioning_and_says_when_it_is_synthetic(pipeline, tmp_path):
    root, _ = pipeline
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    assert run("prompts", tmp_path / "p.txt", "--pipeline", root, "--out", tmp_path / "c.pt",
               "--max-length", 8).returncode == 0
    kw = dict(noise_levels=[0.5], batch_size=4, analyses=Analyses(probe=False, outliers=False))
    real = dardiag.profile(str(root), conditioning=tmp_path / "c.pt", **kw)
    assert set(real.inputs) == {"synthetic N(0, 1) latents (seed 0), conditioning c.pt"}
    assert "from the inputs" in real.attrs["dardiag"]["config"]["inputs"] or "c.pt" in real.attrs["dardiag"]["config"]["inputs"]
    fake = dardiag.profile(str(root), samples=4, **kw)
    assert all("synthetic N(0, 1) text conditioning" in v for v in set(fake.inputs))
    assert not real[real.metric == "act_rms"].value.equals(fake[fake.metric == "act_rms"].value)


def test_bad_prompt_files_are_one_line(pipeline, tmp_path):
    root, _ = pipeline
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    for args, words in (((tmp_path / "empty.txt", "--pipeline", root), "holds no prompts"),
                        ((tmp_path / "bin.txt", "--pipeline", root), "not a readable UTF-8"),
                        ((tmp_path / "empty.txt", "--pipeline", tmp_path), "holds no prompts"),
                        ((tmp_path / "bin.txt", "--pipeline", tmp_path / "nowhere"), "UTF-8")):
        res = run("prompts", *args, "--out", tmp_path / "o.pt")
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, res.stderr
    (tmp_path / "ok.txt").write_text("a cat")
    res = run("prompts", tmp_path / "ok.txt", "--pipeline", tmp_path, "--out", tmp_path / "o.pt")
    assert res.returncode == 2 and "not a diffusers pipeline folder" in res.stderr


def test_a_full_disk_is_one_line_and_the_same_command_writes_the_file(pipeline, tmp_path, monkeypatch):
    from helpers import full_disk

    root, _ = pipeline
    (tmp_path / "p.txt").write_text("a cat")
    args = ("prompts", tmp_path / "p.txt", "--pipeline", root, "--out", tmp_path / "c.pt", "--max-length", 8)
    hit = full_disk(monkeypatch, "c.pt")
    res = run(*args)
    last = res.stderr.strip().splitlines()[-1]  # after transformers' own loading bars
    assert res.returncode == 2 and last.startswith("error:") and "the disk is full" in last, res.stderr
    assert "Traceback" not in res.stderr
    assert hit and sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]
    monkeypatch.undo()
    assert run(*args).returncode == 0 and torch.load(tmp_path / "c.pt", weights_only=True)["meta"]["prompts"]


#################################################################################
#                  PixArt: the pipeline's padding mask goes along               #
#################################################################################


@pytest.fixture(scope="module")
def pixart(tmp_path_factory):
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

    torch.manual_seed(0)
    t5 = transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=len(WORDS) + 3, d_model=12, d_ff=16, d_kv=6, num_layers=1, num_heads=2, pad_token_id=0)).eval()
    pipe = PixArtSigmaPipeline(tokenizer=tokenizer(512), text_encoder=t5, vae=None,
                               transformer=build("PixArtTransformer2DModel"), scheduler=DPMSolverMultistepScheduler())
    root = tmp_path_factory.mktemp("pipe") / "tiny-pixart"
    pipe.save_pretrained(root)
    return root, pipe


def test_prompts_keep_the_pipelines_padding_mask(pixart, tmp_path):
    root, pipe = pixart
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    res = run("prompts", tmp_path / "p.txt", "--pipeline", root, "--out", tmp_path / "c.pt", "--max-length", 8)
    assert res.returncode == 0, res.stderr
    assert "encoder_hidden_states_mask [4, 8]" in res.stdout.splitlines()[-1]
    cond = torch.load(tmp_path / "c.pt", weights_only=True)
    want = pipe.tokenizer(PROMPTS, padding="max_length", max_length=8, truncation=True,
                          return_tensors="pt").attention_mask  # (N, 8): 5, 6, 2, 2 real tokens
    assert torch.equal(cond["encoder_hidden_states_mask"], want) and 0 < want.sum() < want.numel()
    assert cond["meta"]["masks"] == ["encoder_hidden_states_mask"] and cond["meta"]["mask_notes"] == []


def test_profile_passes_the_mask_to_the_model(pixart, tmp_path, monkeypatch):
    from diffusers import PixArtTransformer2DModel

    root, _ = pixart
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    assert run("prompts", tmp_path / "p.txt", "--pipeline", root, "--out", tmp_path / "c.pt",
               "--max-length", 8).returncode == 0
    cond = torch.load(tmp_path / "c.pt", weights_only=True)
    torch.save({k: v for k, v in cond.items() if k != "encoder_hidden_states_mask"}, tmp_path / "nomask.pt")
    seen, forward = [], PixArtTransformer2DModel.forward

    def spy(self, *args, **kwargs):  # what the model receives, as its pipeline would pass it
        seen.append(kwargs.get("encoder_attention_mask"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(PixArtTransformer2DModel, "forward", spy)
    kw = dict(noise_levels=[0.5], batch_size=4, analyses=Analyses(probe=False, outliers=False))
    masked = dardiag.profile(str(root), conditioning=tmp_path / "c.pt", **kw)
    assert seen and all(torch.equal(m.cpu(), cond["encoder_hidden_states_mask"]) for m in seen)
    assert set(masked.inputs) == {"synthetic N(0, 1) latents (seed 0), conditioning c.pt; "
                                  "encoder_hidden_states with its padding mask (53% padding)"}
    seen.clear()
    attended = dardiag.profile(str(root), conditioning=tmp_path / "nomask.pt", **kw)
    assert all(torch.equal(m.cpu(), torch.ones(4, 8, dtype=torch.long)) for m in seen)  # all-valid, as before
    rms = [df[df.metric == "act_rms"].value.reset_index(drop=True) for df in (masked, attended)]
    assert not rms[0].equals(rms[1])


def test_masks_are_kept_only_when_unambiguous():
    from dardiag.adapters.prompts import match_masks

    a, b, c = torch.randn(2, 8, 4), torch.randn(2, 8, 6), torch.randn(2, 5, 4)  # (N, L, D)
    m8, m5 = torch.ones(2, 8, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool)
    masks, notes = match_masks((a, m8, c, m5), {"x": a, "y": c}, 2)
    assert set(masks) == {"x_mask", "y_mask"} and masks["y_mask"].dtype == torch.long and notes == []
    masks, notes = match_masks((a, b, m8), {"x": a, "y": b}, 2)  # two sequences of 8 tokens, one mask
    assert masks == {} and "ambiguous" in notes[0]
    masks, notes = match_masks((a, a, m8), {"x": a, "y": a}, 2)  # one output matched to two names: both get it
    assert set(masks) == {"x_mask", "y_mask"}
    masks, notes = match_masks((a, m5), {"x": a}, 2)
    assert masks == {} and "no matched text sequence has 5 tokens" in notes[0]


def test_a_bad_mask_is_one_line(pixart, tmp_path):
    root, _ = pixart
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    assert run("prompts", tmp_path / "p.txt", "--pipeline", root, "--out", tmp_path / "c.pt",
               "--max-length", 8).returncode == 0
    cond = torch.load(tmp_path / "c.pt", weights_only=True)
    mask = cond["encoder_hidden_states_mask"]
    for bad, words in ((mask[:, :5], "it must be [4, 8]"), (mask * 2, "holds 2")):
        torch.save({**cond, "encoder_hidden_states_mask": bad}, tmp_path / "bad.pt")
        res = run("profile", root, "--cond", tmp_path / "bad.pt", "--out", tmp_path / "out", "--noise-levels", "0.5",
                  "--batch-size", "4", "--no-figures", "--no-progress")
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1

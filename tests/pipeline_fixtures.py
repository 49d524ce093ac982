"""Tiny diffusers pipelines assembled from tiny random components (transformer, text encoders with
word-level tokenizers built offline, a VAE where it matters), saved with ``save_pretrained``: one
single-stream image pipeline (PixArt-Sigma, batched guidance, a padding mask, a VAE), one joint
text-image pipeline (Flux: 2x2-packed latents, CLIP + T5) and one video pipeline (Wan: two guidance
passes per step)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffusers_tiny import WAN_TINY, build

WORDS = "a photo of cat dog red blue house tree under the sky".split()
PROMPTS = ["a photo of a cat", "a red house under the sky", "blue dog", "a tree"]
TEXT = 8  # max_sequence_length the tests pass (--call): short text keeps every call fast
CALLS = {"pixart": {"use_resolution_binning": False, "max_sequence_length": TEXT},  # binning wants real sizes
         "flux": {"max_sequence_length": TEXT}, "wan": {"max_sequence_length": TEXT}}
SIZES = {"pixart": {}, "flux": {"height": 32, "width": 48}, "wan": {"height": 32, "width": 32, "num_frames": 5}}


def tokenizer(max_length: int):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                                eos_token="</s>", model_max_length=max_length)


def _t5(d_model: int = 12, umt5: bool = False):
    import transformers

    cls, cfg = ((transformers.UMT5EncoderModel, transformers.UMT5Config) if umt5 else
                (transformers.T5EncoderModel, transformers.T5Config))
    return cls(cfg(vocab_size=len(WORDS) + 3, d_model=d_model, d_ff=16, d_kv=6, num_layers=1, num_heads=2,
                   pad_token_id=0)).eval()


def build_pipeline(kind: str, root: Path) -> Path:
    """Save the tiny ``kind`` pipeline ("pixart", "flux", "wan") under ``root/kind`` and return its folder."""
    import diffusers
    import transformers

    torch.manual_seed(0)
    folder = root / kind
    if kind == "pixart":
        vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                                      down_block_types=("DownEncoderBlock2D",) * 2,
                                      up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1,
                                      norm_num_groups=4, sample_size=16).eval()
        pipe = diffusers.PixArtSigmaPipeline(tokenizer=tokenizer(512), text_encoder=_t5(), vae=vae,
                                             transformer=build("PixArtTransformer2DModel"),
                                             scheduler=diffusers.DPMSolverMultistepScheduler())
    elif kind == "flux":
        clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
            vocab_size=len(WORDS) + 3, hidden_size=10, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, eos_token_id=2, pad_token_id=0, bos_token_id=2)).eval()
        pipe = diffusers.FluxPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=clip,
                                      tokenizer=tokenizer(16), text_encoder_2=_t5(), tokenizer_2=tokenizer(512),
                                      transformer=build("FluxTransformer2DModel"))
    elif kind == "wan":
        wan = diffusers.WanTransformer3DModel(**WAN_TINY).eval()
        scheduler = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                     flow_shift=3.0)
        pipe = diffusers.WanPipeline(tokenizer=tokenizer(512), text_encoder=_t5(umt5=True), vae=None,
                                     scheduler=scheduler, transformer=wan)
    else:
        raise ValueError(kind)
    pipe.save_pretrained(folder)
    config = folder / "transformer" / "config.json"
    cfg = json.loads(config.read_text())
    if "sample_size" not in cfg or kind == "flux":  # the tiny size, where the class's config has none
        config.write_text(json.dumps({**cfg, "sample_size": 8}))
    return folder


def load_pipeline(folder: Path):
    """The saved pipeline as a user loads it (absent components as None), progress bars off."""
    import diffusers

    index = json.loads((folder / "model_index.json").read_text())
    cls = getattr(diffusers, index["_class_name"])
    absent = {k: None for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
              and not (folder / k).is_dir()}
    pipe = cls.from_pretrained(folder, local_files_only=True, **absent)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generators(seed: int, ids) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + j) for j in ids]

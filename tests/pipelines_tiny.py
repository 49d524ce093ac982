"""Tiny diffusers pipelines around the tiny transformers of tests/diffusers_tiny.py, one per table class
whose pipeline can be assembled from tiny components, for the call-parity test (tests/test_pipeline_parity.py).

A ``Case`` builds the pipeline (the tiny transformer, a scheduler, and a VAE or other component only where
the pipeline cannot run without one: text arrives as precomputed prompt embeddings, the text encoders stay
None), names the call's arguments (sizes, 2 steps, classifier-free guidance off, or the pipeline's distilled
guidance as dardiag uses it), and reads what the pipeline handed its transformer back into dardiag's terms by
the pipeline's own helpers or its documented layout, never by dardiag's packing code: the latents in
dardiag's layout (N, C, H, W) or (N, C, F, H, W), the conditioning under dardiag's names, and the
transformer's output as the prediction dardiag's call returns (the pipeline's unpacking and sign).

The classes without a case are declared in dardiag/adapters/classes/pipelines.py with the reason.

Legend: N batch, C latent channels, F latent frames, H/W latent side, T image tokens, L text tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import torch

from diffusers_tiny import build

N = 2  # prompts per call
L = 6  # text tokens
STEPS = 2  # the recorded call is the second step's (sigma strictly between 0 and 1)
LACKS = object()  # a default call argument the pipeline does not take


@dataclass
class Seen:
    """What the pipeline passed its transformer at the recorded call, and what it returned."""

    pipe: Any
    args: tuple
    kwargs: dict
    out: Any  # the raw output: the first element of a tuple, ``.sample`` of a dataclass


@dataclass(frozen=True)
class Case:
    """One class's pipeline and how its transformer call reads in dardiag's terms.

    ``make(transformer) -> (pipeline, call kwargs)``; ``x(seen)`` the latents, ``cond(seen)`` the conditioning,
    ``out(seen)`` the prediction, all in dardiag's layout; ``t(seen, step)`` dardiag's native timestep where the
    test's default (the scheduler's sigma at that step, by the family's convention) does not apply."""

    pipeline: str
    make: Callable
    x: Callable
    cond: Callable
    out: Callable
    config: dict = field(default_factory=dict)  # overrides of the tiny config (a text-to-X variant)
    t: Callable | None = None
    calls: int = 1  # transformer calls per denoising step (classifier-free guidance as two passes)
    branch: int = 0  # which of them is recorded
    note: str = ""  # a setting that differs from the pipeline's defaults, and why


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=g(seed))


def padded_mask(n: int = N, length: int = L) -> torch.Tensor:
    """(n, length) long: the first prompt all tokens, the others with their last two padded."""
    m = torch.ones(n, length, dtype=torch.long)
    m[1:, -2:] = 0
    return m


def scheduler(name: str = "FlowMatchEulerDiscreteScheduler", **config) -> Callable:
    """A builder of a diffusers scheduler."""
    def make():
        import diffusers

        return getattr(diffusers, name)(**config)
    return make


def pipeline(cls: str, sch: Callable = scheduler(), parts: dict | None = None, **call) -> Callable:
    """``make`` of a pipeline of class ``cls``: the transformer, ``sch()``, the components in ``parts`` (name: a
    builder), every other component None; called with ``call`` over 64 x 64 px, 2 steps, latent output (an
    argument given as LACKS is left out)."""
    def make(model):
        import diffusers

        klass = getattr(diffusers, cls)
        given = {p: None for p in klass._get_signature_keys(klass)[0] if p not in ("transformer", "scheduler")}
        given.update({k: f() for k, f in (parts or {}).items()})
        pipe = klass(transformer=model, scheduler=sch(), **given)
        args = {**dict(height=64, width=64, num_inference_steps=STEPS, output_type="latent", generator=g()), **call}
        return pipe, {k: v for k, v in args.items() if v is not LACKS}
    return make


def video(cls: str, sch: Callable = scheduler(), parts: dict | None = None, **call) -> Callable:
    """As :func:`pipeline`, 9 frames: 3 latent frames of 8 x 8 through the 4x / 8x VAE the video pipelines
    assume without one."""
    return pipeline(cls, sch, parts, **{"num_frames": 9, **call})


def same(s: Seen) -> torch.Tensor:
    """The transformer's latents as they are (the pipeline's layout is dardiag's)."""
    return s.kwargs["hidden_states"] if "hidden_states" in s.kwargs else s.args[0]


def out(s: Seen) -> torch.Tensor:
    return s.out


def ehs(s: Seen) -> dict:
    return {"encoder_hidden_states": s.kwargs["encoder_hidden_states"]}


def ehs_mask(key: str = "encoder_attention_mask") -> Callable:
    """The text and the text mask the pipeline passed as ``key``."""
    return lambda s: {"encoder_hidden_states": s.kwargs["encoder_hidden_states"],
                      "encoder_hidden_states_mask": s.kwargs[key]}


def ehs_pooled(s: Seen) -> dict:
    return {"encoder_hidden_states": s.kwargs["encoder_hidden_states"],
            "pooled_projections": s.kwargs["pooled_projections"]}


def packed(pipeline_: str, make, read, cond, sign: float = 1.0, **kw) -> Case:
    """A case whose transformer takes packed latents: its hidden_states and output read through ``read(tensor,
    seen)``, the output times ``sign`` (-1 where the pipeline steps with the negated output)."""
    return Case(pipeline_, make, lambda s: read(s.kwargs["hidden_states"], s), cond,
                lambda s: sign * read(s.out, s), **kw)


def unpack(*args) -> Callable:
    """A reader through the pipeline's own ``_unpack_latents(tensor, *args)``; a 5-D result (N, C, 1, H, W) loses
    its frame axis."""
    def read(t: torch.Tensor, s: Seen) -> torch.Tensor:
        x = type(s.pipe)._unpack_latents(t, *args)
        return x.squeeze(2) if x.dim() == 5 else x
    return read


def frames_first(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2)  # (N, F, C, H, W) <-> (N, C, F, H, W)


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 4, 1, 2, 3)  # (N, F, H, W, C) -> (N, C, F, H, W): the Kandinsky layout


def loop_t(s: Seen, step: int) -> torch.Tensor:
    """The denoising loop's own timestep: DPM-Solver/UniPC flow schedules round sigma x 1000 to an integer, which
    the pipeline passes while its latents sit at the unrounded sigma."""
    return s.pipe.scheduler.timesteps[step].float()


#################################################################################
#              Components that some pipelines cannot run without                #
#################################################################################


def tiny_vae():
    """An AutoencoderKL of one block (2x), 4 latent channels: its config is read, it never decodes here."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                         up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=8, layers_per_block=1)


def tiny_wan_vae():
    """An AutoencoderKLWan of 4 latent channels (4x in time, 8x in space)."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)


def tiny_hunyuan15_vae():
    """An AutoencoderKLHunyuanVideo15 of 4 latent channels (16x in space)."""
    from diffusers import AutoencoderKLHunyuanVideo15

    return AutoencoderKLHunyuanVideo15(latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1)


def tiny_magvit():
    """An AutoencoderKLMagvit of 4 latent channels (EasyAnimate reads them in its loop)."""
    from diffusers import AutoencoderKLMagvit

    return AutoencoderKLMagvit(latent_channels=4, block_out_channels=[8, 8, 8, 8], layers_per_block=1,
                               norm_num_groups=4)


def no_cfg():
    """The guider of guider-driven pipelines, at guidance 1: one conditional pass."""
    from diffusers import ClassifierFreeGuidance

    return ClassifierFreeGuidance(guidance_scale=1.0)


class Processor:
    """A stand-in for a Qwen3-VL processor whose pipeline's __init__ counts the system prompt's tokens and looks up
    the image-pad token; a call with prompt embeddings uses neither."""

    tokenizer = SimpleNamespace(encode=lambda text: [1])

    @staticmethod
    def apply_chat_template(*args, **kwargs):
        return [[0] * 4]


class Unused(torch.nn.Module):
    """A component the pipeline reads the device and dtype of but never calls here: Cosmos's guardrail (it checks
    decoded videos; the package is not a dardiag dependency), Bria-Fibo's text encoder (its output stood in for)."""

    device = torch.device("cpu")
    dtype = torch.float32


def cogvideox_ddim(snr_shift_scale: float) -> Callable:
    return scheduler("CogVideoXDDIMScheduler", beta_end=0.012, beta_schedule="scaled_linear",
                     prediction_type="v_prediction", rescale_betas_zero_snr=True, snr_shift_scale=snr_shift_scale,
                     timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True)


def flow_dpm(name: str, shift: float) -> Callable:
    """DPM-Solver or UniPC on a flow-matching schedule, as the Sana, SkyReels and Cosmos pipelines are released."""
    return scheduler(name, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)


GLM_SHIFT = scheduler(base_shift=0.25, max_shift=0.75, base_image_seq_len=256, use_dynamic_shifting=True,
                      time_shift_type="linear")  # CogView4 / GLM-Image: the linear dynamic shift
GUIDED = "the pipeline's default distilled guidance, which dardiag embeds for guidance-distilled configs"


#################################################################################
#                  Image, one token stream (classes/image.py)                   #
#################################################################################

IMAGE: dict[str, Case] = {
    "DiTTransformer2DModel": Case(
        "DiTPipeline", pipeline("DiTPipeline", scheduler("DPMSolverMultistepScheduler"), class_labels=[3, 7],
                                guidance_scale=1.0, height=LACKS, width=LACKS, output_type=LACKS),
        same, lambda s: {}, out),
    "PixArtTransformer2DModel": Case(  # a 64 x 48 px image: resolution and aspect-ratio conditioning
        "PixArtAlphaPipeline", pipeline("PixArtAlphaPipeline", scheduler("DPMSolverMultistepScheduler"),
                                        prompt_embeds=randn(N, L, 12), prompt_attention_mask=padded_mask(),
                                        guidance_scale=1.0, use_resolution_binning=False, width=48),
        same, ehs_mask(), out, config=dict(sample_size=128, attention_head_dim=12, cross_attention_dim=24),
        note="sample_size 128, as PixArt-alpha 1024 (the pipeline passes resolution and aspect ratio then), width 24 "
        "(divisible by 3 for those embeddings); PixArtSigmaPipeline passes none, as dardiag for other configs"),
    "SanaTransformer2DModel": Case(
        "SanaPipeline", pipeline("SanaPipeline", flow_dpm("DPMSolverMultistepScheduler", 3.0),
                                 prompt_embeds=randn(N, L, 12), prompt_attention_mask=padded_mask(), guidance_scale=1.0,
                                 height=256, width=256, use_resolution_binning=False),
        same, ehs_mask(), out, t=loop_t, config=dict(timestep_scale=2.0),
        note="timestep_scale 2: the pipeline multiplies its timestep by the config's"),
    "HunyuanDiT2DModel": Case(
        "HunyuanDiTPipeline", pipeline(
            "HunyuanDiTPipeline", scheduler("DDPMScheduler", beta_schedule="scaled_linear", beta_start=0.00085,
                                            beta_end=0.03, prediction_type="v_prediction", steps_offset=1,
                                            clip_sample=False),
            prompt_embeds=randn(N, 7, 16), prompt_attention_mask=padded_mask(N, 7),
            prompt_embeds_2=randn(N, 9, 16, seed=2), prompt_attention_mask_2=padded_mask(N, 9), guidance_scale=1.0,
            use_resolution_binning=False),
        same, lambda s: {"encoder_hidden_states": s.kwargs["encoder_hidden_states"],
                         "encoder_hidden_states_mask": s.kwargs["text_embedding_mask"],
                         "encoder_hidden_states_t5": s.kwargs["encoder_hidden_states_t5"],
                         "encoder_hidden_states_t5_mask": s.kwargs["text_embedding_mask_t5"]}, out),
    "Lumina2Transformer2DModel": Case(
        "Lumina2Pipeline", pipeline("Lumina2Pipeline", scheduler(shift=6.0), prompt_embeds=randn(N, L, 12),
                                    prompt_attention_mask=padded_mask(), guidance_scale=1.0),
        same, ehs_mask(), out),
    "LuminaNextDiT2DModel": Case(
        "LuminaPipeline", pipeline("LuminaPipeline", prompt_embeds=randn(N, L, 12), prompt_attention_mask=padded_mask(),
                                   guidance_scale=1.0),
        same, ehs_mask("encoder_mask"), out),
    "PRXTransformer2DModel": Case(
        "PRXPipeline", pipeline("PRXPipeline", prompt_embeds=randn(N, L, 12),
                                prompt_attention_mask=padded_mask().bool(), guidance_scale=1.0,
                                use_resolution_binning=False),
        same, ehs_mask("attention_mask"), out),
    "BriaFibo2Transformer2DModel": Case(
        "BriaFibo2Pipeline", pipeline("BriaFibo2Pipeline", prompt_embeds=randn(N, 2, L, 12), guidance_scale=1.0),
        same, ehs, out),
    "ZImageTransformer2DModel": Case(  # lists of (C, 1, H, W) latents and (L, D) captions, positional
        "ZImagePipeline", pipeline("ZImagePipeline", scheduler(shift=3.0), prompt_embeds=list(randn(N, L, 12)),
                                   guidance_scale=0.0),
        lambda s: torch.stack(s.args[0]).squeeze(2), lambda s: {"cap_feats": torch.stack(s.args[2])},
        lambda s: torch.stack(s.out).squeeze(2)),
    "ErnieImageTransformer2DModel": Case(
        "ErnieImagePipeline", pipeline("ErnieImagePipeline", prompt_embeds=list(randn(N, L, 12)), guidance_scale=1.0,
                                       height=128, width=128, use_pe=False),
        same, lambda s: {"text_bth": s.kwargs["text_bth"]}, out),
}


#################################################################################
#                   Image, joint text-image (classes/joint.py)                  #
#################################################################################


def _longcat(model):
    # its encode_prompt counts the prompts even when given their embeddings: the encoding is stood in for
    pipe, call = pipeline("LongCatImagePipeline", prompt=["a", "b"], guidance_scale=1.0,
                          enable_prompt_rewrite=False)(model)
    embeds = randn(N, L, 12)
    pipe._encode_prompt = lambda prompt: embeds
    return pipe, call


def _fibo(model):
    # it takes no prompt embeddings: its text encoder's output (the hidden states of every layer, the padding mask)
    # is stood in for, 3 layers of 10 features (the last two concatenated make the 20-feature text)
    pipe, call = pipeline("BriaFiboPipeline", scheduler(use_dynamic_shifting=True), parts=dict(text_encoder=Unused),
                          prompt=["a", "b"], guidance_scale=1.0, height=128, width=128)(model)
    layers, keep = tuple(randn(N, L, 10, seed=k) for k in range(3)), padded_mask()
    pipe.get_prompt_embeds = lambda **kw: (torch.cat([layers[-1], layers[-2]], dim=-1), layers, keep)
    return pipe, call


def _fibo_read(t: torch.Tensor, s: Seen) -> torch.Tensor:
    return type(s.pipe)._unpack_latents_no_patch(t, 128, 128, 16)  # (N, C, H, W)


def _qwen21(model):
    pipe, call = pipeline("QwenImage21Pipeline", parts=dict(processor=Processor), prompt_embeds=randn(N, L, 12),
                          prompt_embeds_mask=padded_mask(), height=128, width=128, use_kv_cache=False)(model)
    pipe.latent_channels = model.config.in_channels  # the VAE's z_dim; 64 without a VAE
    return pipe, call


def _flux2_read(t: torch.Tensor, s: Seen) -> torch.Tensor:
    return type(s.pipe)._unpack_latents_with_ids(t, s.kwargs["img_ids"])  # (N, C, H, W) by the position ids


def _flux3(model):
    # diffusers has FLUX.3 as modular blocks only: its core denoise blocks (no text encoder: prompt embeddings)
    from diffusers import Flux3AutoBlocks

    pipe = Flux3AutoBlocks().sub_blocks["denoise"].init_pipeline()
    pipe.update_components(transformer=model, scheduler=scheduler()(), guider=no_cfg())
    return pipe, dict(prompt_embeds=randn(N, L, 12), height=128, width=128, num_inference_steps=STEPS,
                      generator=g(), output="latents")


def _flux3_read(t: torch.Tensor, s: Seen) -> torch.Tensor:
    """(N, H W, C) -> (N, C, H, W), as Flux3UnpackLatentsStep unpacks the denoised tokens."""
    return t.view(t.shape[0], 8, 8, t.shape[2]).permute(0, 3, 1, 2)


FLUX_SHIFT = scheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                       max_image_seq_len=4096, shift=3.0)

JOINT: dict[str, Case] = {
    "SD3Transformer2DModel": Case(
        "StableDiffusion3Pipeline", pipeline("StableDiffusion3Pipeline", scheduler(shift=3.0),
                                             prompt_embeds=randn(N, L, 12), pooled_prompt_embeds=randn(N, 10, seed=2),
                                             guidance_scale=1.0),
        same, ehs_pooled, out),
    "FluxTransformer2DModel": packed(
        "FluxPipeline", pipeline("FluxPipeline", FLUX_SHIFT, prompt_embeds=randn(N, L, 12),
                                 pooled_prompt_embeds=randn(N, 10, seed=2)),
        unpack(64, 64, 8), ehs_pooled, note=f"guidance 3.5, {GUIDED}"),
    "QwenImageTransformer2DModel": packed(
        "QwenImagePipeline", pipeline("QwenImagePipeline", prompt_embeds=randn(N, L, 12),
                                      prompt_embeds_mask=padded_mask(), true_cfg_scale=1.0),
        unpack(64, 64, 8), ehs_mask("encoder_hidden_states_mask")),
    "AuraFlowTransformer2DModel": Case(
        "AuraFlowPipeline", pipeline("AuraFlowPipeline", prompt_embeds=randn(N, L, 12),
                                     prompt_attention_mask=padded_mask(), guidance_scale=1.0),
        same, ehs, out),
    "BriaTransformer2DModel": packed(
        "BriaPipeline", pipeline("BriaPipeline", parts=dict(vae=tiny_vae), prompt_embeds=randn(N, L, 12),
                                 guidance_scale=1.0, height=8, width=8),
        unpack(8, 8, 2), ehs, note="a one-block VAE (2x): the pipeline reads its config"),
    "BriaFiboTransformer2DModel": Case(  # latents as tokens (N, H W, C), unpatched (the pipeline's default)
        "BriaFiboPipeline", _fibo, lambda s: _fibo_read(s.kwargs["hidden_states"], s),
        lambda s: {"encoder_hidden_states": s.kwargs["encoder_hidden_states"],
                   "text_encoder_layers": torch.stack(s.kwargs["text_encoder_layers"], dim=1),  # (N, K, L, D)
                   "encoder_hidden_states_mask": s.kwargs["joint_attention_kwargs"]["attention_mask"][:, 0, 0, :L]},
        lambda s: _fibo_read(s.out, s), config=dict(joint_attention_dim=20),
        note="joint_attention_dim 20: the pipeline's text is its encoder's last two layers concatenated"),
    "ChromaTransformer2DModel": packed(  # the pipeline's mask is float (its encoder's dtype), image tokens appended
        "ChromaPipeline", pipeline("ChromaPipeline", prompt_embeds=randn(N, L, 12),
                                   prompt_attention_mask=padded_mask().float(), guidance_scale=1.0),
        unpack(64, 64, 8), lambda s: {"encoder_hidden_states": s.kwargs["encoder_hidden_states"],
                                      "encoder_hidden_states_mask": s.kwargs["attention_mask"][:, :L]}),
    "CogView3PlusTransformer2DModel": Case(
        "CogView3PlusPipeline", pipeline("CogView3PlusPipeline", cogvideox_ddim(4.0), prompt_embeds=randn(N, L, 12),
                                         guidance_scale=1.0),
        same, ehs, out),
    "CogView4Transformer2DModel": Case(
        "CogView4Pipeline", pipeline("CogView4Pipeline", GLM_SHIFT, prompt_embeds=randn(N, L, 12), guidance_scale=1.0),
        same, ehs, out),
    "Flux2Transformer2DModel": packed(
        "Flux2Pipeline", pipeline("Flux2Pipeline", prompt_embeds=randn(N, L, 12), height=128, width=128),
        _flux2_read, ehs, note=f"guidance 4.0, {GUIDED}"),
    "Flux3Transformer2DModel": packed(
        "Flux3ModularPipeline", _flux3, _flux3_read, ehs,
        note="the modular pipeline's denoise blocks (text encoding and decoding left out), guider at 1"),
    "GlmImageTransformer2DModel": Case(
        "GlmImagePipeline", pipeline("GlmImagePipeline", GLM_SHIFT, prompt_embeds=randn(N, L, 12),
                                     negative_prompt_embeds=randn(N, L, 12, seed=5), guidance_scale=1.5,
                                     prior_token_ids=torch.randint(0, 16, (N, 16), generator=g(3))),
        same, ehs, out, calls=2, branch=1,
        note="the unconditional pass (prior tokens dropped, the negative prompt), which is dardiag's call; the "
        "prior tokens stand in for the autoregressive model's"),
    "HiDreamImageTransformer2DModel": Case(
        "HiDreamImagePipeline", pipeline("HiDreamImagePipeline", prompt_embeds_t5=randn(N, L, 12),
                                         prompt_embeds_llama3=randn(2, N, L, 10, seed=2),
                                         pooled_prompt_embeds=randn(N, 14, seed=3), guidance_scale=1.0),
        same, lambda s: {"encoder_hidden_states_t5": s.kwargs["encoder_hidden_states_t5"],
                         "encoder_hidden_states_llama3": s.kwargs["encoder_hidden_states_llama3"].transpose(0, 1),
                         "pooled_embeds": s.kwargs["pooled_embeds"]},
        lambda s: -s.out),  # the pipeline steps with the negated output
    "HunyuanImageTransformer2DModel": Case(
        "HunyuanImagePipeline", pipeline(
            "HunyuanImagePipeline", prompt_embeds=randn(N, L, 12), prompt_embeds_mask=padded_mask(),
            prompt_embeds_2=torch.zeros(N, 128, 10), prompt_embeds_mask_2=torch.zeros(N, 128, dtype=torch.long)),
        same, ehs_mask(), out, config=dict(guidance_embeds=True),
        note=f"a guidance-distilled config: guidance 3.25, {GUIDED}; no glyph text (zero ByT5 tokens, masked)"),
    "Krea2Transformer2DModel": packed(
        "Krea2Pipeline", pipeline("Krea2Pipeline", prompt_embeds=randn(N, L, 3, 12),
                                  prompt_embeds_mask=padded_mask().bool(), guidance_scale=0.0),
        lambda t, s: s.pipe._unpack_latents(t, 64, 64).squeeze(2), ehs_mask()),
    "LongCatImageTransformer2DModel": packed(
        "LongCatImagePipeline", _longcat, unpack(64, 64, 8), ehs, config=dict(in_channels=64),
        note="in_channels 64 (16 latent channels packed 2x2): the pipeline makes 16-channel latents"),
    "NucleusMoEImageTransformer2DModel": packed(
        "NucleusMoEImagePipeline", pipeline("NucleusMoEImagePipeline", prompt_embeds=randn(N, L, 12),
                                            prompt_embeds_mask=padded_mask(), guidance_scale=1.0),
        unpack(64, 64, 2, 8), ehs_mask("encoder_hidden_states_mask"), sign=-1.0),  # it steps with -output
    "OvisImageTransformer2DModel": packed(
        "OvisImagePipeline", pipeline("OvisImagePipeline", prompt_embeds=randn(N, L, 12), guidance_scale=1.0),
        unpack(64, 64, 8), ehs),
    "QwenImage21Transformer2DModel": Case(  # the output holds [text; target]: the pipeline keeps the last T tokens
        "QwenImage21Pipeline", _qwen21, lambda s: unpack(128, 128, 16)(s.kwargs["hidden_states"], s),
        ehs_mask("encoder_hidden_states_mask"), lambda s: unpack(128, 128, 16)(s.out[:, -64:], s),
        note="a stand-in processor (read by its __init__ only); without a VAE the latent channels are set to the "
        "transformer's"),
}


#################################################################################
#                   Video (classes/video.py, video_more.py)                     #
#################################################################################


def _joy_plus(model):
    # its call formats the prompts even when given their embeddings: the encoding is stood in for
    pipe, call = pipeline("JoyImageEditPlusPipeline", parts=dict(processor=Processor), prompt=["a", "b"],
                          guidance_scale=1.0)(model)
    embeds, keep = randn(N, L, 12), padded_mask()
    pipe.encode_prompt_multiple_images = lambda **kw: (embeds, keep)
    return pipe, call


def _joy_video(patches: torch.Tensor, s: Seen) -> torch.Tensor:
    """(N, T, C, pt, ph, pw) target patches -> (N, C, F, H, W), as JoyImageEditPlusPipeline decodes its target."""
    pt, ph, pw = s.pipe.transformer.config.patch_size
    videos = []
    for b, shapes in enumerate(s.kwargs["shape_list"]):
        lt, lh, lw = shapes[0]
        target = patches[b, : lt * lh * lw]  # (T, C, pt, ph, pw)
        c = target.shape[1]
        target = target.reshape(lt, lh, lw, c, pt, ph, pw).permute(3, 0, 4, 1, 5, 2, 6)  # (C, lt, pt, lh, ph, ...)
        videos.append(target.reshape(c, lt * pt, lh * ph, lw * pw))
    return torch.stack(videos)


def _first(channels: int) -> Callable:
    """The latents: the first ``channels`` channels of what the pipeline passed (the rest its zero condition)."""
    return lambda s: s.kwargs["hidden_states"][:, :channels]


T2V = "the text-to-video config (the tiny one is an image-to-video or inpaint variant)"

VIDEO: dict[str, Case] = {
    "WanTransformer3DModel": Case(
        "WanPipeline", video("WanPipeline", prompt_embeds=randn(N, L, 12), guidance_scale=1.0), same, ehs, out,
        config=dict(in_channels=4, image_dim=None, added_kv_proj_dim=None), note=T2V),
    "AllegroTransformer3DModel": Case(
        "AllegroPipeline", video("AllegroPipeline", scheduler("EulerAncestralDiscreteScheduler", beta_schedule="linear",
                                                              beta_start=0.0001, beta_end=0.02),
                                 prompt_embeds=randn(N, L, 12), prompt_attention_mask=padded_mask(), guidance_scale=1.0,
                                 clean_caption=False),
        same, ehs_mask(), out),
    "CogVideoXTransformer3DModel": Case(
        "CogVideoXPipeline", video("CogVideoXPipeline", cogvideox_ddim(1.0), prompt_embeds=randn(N, 7, 12),
                                   guidance_scale=1.0),
        lambda s: frames_first(s.kwargs["hidden_states"]), ehs, lambda s: frames_first(s.out),
        config=dict(in_channels=4, ofs_embed_dim=None), note=T2V),
    "LTXVideoTransformer3DModel": Case(  # 17 frames at 256 px: 3 latent frames of 8 x 8 through its 8x / 32x VAE
        "LTXPipeline", video("LTXPipeline", prompt_embeds=randn(N, L, 12), prompt_attention_mask=padded_mask(),
                             guidance_scale=1.0, height=256, width=256, num_frames=17),
        lambda s: type(s.pipe)._unpack_latents(s.kwargs["hidden_states"], 3, 8, 8, 1, 1), ehs_mask(),
        lambda s: type(s.pipe)._unpack_latents(s.out, 3, 8, 8, 1, 1)),
    "MochiTransformer3DModel": Case(
        "MochiPipeline", video("MochiPipeline", scheduler(invert_sigmas=True), prompt_embeds=randn(N, L, 16),
                               prompt_attention_mask=padded_mask(), guidance_scale=1.0, num_frames=13),
        same, ehs_mask(), out, t=lambda s, step: s.pipe.scheduler.sigmas[step].float(),
        note="the released scheduler's inverted sigmas: its sigma is 1 - noise, flow-rev's t itself"),
    "HunyuanVideoTransformer3DModel": Case(
        "HunyuanVideoPipeline", video("HunyuanVideoPipeline", prompt_embeds=randn(N, L, 12),
                                      pooled_prompt_embeds=randn(N, 10, seed=2), prompt_attention_mask=padded_mask()),
        same, lambda s: {**ehs_mask()(s), "pooled_projections": s.kwargs["pooled_projections"]}, out,
        note=f"guidance 6.0, {GUIDED}"),
    "HunyuanVideo15Transformer3DModel": Case(  # [latents; condition zeros; mask zeros] on channels
        "HunyuanVideo15Pipeline", video(
            "HunyuanVideo15Pipeline", parts=dict(guider=no_cfg, vae=tiny_hunyuan15_vae), height=128, width=128,
            prompt_embeds=randn(N, L, 12), prompt_embeds_mask=padded_mask(), prompt_embeds_2=torch.zeros(N, 256, 10),
            prompt_embeds_mask_2=torch.zeros(N, 256, dtype=torch.long)),
        _first(4), ehs_mask(), out, note="a 5-block VAE (16x): the pipeline reads its latent channels"),
    "EasyAnimateTransformer3DModel": Case(
        "EasyAnimatePipeline", video("EasyAnimatePipeline", parts=dict(vae=tiny_magvit), prompt_embeds=randn(N, L, 12),
                                     prompt_attention_mask=padded_mask(), guidance_scale=1.0),
        same, ehs, out, config=dict(in_channels=4), note=T2V + "; a Magvit VAE (its latent channels are read)"),
    "CosmosTransformer3DModel": Case(  # text to world: no conditioning frame, the condition mask zeros
        "Cosmos2_5_PredictBasePipeline", video(
            "Cosmos2_5_PredictBasePipeline", flow_dpm("UniPCMultistepScheduler", 1.0),
            parts=dict(vae=tiny_wan_vae, safety_checker=Unused), prompt_embeds=randn(N, L, 12), guidance_scale=1.0),
        same, ehs, out),
    "SkyReelsV2Transformer3DModel": Case(
        "SkyReelsV2DiffusionForcingPipeline", video(
            "SkyReelsV2DiffusionForcingPipeline", flow_dpm("UniPCMultistepScheduler", 8.0), prompt=None,
            prompt_embeds=randn(1, L, 12), guidance_scale=1.0, ar_step=0),
        same, ehs, out, t=loop_t,
        note="synchronous diffusion forcing (ar_step 0, one short video): every frame at one timestep; one prompt "
        "(the pipeline's fps embedding has one row, whatever the batch)"),
    "AnyFlowTransformer3DModel": Case(
        "AnyFlowPipeline", video("AnyFlowPipeline", scheduler("FlowMapEulerDiscreteScheduler"),
                                 prompt_embeds=randn(N, L, 12), guidance_scale=1.0, use_mean_velocity=False),
        lambda s: frames_first(s.kwargs["hidden_states"]), ehs, lambda s: frames_first(s.out),
        note="use_mean_velocity=False: dardiag measures the instantaneous velocity (r = t)"),
    "AnyFlowFARTransformer3DModel": Case(
        "AnyFlowFARPipeline", video("AnyFlowFARPipeline", scheduler("FlowMapEulerDiscreteScheduler"),
                                    prompt_embeds=randn(N, L, 12), guidance_scale=1.0, use_mean_velocity=False,
                                    chunk_partition=[3]),
        lambda s: frames_first(s.kwargs["hidden_states"]), ehs, lambda s: frames_first(s.out),
        config=dict(full_chunk_limit=1),
        note="one chunk of all frames, instantaneous velocity (use_mean_velocity=False); full_chunk_limit 1 (the "
        "pipeline sizes its KV cache for len(chunk_partition) - full_chunk_limit + 1 chunks)"),
    "HeliosTransformer3DModel": Case(  # the first chunk of 9 latent frames
        "HeliosPipeline", video("HeliosPipeline", scheduler("HeliosScheduler", stages=1), parts=dict(vae=tiny_wan_vae),
                                prompt_embeds=randn(N, L, 12), guidance_scale=1.0, num_frames=33),
        same, ehs, out),
    "JoyImageEditTransformer3DModel": Case(  # it requires a text mask and passes its transformer none
        "JoyImageEditPipeline", pipeline("JoyImageEditPipeline", parts=dict(processor=Processor),
                                         prompt_embeds=randn(N, L, 12), prompt_embeds_mask=padded_mask(),
                                         guidance_scale=1.0),
        same, ehs, out, note="a stand-in processor (read by its __init__ only)"),
    "JoyImageEditPlusTransformer3DModel": Case(
        "JoyImageEditPlusPipeline", _joy_plus, lambda s: _joy_video(s.kwargs["hidden_states"], s),
        ehs_mask("encoder_hidden_states_mask"), lambda s: _joy_video(s.out, s),
        note="a stand-in processor (read by its __init__ only)"),
    "Kandinsky5Transformer3DModel": Case(  # [latents | condition zeros | mask 0] on the last axis
        "Kandinsky5T2VPipeline", video("Kandinsky5T2VPipeline", prompt_embeds_qwen=randn(N, L, 12),
                                       prompt_embeds_clip=randn(N, 10, seed=2), guidance_scale=1.0,
                                       prompt_cu_seqlens=torch.tensor([0, L, 2 * L], dtype=torch.int32)),
        lambda s: channels_last(s.kwargs["hidden_states"])[:, :4], ehs_pooled, lambda s: channels_last(s.out)),
    "Kandinsky6Transformer3DModel": Case(
        "Kandinsky6TI2VAPipeline", video("Kandinsky6TI2VAPipeline", prompt_embeds=randn(N, L, 12),
                                         pooled_prompt_embeds=randn(N, 10, seed=2), guidance_scale=1.0,
                                         sample_audio=False),
        lambda s: channels_last(s.kwargs["hidden_states"])[:, :4], ehs_pooled, lambda s: channels_last(s.out)),
    "MotifVideoTransformer3DModel": Case(  # [latents; condition zeros; mask zeros] on channels
        "MotifVideoPipeline", video("MotifVideoPipeline", parts=dict(guider=no_cfg, vae=tiny_wan_vae),
                                    prompt_embeds=randn(N, L, 12), prompt_attention_mask=padded_mask()),
        _first(4), ehs_mask(), out),
    "SanaVideoTransformer3DModel": Case(
        "SanaVideoPipeline", video("SanaVideoPipeline", flow_dpm("DPMSolverMultistepScheduler", 8.0),
                                   prompt_embeds=randn(N, L, 12), prompt_attention_mask=padded_mask(),
                                   guidance_scale=1.0, use_resolution_binning=False, num_frames=LACKS, frames=9),
        same, ehs_mask(), out, t=loop_t),
    "LatteTransformer3DModel": Case(
        "LattePipeline", video("LattePipeline", scheduler("DDIMScheduler", beta_schedule="linear", beta_start=0.0001,
                                                          beta_end=0.02),
                               prompt_embeds=randn(N, L, 12), guidance_scale=1.0, num_frames=LACKS, video_length=3,
                               clean_caption=False, mask_feature=False),
        same, ehs, out),
}


CASES: dict[str, Case] = {**IMAGE, **JOINT, **VIDEO}


def make(cls: str):
    """(pipeline, call kwargs) of ``cls``'s case, around a fresh tiny transformer (with the case's overrides)."""
    case = CASES[cls]
    return case.make(build(cls, **case.config))

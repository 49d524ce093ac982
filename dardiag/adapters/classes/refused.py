"""Classes dardiag refuses by name, each with its reason: not a diffusion transformer over image or
video latents (UNets, autoencoders, ControlNets, audio and temporal-layer models)."""

from __future__ import annotations

import re

from dardiag.adapters.classes.spec import Refused

REFUSED = (
    Refused("TransformerTemporalModel", "temporal attention layers inside a video UNet, not a denoiser"),
    Refused("AceStepTransformer1DModel", "an audio (1-D sequence) model, not image or video latents"),
    Refused("MiniMaxMusic3Transformer1DModel", "an audio (1-D sequence) model, not image or video latents"),
    Refused("PriorTransformer", "an unCLIP prior over CLIP image embeddings, not image latents"),
    Refused("DualTransformer2DModel", "a pair of Transformer2DModels mixed inside a UNet, not a denoiser"),
    Refused("T5FilmDecoder", "a spectrogram decoder (music), not image or video latents"),
    Refused("StableAudioDiTModel", "an audio (1-D sequence) model, not image or video latents"),
    Refused("StableAudio3DiTModel", "an audio (1-D sequence) model, not image or video latents"),
    Refused("UVit2DModel", "aMUSEd's masked-token transformer: no noise process over latents"),
    Refused("MiniMaxH3Transformer3DModel", "a packed audio-video-text sequence whose layout (row order, rotary "
            "positions, modality tags, timestep direction) only its caller defines; diffusers ships no pipeline for "
            "it to follow"),
    Refused("UniDiffuserModel", "a joint image-text diffusion model (U-ViT over both), not an image denoiser"),
    Refused("LongCatAudioDiTTransformer", "an audio (1-D sequence) model, not image or video latents"),
    Refused("Cosmos3OmniTransformer", "a packed text-vision-sound-action sequence whose layout (token indexes, "
            "positions, per-token timesteps) only its caller builds: a multimodal model, not a denoiser of image or "
            "video latents alone"),
    Refused("RFD4ProteinaTransformer", "a protein-structure model (atoms and residues), not image or video latents"),
    Refused("DreamLiteTransformer2DModel", "a transformer layer inside DreamLite's UNet (DreamLiteUNetModel is the "
            "denoiser, a UNet), not a denoiser"),
)

# (pattern on the class name, what the class is): refused without an entry each
KINDS = (
    (r"^UNet|UNet\w*Model$", "a UNet (convolutional), not a transformer: dardiag profiles DiT-style block stacks"),
    (r"^Autoencoder|VAE|Vae$|^VQModel$|^ConsistencyDecoder", "an autoencoder (VAE), not a denoiser; "
     "`dardiag latents --vae DIR` uses it to encode images"),
    (r"ControlNet|T2IAdapter|MultiAdapter", "a ControlNet/adapter that conditions a denoiser, not a denoiser"),
    # a legacy Transformer2DModel config whose norm_type is neither DiT's nor PixArt's (read_config names it so)
    (r"^Transformer2DModel \(norm_type", "the continuous or discrete Transformer2DModel that UNets use inside their "
     "blocks, not a denoiser (dardiag reads its DiT (ada_norm_zero) and PixArt (ada_norm_single) configs)"),
)


def refusal(name: str) -> str | None:
    """Why ``name`` is refused, or None when it is not on the list."""
    for entry in REFUSED:
        if entry.name == name:
            return entry.reason
    for pattern, reason in KINDS:
        if re.search(pattern, name):
            return reason
    return None

"""diffusers transformers as Subjects: DiT, PixArt, SD3 and Flux from a model directory.

A directory holds ``config.json`` (its ``_class_name`` is trusted) and the weights
(``diffusion_pytorch_model.safetensors``, sharded with a ``.safetensors.index.json``, or ``.bin``).
Loading is strict and lazy: parameters are created on the meta device, so no random initialisation
is paid for, while buffers (the sin-cos position tables, non-persistent in diffusers) are computed
for real by the constructors; the weights are then assigned (``load_state_dict(assign=True)``) after
every key and shape was checked. Facts: shared/design/checkpoints.md, "diffusers transformers".

One small adapter per class says what differs: where the blocks are, which element of a block's
output is the image stream, how the model is called and which conditioning it needs. Conditioning
the user does not supply (text embeddings, pooled projections) is synthesised per sample from a seed
and the sample id, and the Subject's ``info["conditioning"]`` says so.

Probed states (diagnostics.md §2): ``z_0`` is the image hidden state entering the first block, ``z_k``
the image stream after block k; Flux's double blocks come first, then its single blocks (1..D).

Legend: N batch, C latent channels, H/W latent side, T image tokens, L text tokens, D hidden size.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import diffusers
import torch
from torch import nn

from dardiag.adapters.conditioning import Conditioning
from dardiag.adapters.generic import block_taps, first_input, resolve_blocks
from dardiag.adapters.options import LoadOptions
from dardiag.checkpoints.diffusers_dir import load_diffusers_model, pipeline_components, read_config, weight_files
from dardiag.checkpoints.files import sha256_file
from dardiag.errors import DardiagError
from dardiag.families import get_family
from dardiag.hooks.edits import tap_editing
from dardiag.subject import SiteSpec, Subject

VAE_FACTOR = 8  # pixels per latent side in the SD / PixArt / Flux VAEs


#################################################################################
#                          One adapter per class                                #
#################################################################################


def _image_stream(output) -> torch.Tensor:
    """SD3/Flux blocks return (encoder_hidden_states, hidden_states): the image is the second."""
    return output[1] if isinstance(output, tuple) else output


class Adapter:
    """DiTTransformer2DModel: ``model(x, timestep=t, class_labels=y)``, DDPM integer timesteps."""

    family = "dit"
    block_lists: tuple[str, ...] = ("transformer_blocks",)
    text_tokens_default = 0

    def __init__(self, model: nn.Module, raw_config: dict, *, latent_size: int | None,
                 text_tokens: int | None):
        self.model, self.config, self.raw = model, model.config, raw_config
        patch = getattr(self.config, "patch_size", None) or 1
        if latent_size is not None and (not isinstance(latent_size, int) or latent_size < 1 or latent_size % patch):
            raise DardiagError(
                f"--input-size {latent_size}: the latent side must be a positive multiple of the model's "
                f"patch size {patch}"
            )
        self.latent_size = latent_size
        self.text_tokens = text_tokens or self.text_tokens_default
        self.image_tokens = 0  # T, set by every call (ImageTail reads it)

    def input_shape(self) -> tuple[int, int, int]:
        side = self.latent_size or self.config.sample_size
        return (self.config.in_channels, side, side)

    def num_classes(self) -> int:
        return 0

    def cond_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def fixed_conditioning(self) -> str:
        return ""

    def paths(self) -> list[str]:
        return resolve_blocks(self.model, self.block_lists)

    def pick(self, output) -> torch.Tensor:
        return _image_stream(output)

    def forward(self, model, x_t, t, y, cond):
        return model(x_t, timestep=t, class_labels=y).sample  # (N, C_out, H, W)

    def call(self, model, x_t, t_native, y, cond):
        """The Subject's call: conditioning to the model's device and dtype, then the class's forward."""
        dtype = next(model.parameters()).dtype
        cond = {k: v.to(x_t.device, dtype) for k, v in (cond or {}).items()}
        C, H, W = x_t.shape[1:]
        self.image_tokens = self.tokens(H, W)
        return self.forward(model, x_t.to(dtype), t_native, y, cond)

    def tokens(self, H: int, W: int) -> int:
        p = self.config.patch_size
        return (H // p) * (W // p)


class DiTAdapter(Adapter):
    """DiT: ``model(x, timestep=t, class_labels=y)``, DDPM integer timesteps, ImageNet classes."""

    def num_classes(self) -> int:
        return int(self.config.num_embeds_ada_norm)


class PixArtAdapter(Adapter):
    """PixArt-alpha/sigma: T5 caption embeddings (120 tokens in PixArt-alpha), DDPM timesteps."""

    text_tokens_default = 120

    def cond_shapes(self):
        dim = self.config.caption_channels or self.config.cross_attention_dim
        return {"encoder_hidden_states": (self.text_tokens, dim)}

    def fixed_conditioning(self) -> str:
        if not self.model.use_additional_conditions:
            return "added_cond_kwargs resolution/aspect_ratio None (unused by this config)"
        C, H, W = self.input_shape()
        return f"resolution {H * VAE_FACTOR}x{W * VAE_FACTOR} px, aspect ratio {H / W:g}"

    def forward(self, model, x_t, t, y, cond):
        N, _, H, W = x_t.shape
        added = {"resolution": None, "aspect_ratio": None}
        if model.use_additional_conditions:
            added = {
                "resolution": torch.tensor([[H * VAE_FACTOR, W * VAE_FACTOR]], dtype=x_t.dtype,
                                           device=x_t.device).expand(N, 2),  # (N, 2) pixels
                "aspect_ratio": torch.full((N, 1), H / W, dtype=x_t.dtype, device=x_t.device),
            }
        return model(x_t, encoder_hidden_states=cond["encoder_hidden_states"], timestep=t,
                     added_cond_kwargs=added).sample  # (N, C_out, H, W)


class SD3Adapter(Adapter):
    """SD3/SD3.5: joint text stream (77 CLIP + 256 T5 tokens), timestep = sigma * 1000."""

    family = "flow1000"
    text_tokens_default = 77 + 256

    def cond_shapes(self):
        return {"encoder_hidden_states": (self.text_tokens, self.config.joint_attention_dim),
                "pooled_projections": (self.config.pooled_projection_dim,)}

    def forward(self, model, x_t, t, y, cond):
        return model(x_t, encoder_hidden_states=cond["encoder_hidden_states"],
                     pooled_projections=cond["pooled_projections"], timestep=t).sample


class FluxAdapter(Adapter):
    """Flux: 2x2-packed latents, rotary ids, double then single blocks, timestep = sigma (the model
    multiplies by 1000 itself), guidance scale for guidance-distilled (dev) configs."""

    family = "flow1000"
    block_lists = ("transformer_blocks", "single_transformer_blocks")
    guidance_scale = 3.5  # the FluxPipeline defaults
    text_tokens_default = 512

    def __init__(self, model, raw_config, *, latent_size, text_tokens):
        super().__init__(model, raw_config, latent_size=latent_size, text_tokens=text_tokens)
        self.old_single_blocks = False
        singles = model.single_transformer_blocks
        if len(singles) and "encoder_hidden_states" not in inspect.signature(type(singles[0]).forward).parameters:
            # diffusers < 0.35: single blocks return [text; image] as one tensor
            self.old_single_blocks = True
            for j, block in enumerate(singles):
                singles[j] = ImageTail(block, self)

    def input_shape(self):
        # Flux configs carry no sample size: 128 (1024 px) is the pipeline's default
        side = self.latent_size or self.raw.get("sample_size") or 128
        if side % 2:
            raise DardiagError(f"Flux packs 2x2 latent patches; the latent side {side} must be even")
        return (self.config.in_channels // 4, side, side)

    def cond_shapes(self):
        return {"encoder_hidden_states": (self.text_tokens, self.config.joint_attention_dim),
                "pooled_projections": (self.config.pooled_projection_dim,)}

    def fixed_conditioning(self) -> str:
        text = "txt_ids zeros, img_ids (0, row, column) as in FluxPipeline"
        if self.config.guidance_embeds:
            text += f", guidance {self.guidance_scale:g}"
        return text

    def paths(self):
        paths = super().paths()
        if self.old_single_blocks:
            paths = [f"{p}.image" if p.startswith("single_") else p for p in paths]
        return paths

    def tokens(self, H, W):
        return (H // 2) * (W // 2)

    @staticmethod
    def pack(x):
        N, C, H, W = x.shape
        x = x.view(N, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)  # (N, H/2, W/2, C, 2, 2)
        return x.reshape(N, (H // 2) * (W // 2), C * 4)  # (N, T, 4C)

    @staticmethod
    def unpack(x, H, W):
        N, T, C4 = x.shape
        x = x.view(N, H // 2, W // 2, C4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # (N, C, H/2, 2, W/2, 2)
        return x.reshape(N, C4 // 4, H, W)  # (N, C, H, W)

    def forward(self, model, x_t, t, y, cond):
        N, C, H, W = x_t.shape
        ids = torch.zeros(H // 2, W // 2, 3, device=x_t.device)
        ids[..., 1] += torch.arange(H // 2, device=x_t.device)[:, None]
        ids[..., 2] += torch.arange(W // 2, device=x_t.device)[None, :]
        ehs = cond["encoder_hidden_states"]  # (N, L, D_text)
        guidance = None
        if model.config.guidance_embeds:
            guidance = torch.full((N,), self.guidance_scale, device=x_t.device, dtype=x_t.dtype)
        out = model(
            self.pack(x_t),  # (N, T, 4C)
            encoder_hidden_states=ehs,
            pooled_projections=cond["pooled_projections"],
            timestep=t.to(x_t.dtype) / 1000.0,  # Flux scales sigma by 1000 inside
            img_ids=ids.reshape(-1, 3),  # (T, 3)
            txt_ids=torch.zeros(ehs.shape[1], 3, device=x_t.device),  # (L, 3)
            guidance=guidance,
        ).sample  # (N, T, 4C)
        return self.unpack(out, H, W)  # (N, C, H, W)


class ImageTail(nn.Module):
    """diffusers < 0.35 Flux single blocks return [text; image] as one tensor. This wrapper sends the
    image tokens through an identity child ``image``, so that a tap on it sees them and a gradient
    hook on them is reached by backward; the returned values are unchanged."""

    def __init__(self, block: nn.Module, adapter: Adapter):
        super().__init__()
        self.block = block
        self.image = nn.Identity()
        self._adapter = [adapter]  # in a list: not registered as a submodule

    def forward(self, *args, **kwargs):
        out = self.block(*args, **kwargs)  # (N, L + T, D)
        T = self._adapter[0].image_tokens
        return torch.cat([out[:, :-T], self.image(out[:, -T:])], dim=1)  # (N, L + T, D)


ADAPTERS: dict[str, type[Adapter]] = {
    "DiTTransformer2DModel": DiTAdapter,
    "PixArtTransformer2DModel": PixArtAdapter,
    "SD3Transformer2DModel": SD3Adapter,
    "FluxTransformer2DModel": FluxAdapter,
}


#################################################################################
#                                 Loading                                       #
#################################################################################


def check_supported(name: str | None, path: Path) -> None:
    if name not in ADAPTERS:
        raise DardiagError(
            f"{path}: diffusers class {name or '(no _class_name)'} is not supported; supported: "
            f"{', '.join(ADAPTERS)} (and legacy Transformer2DModel with norm_type ada_norm_zero or "
            "ada_norm_single); profile any other nn.Module with the generic API "
            "dardiag.adapters.generic.generic_subject(model, blocks=..., call=..., family=...)"
        )


def _display_name(path: Path) -> str:
    # ".../FLUX.1-dev/transformer" -> "FLUX.1-dev"
    if path.name in ("transformer", "unet") and path.parent.name:
        return path.parent.name
    return path.name


def diffusers_subject(path, options: LoadOptions | None = None, *, device="cpu", name: str | None = None,
                      dtype: torch.dtype | None = None, seed: int = 0, **option_fields) -> Subject:
    """A Subject for a diffusers transformer folder, or a pipeline folder's denoiser.

    ``options`` (or their fields as keywords: ``family``, ``input_size``, ``text_tokens``, ...) say what
    the files cannot; ``dtype``: the weights' dtype on ``device`` (default float32; the sweep's
    ``--dtype`` autocasts); ``seed``: seed of synthetic conditioning (drawn per sample id).
    The model is called with the sweep's latents (N, C, H, W) and returns (N, C_out, H, W).
    """
    options = (options or LoadOptions()).replace(**option_fields) if option_fields else (options or LoadOptions())
    path = Path(path)
    folder, pipeline = denoiser_folder(path)
    raw, class_name = read_config(folder)
    check_supported(class_name, folder)
    files = weight_files(folder)
    model = load_diffusers_model(folder, class_name, raw, files, dtype=dtype or torch.float32, device=device)
    hashes = {f.name: sha256_file(f) for f in files}
    sha = next(iter(hashes.values())) if len(hashes) == 1 else hashlib.sha256(
        "".join(f"{k}:{v}\n" for k, v in sorted(hashes.items())).encode()).hexdigest()
    info = {"path": str(folder), "file_class_name": raw.get("_class_name"), "sha256": sha, "files": hashes}
    if pipeline:
        info["pipeline"] = str(path)
    subject = diffusers_model_subject(
        model, name=name or _display_name(folder), family=options.family, latent_size=options.input_size,
        text_tokens=options.text_tokens, seed=seed, class_name=class_name, raw_config=raw,
        checkpoint=str(folder), info=info,
    )
    subject.weights_id = sha
    return subject


def denoiser_folder(path: Path) -> tuple[Path, bool]:
    """-> (the model folder to load, whether ``path`` was a pipeline): a pipeline's denoiser is its
    ``transformer`` component (a UNet pipeline is refused by name: not a DiT)."""
    if not (path / "model_index.json").is_file() or (path / "config.json").is_file():
        return path, False
    components = pipeline_components(path)
    denoisers = [c for c in ("transformer", "unet", "prior") if c in components or (path / c / "config.json").is_file()]
    if not denoisers:
        raise DardiagError(f"{path} is a diffusers pipeline without a transformer component (it has "
                           f"{', '.join(components) or 'none'}); pass the denoiser's folder")
    return path / denoisers[0], True


def diffusers_model_subject(
    model: nn.Module,
    *,
    name: str | None = None,
    family: str | None = None,
    latent_size: int | None = None,
    text_tokens: int | None = None,
    seed: int = 0,
    class_name: str | None = None,
    raw_config: dict | None = None,
    checkpoint: str = "",
    info: dict | None = None,
) -> Subject:
    """A Subject for a diffusers transformer already in memory (e.g. from ``from_pretrained``)."""
    class_name = class_name or type(model).__name__
    if class_name not in ADAPTERS:
        raise DardiagError(
            f"diffusers class {class_name} is not supported; supported: {', '.join(ADAPTERS)}; profile any "
            "other nn.Module with dardiag.adapters.generic.generic_subject(model, blocks=..., call=..., family=...)"
        )
    adapter = ADAPTERS[class_name](model, raw_config or {}, latent_size=latent_size, text_tokens=text_tokens)
    fam = get_family(family or adapter.family)
    paths = adapter.paths()
    taps = block_taps(paths, pick=adapter.pick, pick_input=first_input)
    spec = SiteSpec(depth=len(paths), taps=taps, has_sublayers=False, routes={}, residual=True)
    shapes = adapter.cond_shapes()
    fixed = tuple(n for n in [adapter.fixed_conditioning()] if n)
    make_cond = Conditioning(shapes, seed=seed, notes=fixed) if shapes else None
    info = {
        "class_name": class_name,
        "adapter": type(adapter).__name__,
        "family": fam.name,
        "depth": len(paths),
        "block_lists": {n: len(model.get_submodule(n)) for n in adapter.block_lists},
        "input_shape": list(adapter.input_shape()),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "diffusers_version": diffusers.__version__,
        "config": json.loads(json.dumps(dict(model.config), default=str)),
        "conditioning": make_cond.describe() if make_cond else "class labels from the inputs",
        **(info or {}),
    }
    if make_cond is not None:
        make_cond.info = info
    return Subject(
        name=name or class_name,
        model=model,
        family=fam,
        spec=spec,
        routing="residual",
        input_shape=adapter.input_shape(),
        num_classes=adapter.num_classes(),
        call=adapter.call,
        checkpoint=checkpoint,
        info=info,
        make_cond=make_cond,
        editing=tap_editing(model, taps),  # ablation by hooks on the image stream of each block
    )


def supply_conditioning(subject: Subject, tensors: dict) -> None:
    """Use user-supplied conditioning (e.g. real text embeddings, one row per input sample)."""
    if not isinstance(subject.make_cond, Conditioning):
        raise DardiagError(f"{subject.name} takes no conditioning besides class labels; got {', '.join(tensors)}")
    subject.make_cond.supply(tensors)

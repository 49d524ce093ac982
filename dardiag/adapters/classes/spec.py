"""One row of the diffusers class table: what dardiag must know to drive and probe a transformer class.

An entry is data plus one short ``forward``: where the block stacks are (profiled in call order:
stack after stack, or alternating block by block), which part of a block's output is the image stream
and how its tensor is laid out, the noise process (a ``Family`` name), the conditioning the model
takes besides latents (per-sample shapes, read from its config) and how to call it. The helpers
below (token counts, 2x2 packing, rotary ids, timestep conventions, stream layouts) are shared by the
entries, so that adding a class is a few lines plus its tiny config in the tests.

Legend: N batch, C latent channels, F latent frames, H/W latent side, T image tokens, L text tokens,
D hidden size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dardiag.errors import DardiagError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Stream:
    """Where the image stream is in a block's output.

    ``index``: the element of a tuple output (None: the output is a tensor). ``part``: the output
    holds image and text tokens in one sequence, the image first ("head") or last ("tail").
    ``layout``: how the tensor holds samples and tokens (``LAYOUTS``): batch-first (N, T, D), or
    sequence-first, or with frames or patches folded into the batch. A block with a part or a layout
    other than "batch" is wrapped so that the image tokens, as (N, T, D), pass through an identity
    child the taps see."""

    index: int | None = None  # -1: the element with the image token count (guessed entries)
    part: str | None = None  # None, "head" or "tail"
    layout: str = "batch"  # a key of LAYOUTS

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown stream layout {self.layout!r}; known: {', '.join(LAYOUTS)}")
        if self.part and self.layout in ("frames", "patches"):
            raise ValueError("a folded layout holds image tokens only: no text part")

    @property
    def wrapped(self) -> bool:
        """The taps need the block wrapped: the image tokens are not the (N, T, D) output itself."""
        return self.part is not None or self.layout != "batch"

    @property
    def token_dim(self) -> int:
        """The axis of a sample's tokens, along which a text part is cut off."""
        return 0 if self.layout == "seq" else 1


LAYOUTS = {
    "batch": "(N, T, D)",
    "seq": "sequence-first (S, N, D)",  # Ernie-Image
    "frames": "frames folded into the batch (N F, H W, D)",  # Latte's spatial blocks
    "patches": "patches folded into the batch (N H W, F, D)",  # Latte's temporal blocks
}


def to_tokens(x: torch.Tensor, layout: str, T: int) -> torch.Tensor:
    """The image tokens ``x`` in ``layout`` as (N, T, D), video tokens frame-major (f, h, w) as
    :func:`patch3d` counts them, so that every layout of one stream lists the same tokens in one order."""
    if layout == "batch":
        return x
    if layout == "seq":
        return x.transpose(0, 1)  # (T, N, D) -> (N, T, D)
    per = x.shape[1]  # H W tokens of a frame, or F frames of a patch
    if T % per or x.shape[0] % (T // per):
        raise DardiagError(f"a block output of shape {list(x.shape)} does not fold {T} image tokens as "
                           f"{LAYOUTS[layout]}; the class table's stream for this class is wrong")
    N = x.shape[0] // (T // per)
    if layout == "frames":
        return x.reshape(N, T, x.shape[2])  # (N F, H W, D) -> (N, F H W, D)
    x = x.reshape(N, T // per, per, x.shape[2])  # (N, H W, F, D)
    return x.transpose(1, 2).reshape(N, T, x.shape[3])  # (N, F H W, D)


def from_tokens(z: torch.Tensor, layout: str, shape: torch.Size) -> torch.Tensor:
    """The inverse of :func:`to_tokens`: (N, T, D) back to ``layout``, as a tensor of ``shape``."""
    if layout == "seq":
        return z.transpose(0, 1)  # (N, T, D) -> (T, N, D)
    if layout in ("batch", "frames"):
        return z.reshape(shape)  # (N, F H W, D) -> (N F, H W, D)
    N, T, D = z.shape
    F = shape[1]
    z = z.reshape(N, F, T // F, D).transpose(1, 2)  # (N, H W, F, D)
    return z.reshape(shape)  # (N H W, F, D)


TENSOR = Stream()
FIRST = Stream(index=0)  # (hidden_states, encoder_hidden_states)
SECOND = Stream(index=1)  # (encoder_hidden_states, hidden_states): SD3, Flux, QwenImage, ...
HEAD = Stream(part="head")  # [image; text] in one tensor
TAIL = Stream(part="tail")  # [text; image] in one tensor


@dataclass(frozen=True)
class Stack:
    """A ModuleList of blocks (its attribute path) and where the image stream is in their outputs."""

    path: str
    stream: Stream = TENSOR


@dataclass(frozen=True)
class ClassEntry:
    """How dardiag profiles one diffusers transformer class (see the module docstring).

    ``forward(model, x, t, y, cond) -> prediction`` takes latents ``x`` (N, C, H, W), or (N, C, F, H,
    W) for ``video``, the family's native timestep ``t`` (N,), class labels ``y`` (N,) and ``cond``
    (tensors named as in ``cond``), and returns the prediction in the latents' layout.
    ``cond(config, text_tokens) -> {name: per-sample shape}`` names what the call needs besides
    latents; ``tokens(config, latent_shape) -> T`` counts the image tokens of one sample."""

    name: str
    stacks: tuple[Stack, ...]
    family: str
    forward: Callable
    cond: Callable[[dict, int], dict[str, Shape]] = lambda cfg, L: {}
    tokens: Callable[[dict, Shape], int] | None = None
    video: bool = False
    text_tokens: int = 0  # default L of synthetic text embeddings (the pipeline's max length)
    classes: Callable[[dict], int] = lambda cfg: 0  # number of class labels (0: text or unconditional)
    latent: Callable[[dict], Shape] | None = None  # default (C, [F,] H, W) of one latent
    left_out: tuple[tuple[str, str], ...] = ()  # stacks not profiled, and why
    fixed: Callable[[dict, Shape], str] = lambda cfg, shape: ""  # non-random conditioning, in words
    adapt: Callable | None = None  # adapt(model) -> {stack path: Stream}: streams that vary by version
    interleaved: bool = False  # the stacks' blocks alternate in call order (Latte: spatial 0, temporal 0, ...)
    note: str = ""  # anything a user should know about this class's profile
    # fit(config) -> {"frames"/"height"/"width"/"text": Limit}: the largest sizes the config's fixed tables
    # take, beyond the generic ones (dardiag.adapters.classes.fit); the defaults shrink to them
    fit: Callable[[dict], dict] | None = None

    def stack_paths(self) -> tuple[str, ...]:
        return tuple(s.path for s in self.stacks)


@dataclass(frozen=True)
class Limit:
    """The largest size (latent frames, rows, columns, or text tokens) a config's positional tables take,
    and the config entry that says so, in words."""

    most: int
    why: str


@dataclass(frozen=True)
class Refused:
    """A class dardiag does not profile, and why (a UNet, a VAE, an audio model, ...)."""

    name: str
    reason: str


#################################################################################
#                       Helpers the entries share                               #
#################################################################################


def cfg_get(cfg: dict, *keys, default=None):
    """The first of ``keys`` the config has (configs of one class spell a field differently over versions)."""
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return value
    return default


def patch2d(cfg: dict, shape: Shape, key: str = "patch_size") -> int:
    """Image tokens of a (C, H, W) latent with a p x p patch embedding."""
    p = cfg_get(cfg, key, default=1) or 1
    p = p[-1] if isinstance(p, (list, tuple)) else p
    return (shape[-2] // p) * (shape[-1] // p)


def patch3d(cfg: dict, shape: Shape, key: str = "patch_size", t_key: str | None = "patch_size_t") -> int:
    """Video tokens of a (C, F, H, W) latent: frames / p_t x (H / p) x (W / p)."""
    p = cfg_get(cfg, key, default=1) or 1
    if isinstance(p, (list, tuple)):
        pt, ph, pw = p
    else:
        pt, ph, pw = (cfg_get(cfg, t_key, default=1) if t_key else 1) or 1, p, p
    F, H, W = shape[-3:]
    return -(-F // pt) * (H // ph) * (W // pw)


def pack_patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, H/p * W/p, C p p): p x p patches, channels (C, p, p) as the pipelines pack them."""
    N, C, H, W = x.shape
    x = x.view(N, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # (N, H/p, W/p, C, p, p)
    return x.reshape(N, (H // p) * (W // p), C * p * p)


def unpack_patches(x: torch.Tensor, H: int, W: int, p: int) -> torch.Tensor:
    """The inverse of :func:`pack_patches`: (N, T, C p p) -> (N, C, H, W)."""
    N, T, Cpp = x.shape
    x = x.view(N, H // p, W // p, Cpp // (p * p), p, p).permute(0, 3, 1, 4, 2, 5)  # (N, C, H/p, p, W/p, p)
    return x.reshape(N, Cpp // (p * p), H, W)


def pack2x2(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H/2 * W/2, 4C): the 2x2 patch packing of Flux-style pipelines."""
    return pack_patches(x, 2)


def unpack2x2(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The inverse of :func:`pack2x2`: (N, T, 4C) -> (N, C, H, W)."""
    return unpack_patches(x, H, W, 2)


def square_latent(side: int, per_token: int = 1):
    """``latent``: (in_channels / per_token, side, side), the config's own ``sample_size`` first (the
    tests' tiny configs); ``side`` is the pipeline's default latent side, ``per_token`` 4 for configs
    that count 2x2-packed channels."""
    def shape(cfg):
        n = cfg_get(cfg, "sample_size", default=side)
        return (cfg["in_channels"] // per_token, n, n)
    return shape


def grid_ids(rows: int, cols: int, *, device, axes: int = 3, first: float = 0.0) -> torch.Tensor:
    """Rotary position ids of an image grid, (rows * cols, axes): (first, row, column) as Flux-style
    pipelines build them (axes = 3), or (row, column) (axes = 2)."""
    ids = torch.zeros(rows, cols, axes, device=device)
    ids[..., -2] += torch.arange(rows, device=device)[:, None]
    ids[..., -1] += torch.arange(cols, device=device)[None, :]
    if axes == 3:
        ids[..., 0] = first
    return ids.reshape(-1, axes)


def sides(tokens: int | None, patch, why: str) -> dict[str, Limit]:
    """A ``fit`` of at most ``tokens`` patches along the latent's rows and columns (none when None)."""
    if not tokens:
        return {}
    p = patch[-1] if isinstance(patch, (list, tuple)) else (patch or 1)
    return {"height": Limit(int(tokens) * p, why), "width": Limit(int(tokens) * p, why)}


def sigma(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Native flow1000 timesteps (sigma x 1000) as the sigma in [0, 1] some classes take."""
    return t.to(x.dtype) / 1000.0


def full(n: int, value: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((n,), value, device=x.device, dtype=x.dtype)


def text(key: str, dim_keys: tuple[str, ...]) -> Callable[[dict, int], dict[str, Shape]]:
    """A ``cond`` of one text-embedding sequence (L, D_text), D_text read from the config."""
    def shapes(cfg: dict, L: int) -> dict[str, Shape]:
        return {key: (L, int(cfg_get(cfg, *dim_keys)))}
    return shapes


def text_pooled(dim_keys: tuple[str, ...], pooled_keys: tuple[str, ...] = ("pooled_projection_dim",),
                key: str = "encoder_hidden_states", pooled: str = "pooled_projections"):
    """A ``cond`` of a text sequence (L, D_text) and a pooled embedding (D_pool)."""
    def shapes(cfg: dict, L: int) -> dict[str, Shape]:
        return {key: (L, int(cfg_get(cfg, *dim_keys))), pooled: (int(cfg_get(cfg, *pooled_keys)),)}
    return shapes


def mask(cond: dict, key: str = "encoder_hidden_states", dtype=torch.bool) -> torch.Tensor:
    """The text mask (N, L) of sequence ``cond[key]`` in the class's own ``dtype`` (1/True = a real token):
    the padding mask supplied with it (``<key>_mask``, from ``dardiag prompts``), else all-valid
    (synthetic embeddings have no padding)."""
    ehs = cond[key]  # (N, L, D_text)
    given = cond.get(f"{key}_mask")  # (N, L) bool, or None
    if given is None:
        return torch.ones(ehs.shape[:2], device=ehs.device, dtype=dtype)
    return given.to(ehs.device, dtype)

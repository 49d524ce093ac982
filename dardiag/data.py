"""Latents to train on and to profile: the bundled digits, or a user's own file.

``digits_latents`` turns scikit-learn's 8x8 handwritten digits (1,797 images, values 0..16) into
1-channel 16x16 "latents" in [-1, 1]: small enough to train a deep DiT on a laptop CPU in minutes,
real enough that a sample can be scored (``dardiag.train.score``). ``load_latents`` reads a user's
file strictly; the profiler reuses it for ``profile --inputs``.

Legend: N images, C latent channels, H/W latent side.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dardiag.checkpoints.files import sha256_file
from dardiag.errors import DardiagError

DIGITS_SIZE = 16  # 8x8 upsampled 2x: patch 2 then gives 64 tokens, the token count of a 16x16 DiT grid
DIGITS_CLASSES = 10
SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2


@lru_cache(maxsize=4)
def _digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32)) / 16.0 * 2.0 - 1.0  # (N, 8, 8) in [-1, 1]
    # bilinear without antialias is a convex combination of pixels, so the range stays [-1, 1]
    x = F.interpolate(x[:, None], size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    y = torch.from_numpy(d.target.astype(np.int64))  # (N,)
    idx = np.arange(len(y))
    # stratified so the held-out set has every class in proportion; fixed seed = the same split everywhere
    train_idx, _ = train_test_split(idx, test_size=TEST_FRACTION, stratify=d.target, random_state=seed)
    is_train = np.zeros(len(y), dtype=bool)
    is_train[train_idx] = True
    return x.contiguous(), y, is_train  # (N, 1, 16, 16), (N,), (N,)


def digits_latents(split: str = "train", seed: int = 0) -> dict[str, torch.Tensor]:
    """``{"x0": (N, 1, 16, 16) float32 in [-1, 1], "y": (N,) int64}`` for a deterministic split.

    ``train`` (80 %, 1,437 images) and ``test`` (20 %, 360 images, what ``dardiag demo`` profiles) are a
    stratified split fixed by ``seed``; ``all`` is the whole set in its original order.
    """
    if split not in SPLITS:
        raise DardiagError(f"unknown digits split {split!r}; choose one of {', '.join(SPLITS)}")
    x, y, is_train = _digits(seed)
    if split == "all":
        keep = np.ones(len(y), dtype=bool)
    else:
        keep = is_train if split == "train" else ~is_train
    keep_t = torch.from_numpy(keep)
    return {"x0": x[keep_t].clone(), "y": y[keep_t].clone()}


#################################################################################
#                               A user's own file                              #
#################################################################################


def _read(path: Path) -> dict:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        except (OSError, ValueError) as e:
            raise DardiagError(f"{path} is not a readable .npz file ({_short(e)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not a latents file"
        raise DardiagError(
            f"{path} is not a torch-saved dict of tensors readable with weights_only=True ({_short(e)})"
        ) from None
    if not isinstance(obj, dict):
        raise DardiagError(f"{path} holds a {type(obj).__name__}; expected a dict with keys x0, y, noise")
    return obj


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:160]


def load_latents(path: str | os.PathLike, *, num_classes: int | None = None) -> dict:
    """Read ``{"x0": (N, C, H, W), "y": (N,) optional, "noise": like x0, optional}`` strictly; video
    latents are (N, C, F, H, W).

    A ``"meta"`` dict of plain values (written by ``dardiag latents``) is passed through as it is.

    Accepts a ``torch.save``-d dict (loaded with ``weights_only=True``) or an ``.npz``. Returns float32
    ``x0``/``noise`` and int64 ``y`` (only the keys present). Every problem is one ``DardiagError`` line:
    missing file or key, wrong rank, shape mismatch, non-finite values, labels out of
    ``0..num_classes-1`` (when ``num_classes`` is given) or negative.
    """
    path = Path(path)
    if not path.is_file():
        raise DardiagError(f"{path}: no such latents file; pass a .pt/.npz holding x0 [N,C,H,W]")
    obj = _read(path)
    # `dardiag latents` writes what the latents are (folder, VAE, size, ...) beside them: plain values
    meta = obj.pop("meta") if isinstance(obj.get("meta"), dict) else None
    if "x0" not in obj:
        raise DardiagError(f"{path} has no 'x0' entry (found {', '.join(map(str, obj)) or 'nothing'})")
    out = {}
    for key in obj:
        if not torch.is_tensor(obj[key]):
            raise DardiagError(f"{path}: '{key}' is a {type(obj[key]).__name__}, expected a tensor/array")
    x0 = obj["x0"]
    if x0.dim() not in (4, 5):
        raise DardiagError(f"{path}: x0 must be [N, C, H, W] (images) or [N, C, F, H, W] (video), got shape "
                           f"{list(x0.shape)}")
    if x0.shape[0] == 0:
        raise DardiagError(f"{path}: x0 holds no images (shape {list(x0.shape)})")
    if not x0.is_floating_point() or not torch.isfinite(x0).all():
        raise DardiagError(f"{path}: x0 must hold finite floating-point values")
    out["x0"] = x0.float().contiguous()  # (N, C, H, W)
    n = x0.shape[0]
    if "noise" in obj:
        noise = obj["noise"]
        if tuple(noise.shape) != tuple(x0.shape):
            raise DardiagError(f"{path}: noise has shape {list(noise.shape)}, x0 has {list(x0.shape)}; they must match")
        if not noise.is_floating_point() or not torch.isfinite(noise).all():
            raise DardiagError(f"{path}: noise must hold finite floating-point values")
        out["noise"] = noise.float().contiguous()  # (N, C, H, W)
    if "y" in obj:
        y = obj["y"]
        if y.dim() != 1 or y.shape[0] != n:
            raise DardiagError(f"{path}: y must have shape [{n}] (one label per x0), got {list(y.shape)}")
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise DardiagError(f"{path}: y must hold integer class labels")
        y = y.long()
        hi = num_classes - 1 if num_classes is not None else None
        if n and (y.min() < 0 or (hi is not None and y.max() > hi)):
            allowed = f"0..{hi}" if hi is not None else "non-negative"
            raise DardiagError(f"{path}: labels must be {allowed}, got {int(y.min())}..{int(y.max())}")
        out["y"] = y  # (N,)
    for key in sorted(set(map(str, obj)) - {"x0", "y", "noise"}):
        # per-sample conditioning (encoder_hidden_states, pooled_projections, ...): the model's
        # adapter checks names and shapes; here only one row per x0 and finite values
        value = obj[key]
        if value.dim() == 0 or value.shape[0] != n or not torch.isfinite(value.float()).all():
            raise DardiagError(f"{path}: '{key}' must hold finite values, one row per x0 ([{n}, ...]); "
                               f"got shape {list(value.shape)}")
        out[key] = value.float().contiguous()
    if meta is not None:
        out["meta"] = meta
    return out


def read_prompts(path: str | os.PathLike) -> list[str]:
    """One prompt per line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DardiagError(f"{path}: not a readable UTF-8 text file of prompts ({_short(e)})") from None
    prompts = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not prompts:
        raise DardiagError(f"{path} holds no prompts; write one prompt per line")
    return prompts


def load_conditioning(path: str | os.PathLike) -> dict:
    """Read a conditioning file (``dardiag prompts`` output, or ``torch.save({name: (N, ...)})``) strictly:
    finite floating tensors, one row per prompt each, and a sequence's padding mask ``<name>_mask`` (N, L)
    as stored (integer or bool; the model's ``Conditioning`` checks it against the sequence); ``meta``
    passed through."""
    path = Path(path)
    if not path.is_file():
        raise DardiagError(f"{path}: no such conditioning file; make one with `dardiag prompts`")
    obj = _read(path)
    meta = obj.pop("meta") if isinstance(obj.get("meta"), dict) else None
    out, rows = {}, set()
    for key, value in obj.items():
        if str(key).endswith("_mask") and torch.is_tensor(value) and value.dim() == 2:
            rows.add(value.shape[0])
            out[key] = value.contiguous()  # (N, L): 1 = a real token
            continue
        if not torch.is_tensor(value) or not value.is_floating_point() or value.dim() < 2:
            raise DardiagError(f"{path}: '{key}' must be a floating tensor [N, ...], one row per prompt")
        if not torch.isfinite(value).all():
            raise DardiagError(f"{path}: '{key}' holds NaN or inf values")
        rows.add(value.shape[0])
        out[key] = value.float().contiguous()
    if not out:
        raise DardiagError(f"{path} holds no conditioning tensors")
    if len(rows) > 1:
        raise DardiagError(f"{path}: its tensors hold different numbers of rows ({sorted(rows)})")
    if meta is not None:
        out["meta"] = meta
    return out


def open_inputs(path: str | os.PathLike | None = None, *, conditioning: str | os.PathLike | None = None) -> dict:
    """Inputs as the profile engine takes them: a latents file (:func:`load_latents`), a conditioning
    file alone (``dardiag prompts``: synthetic latents beside it), or both, with ``meta`` naming the
    files (``file``, ``path``) and their content (``sha256``: what identifies the inputs on resume)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        reader = load_latents if not path.is_file() or "x0" in _read(path) else load_conditioning
        data = reader(path)
        meta = dict(data.get("meta") or {})
        meta.update(file=path.name, path=str(path), sha256=sha256_file(path))
        data["meta"] = meta
    if conditioning is not None:
        conditioning = Path(conditioning)
        cond = load_conditioning(conditioning)
        cond_meta = cond.pop("meta", None) or {}
        rows = next(iter(cond.values())).shape[0]
        if "x0" in data and rows != data["x0"].shape[0]:
            raise DardiagError(f"{conditioning} holds {rows} rows but {path} holds {data['x0'].shape[0]} latents; "
                               "they must pair one to one")
        clash = sorted(set(cond) & set(data))
        if clash:
            raise DardiagError(f"{clash[0]} is in both {path} and {conditioning}; keep it in one of them")
        meta = dict(data.get("meta") or {})
        meta.update(conditioning_file=conditioning.name, conditioning_sha256=sha256_file(conditioning),
                    conditioning_source=cond_meta.get("source"))
        if path is None:
            meta.update(file=conditioning.name, path=str(conditioning), sha256=meta["conditioning_sha256"])
        data = {**data, **cond, "meta": meta}
    return data


def check_matches_model(latents: dict, config, *, what: str = "latents") -> None:
    """Raise a one-line ``DardiagError`` if ``latents`` cannot feed a model built from ``config``."""
    x0 = latents["x0"]
    _, c, h, w = x0.shape
    if c != config.in_channels:
        raise DardiagError(
            f"{what} have {c} channel(s) but the model takes {config.in_channels}; "
            f"x0 must be [N, {config.in_channels}, {config.input_size}, {config.input_size}]"
        )
    if (h, w) != (config.input_size, config.input_size):
        raise DardiagError(
            f"{what} are {h}x{w} but the model takes {config.input_size}x{config.input_size} latents "
            f"(its position table has {config.num_tokens} tokens of patch {config.patch_size})"
        )
    y = latents.get("y")
    if y is not None and len(y) and int(y.max()) >= config.num_classes:
        raise DardiagError(
            f"{what} hold label {int(y.max())} but the model has {config.num_classes} classes "
            f"(0..{config.num_classes - 1})"
        )

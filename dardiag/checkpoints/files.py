"""Open a checkpoint file without running code from it: the first bytes say what it is.

``read_file`` sniffs the content (a Git LFS pointer, an HTML page, a .npy, safetensors under any name,
torch.save's zip, a legacy pickle) and loads with ``weights_only`` (``argparse.Namespace`` allowed, for
training checkpoints' ``args``). A pickle that needs code is refused, naming the globals it wants
(read with ``pickletools``, which runs nothing). Every failure is one ``DardiagError`` line.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import mmap
import os
import pickle
import pickletools
import re
import struct
import textwrap
import warnings
import zipfile
from pathlib import Path

import torch

from dardiag.errors import DardiagError

__all__ = ["checked_entries", "read_file", "read_with_format", "sha256_file", "short_error", "tensor_headers"]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_path(path: Path) -> None:
    if not path.exists():
        raise DardiagError(f"{path}: no such file; check the path")
    if path.is_dir() and (path / "model_index.json").exists():  # a whole diffusers pipeline
        inner = next((d for d in ("transformer", "unet") if (path / d / "config.json").exists()), None)
        where = f"its denoiser directory: {path / inner}" if inner else "the directory of its transformer"
        raise DardiagError(f"{path} is a diffusers pipeline; pass {where}")
    if path.is_dir():
        raise DardiagError(
            f"{path} is a directory; pass a checkpoint file (.pt, .pth, .safetensors) "
            "or a diffusers model directory holding config.json"
        )
    if path.stat().st_size == 0:
        raise DardiagError(f"{path} is empty (0 bytes); the file was not written completely")


def _read_head(path: Path, n: int = 1024) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as e:
        raise _unreadable(path, e) from None


def _sniff(head: bytes, size: int) -> str:
    """What the first bytes say the file is; torch's own errors for these are misleading."""
    if head.startswith(b"version https://git-lfs"):
        return "lfs"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    header_len = int.from_bytes(head[:8], "little")  # safetensors: u64 length, then a JSON header
    if len(head) > 8 and head[8:9] == b"{" and 8 + header_len <= size:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"  # torch.save's format
    if head.startswith(b"\x80"):
        return "pickle"  # the legacy torch.save format, or a plain pickle
    if _is_text(head):
        return "html" if re.search(rb"<(!doctype html|html|head|body)\b", head[:512].lower()) else "text"
    return "unknown"


def _is_text(head: bytes) -> bool:
    if any(b < 32 and b not in b"\t\n\r\f\x1b" for b in head):  # control bytes: binary
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.reason == "unexpected end of data"  # only a character cut by the sniff window
    return True


def _refuse_by_content(path: Path, kind: str, head: bytes) -> None:
    """Files that are certainly not checkpoints, whatever their name."""
    if kind == "lfs":
        raise DardiagError(f"{path} is a Git LFS pointer, not the weights; run git lfs pull (or download the file itself)")
    if kind in ("html", "text"):
        first = " ".join(head.decode("utf-8", "replace").split())[:60]
        raise DardiagError(
            f"{path} is a text/HTML file, not a checkpoint (a failed download?); it starts with {first!r}"
        )
    if kind == "npy":
        raise DardiagError(
            f"{path} is a NumPy array (.npy), not a PyTorch checkpoint; pass a state dict saved with torch.save"
        )


def read_file(path: str | os.PathLike) -> object:
    """Load a checkpoint file without running any code from it."""
    return read_with_format(Path(path))[0]


def read_with_format(path: Path, *, mapped: bool = False) -> tuple[object, str]:
    """-> (loaded object, "safetensors" | "torch"): the content decides, not the suffix. ``mapped``: a
    safetensors file mapped, not read (torch.save's zip format always is)."""
    _check_path(path)
    head = _read_head(path)
    kind = _sniff(head, path.stat().st_size)
    _refuse_by_content(path, kind, head)
    if kind == "safetensors" or (kind == "unknown" and path.suffix == ".safetensors"):
        return (mapped_safetensors(path) if mapped else _load_safetensors(path)), "safetensors"
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # the error says more
            if path.suffix == ".safetensors":  # torch >= 2.13 reads a path of that name as safetensors
                with open(path, "rb") as f:
                    return torch.load(f, map_location="cpu", weights_only=True), "torch"
            # torch.save's zip format maps the file instead of reading it: a big checkpoint's tensors
            # cost page cache, not a second copy in memory, until they are cast or moved
            return torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip"), "torch"
    except pickle.UnpicklingError as e:
        raise _unpickling_error(path, e, kind) from None
    except Exception as e:  # the weights-only unpickler also raises KeyError, IndexError, ... on garbage
        raise _unreadable(path, e) from None


def checked_entries(sd: dict, path: Path, *, headers: bool = False) -> dict:
    """Names map to dense tensors: checked before any key is parsed or any value is used (``headers``:
    meta tensors from :func:`tensor_headers` stand for entries not read yet)."""
    for k, v in sd.items():
        if not isinstance(k, str):
            raise DardiagError(
                f"{path}: state-dict key {k!r} is of type {type(k).__name__}; keys must be parameter names (str)"
            )
        if not torch.is_tensor(v):
            raise DardiagError(f"{path}: {k} holds a {type(v).__name__}, not a tensor; a state dict maps names to tensors")
        if v.layout != torch.strided:
            raise DardiagError(f"{path}: {k} is a {v.layout} tensor; dardiag reads dense tensors only")
        if v.is_meta and not headers:  # saved from a model built on the meta device: shapes without values
            raise DardiagError(f"{path}: {k} is a meta tensor (no values were saved); re-save the real weights")
    return sd


def tensor_headers(path: str | os.PathLike) -> dict:
    """Names -> tensors holding each entry's shape and dtype, cheaply: a safetensors file's header only
    (meta tensors, nothing read), else the file mapped (torch.save's zip) or read."""
    path = Path(path)
    _check_path(path)
    head = _read_head(path)
    kind = _sniff(head, path.stat().st_size)
    _refuse_by_content(path, kind, head)
    if kind != "safetensors" and not (kind == "unknown" and path.suffix == ".safetensors"):
        obj = read_with_format(path)[0]
        if not isinstance(obj, dict):
            raise DardiagError(f"{path} holds a {type(obj).__name__}, not a state dict of weights")
        return checked_entries(obj, path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            out = {}
            for key in f.keys():
                part = f.get_slice(key)
                dtype = _SAFETENSORS_DTYPES.get(part.get_dtype())
                if dtype is None:
                    raise DardiagError(f"{path}: {key} has dtype {part.get_dtype()}, which torch cannot hold")
                out[key] = torch.empty(part.get_shape(), dtype=dtype, device="meta")
            return out
    except DardiagError:
        raise
    except Exception as e:  # safetensors raises its own error types
        raise DardiagError(f"{path} is not a readable safetensors file ({short_error(e)})") from None


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def mapped_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as views of the file mapped in memory (copy-on-write: never
    written back); nothing is read until a tensor's pages are touched."""
    out = {}
    try:  # the format: 8 bytes of header length, the JSON header, then every tensor's bytes
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
            if dtype is None:
                raise DardiagError(f"{path}: {key} has dtype {entry.get('dtype')}, which torch cannot hold")
            a, b = entry["data_offsets"]
            count = (b - a) // torch.empty((), dtype=dtype).element_size()
            flat = torch.frombuffer(data, dtype=dtype, count=count, offset=8 + size + a) if count else torch.empty(
                0, dtype=dtype)
            out[key] = flat.view(entry["shape"])
    except DardiagError:
        raise
    except Exception as e:  # a truncated or hostile file: a short header, offsets outside it, wrong shapes
        raise DardiagError(f"{path} is not a readable safetensors file ({short_error(e)})") from None
    return out


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise DardiagError(f"{path} is not a readable safetensors file ({short_error(e)})") from None


def _unreadable(path: Path, e: Exception) -> DardiagError:
    if isinstance(e, PermissionError):
        return DardiagError(f"cannot read {path}: permission denied; check the file's permissions")
    if isinstance(e, OSError):  # the disk or the file system, not the file's content
        return DardiagError(f"cannot read {path}: {e.strerror or short_error(e)}")
    return DardiagError(
        f"{path} is truncated or not a PyTorch checkpoint ({short_error(e)}); re-download or re-save it"
    )


def _unpickling_error(path: Path, e: Exception, kind: str) -> DardiagError:
    """A pickle that needs code (name what it needs) or one that is damaged."""
    text = str(e)
    names = _pickle_globals(path, kind) or re.findall(r"GLOBAL (\S+)", text)
    if not names and not re.search(r"Trying to call reduce|Can only (build|create)|must be imported", text):
        return _unreadable(path, e)
    needs = ", ".join(dict.fromkeys(names)) or short_error(e)
    return DardiagError(
        f"{path} needs arbitrary code to unpickle ({needs}); refused, nothing in it ran. If you trust its "
        "source, load it once with torch.load(..., weights_only=False) and re-save the weights alone: "
        "torch.save(model.state_dict(), ...) or as .safetensors"
    )


SAFE_PICKLE_GLOBALS = ("torch.", "collections.OrderedDict", "argparse.Namespace")


def _pickle_bytes(path: Path, kind: str, limit: int = 1 << 24) -> bytes:
    """The pickle stream: the file itself, or ``data.pkl`` inside torch.save's zip."""
    try:
        if kind != "zip":
            with open(path, "rb") as f:
                return f.read(limit)
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            return z.open(name).read(limit) if name else b""
    except Exception:  # unreadable: torch's own message is all there is
        return b""


def _pickle_globals(path: Path, kind: str) -> list[str]:
    """The non-torch globals a pickle refers to, read with ``pickletools`` (which runs nothing): torch
    names only the first it refuses, and none at all when it stops at an opcode first."""
    names, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(_pickle_bytes(path, kind))):
            if op.name == "GLOBAL":
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # damaged: names read from garbage would only mislead
        return []
    return [n for n in names if not n.startswith(SAFE_PICKLE_GLOBALS)]


def short_error(e: Exception) -> str:
    """torch's unpickling messages are paragraphs: keep the reason, whole words, one line."""
    text = f"{type(e).__name__} {e}" if isinstance(e, LookupError) else str(e)  # KeyError: just the key
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = re.split(r"Check the documentation|This is an internal", text, maxsplit=1)[0]
    return textwrap.shorten(" ".join(text.split()) or type(e).__name__, 160, placeholder=" ...")


"""diffusers transformers as Subjects: any class of the table (``dardiag.adapters.classes``), from a
model folder, a pipeline folder, a single original file, or a model in memory.

One adapter serves every class: the class's ``ClassEntry`` says where the block stacks are, which part
of a block's output is the image stream, the noise process, the conditioning and the call. An unknown
transformer class gets a guessed entry (``dardiag.adapters.classes.guess``), said on the first line.
Conditioning the user does not supply (text embeddings, pooled projections) is synthesised per sample
from a seed and the sample id, and the Subject's ``info["conditioning"]`` says so.

Probed states (diagnostics.md §2): ``z_0`` is the image hidden state entering the first block, ``z_k``
the image stream after block k of all stacks in call order (double-stream blocks, then single ones;
Latte's spatial and temporal blocks alternately), always as (N, T, D) with one token order.

Legend: N batch, C latent channels, F frames, H/W latent side, T image tokens, L text tokens, D width.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import diffusers
import torch
from torch import nn

from dardiag.adapters.classes import TABLE, ClassEntry, Stream, fit, refusal
from dardiag.adapters.classes.guess import guess_entry
from dardiag.adapters.classes.spec import LAYOUTS, Limit, cfg_get, patch2d
from dardiag.adapters.conditioning import Conditioning
from dardiag.adapters.failures import model_frame, optional_import
from dardiag.adapters.generic import first_input, with_first_input
from dardiag.adapters.image_stream import entry_streams, stream_blocks, through
from dardiag.adapters.options import LoadOptions
from dardiag.adapters.routed.folder import attach_routing, routed_folder
from dardiag.adapters.routed.graft import is_routed, routed_call, routed_site_spec, router_of, token_counter
from dardiag.checkpoints.routing_files import ROUTING_JSON, ROUTING_WEIGHTS
from dardiag.checkpoints.diffusers_dir import (
    build_on_meta, check_weights, load_diffusers_model, pipeline_components, read_config, weight_files,
)
from dardiag.checkpoints.single_file import is_single_file, single_file_model
from dardiag.checkpoints.files import checked_entries, read_with_format, sha256_file
from dardiag.checkpoints.sharded import renamed, shard_from_files, tensor_names
from dardiag.errors import DardiagError
from dardiag.families import get_family
from dardiag.hooks.recorder import Tap
from dardiag.hooks.edits import tap_editing
from dardiag.subject import SiteSpec, Subject


#################################################################################
#                     One adapter, driven by the class table                    #
#################################################################################


class ImagePart(nn.Module):
    """A block whose output is not the image stream as (N, T, D): text tokens in the same sequence, a
    sequence-first or a folded layout. The image tokens are sent, as (N, T, D), through an identity
    child ``image``, so that a tap on it sees them and a gradient hook on them is reached by backward;
    the returned values are unchanged. The first block (``entry``) sends the image tokens of its input
    through ``image_in`` as well: that is z_0."""

    wraps_block = True  # image_stream.innermost looks through it

    def __init__(self, block: nn.Module, stream: Stream, adapter: "TableAdapter", *, entry: bool = False):
        super().__init__()
        self.block, self.stream = block, stream
        self.image = nn.Identity()
        self.image_in = nn.Identity() if entry else None
        self._adapter = [adapter]  # in a list: not registered as a submodule

    def forward(self, *args, **kwargs):
        if self.image_in is not None:
            args, kwargs = with_first_input(args, kwargs, lambda x: self._through(x, self.image_in))
        out = self.block(*args, **kwargs)
        parts = list(out) if isinstance(out, tuple) else [out]
        i = self.stream.index or 0
        parts[i] = self._through(parts[i], self.image)
        return tuple(parts) if isinstance(out, tuple) else parts[0]

    def _through(self, x: torch.Tensor, identity: nn.Module) -> torch.Tensor:
        """``x`` in the stream's layout, its image tokens sent through ``identity`` as (N, T, D)."""
        return through(x, self.stream, self._adapter[0].image_tokens, identity)


class TableAdapter:
    """Drives one diffusers model as its ``ClassEntry`` says: input shape, block paths, stream picks,
    conditioning shapes and the call."""

    def __init__(self, model: nn.Module, entry: ClassEntry, raw_config: dict, *, latent_size: int | None = None,
                 frames: int | None = None, text_tokens: int | None = None):
        self.model, self.entry = model, entry
        self.cfg = {**raw_config, **dict(model.config)}
        self.image_tokens = 0  # T, set by every call (ImagePart and the stream check read it)
        self.limits: dict[str, Limit] = {}  # what the config's tables allow (classes.fit)
        self.sized: list[str] = []  # defaults shrunk to those limits, in words
        self.shape = self._input_shape(latent_size, frames)
        self.text_tokens = self._text_tokens(text_tokens)
        self.streams = entry_streams(model, entry)
        self.paths, self.picks = self._wrap_blocks()

    # --- shapes -----------------------------------------------------------------
    def _input_shape(self, latent_size, frames) -> tuple[int, ...]:
        """(C, [F,] H, W): the pipeline's default (or the config's own sample size), shrunk to what the
        config's positional tables take (``classes.fit``); a flag names a size, checked against them."""
        cfg, name = self.cfg, self.entry.name
        try:
            if self.entry.latent is not None:
                shape = list(self.entry.latent(cfg))
            else:
                side = cfg.get("sample_size") or 32
                side = side[-1] if isinstance(side, (list, tuple)) else side
                shape = [cfg["in_channels"], *([cfg.get("num_frames") or 9] if self.entry.video else []), side, side]
        except KeyError as e:  # a config without the fields a latent shape is read from (an audio or text model)
            raise DardiagError(f"{name}: its config has no {e.args[0]}, from which dardiag reads the latent shape; "
                               "dardiag profiles transformers over image or video latents") from None
        if frames is not None and not self.entry.video:
            raise DardiagError(f"--frames: {name} is an image model (latents N, C, H, W)")
        unit = self._patch_side()
        self.limits = fit.limits(self.entry, cfg, (self._patch_time() if self.entry.video else 1, unit))
        flags = {"frames": ("--frames", frames), "height": ("--input-size", latent_size),
                 "width": ("--input-size", latent_size)}
        axes = (("frames",) if self.entry.video else ()) + ("height", "width")  # the last axes of (C, [F,] H, W)
        for i, axis in zip(range(len(shape) - len(axes), len(shape)), axes):
            (flag, value), limit = flags[axis], self.limits.get(axis)
            words = "frames" if axis == "frames" else f"latent {axis}"
            if value is not None:
                if limit is not None and value > limit.most:
                    raise DardiagError(f"{flag} {value}: {name}'s config takes at most {limit.most} {words} "
                                       f"({limit.why}); pass {flag} {limit.most} or less")
                shape[i] = value
            elif limit is not None and shape[i] > limit.most:
                step = 1 if axis == "frames" else unit
                was, shape[i] = shape[i], max(step, limit.most // step * step)
                self.sized.append(f"{words} {shape[i]}, not the default {was} ({limit.why})")
            elif axis != "frames" and shape[i] % unit:  # a default side the patch does not divide
                was, shape[i] = shape[i], max(unit, shape[i] // unit * unit)
                self.sized.append(f"{words} {shape[i]}, not the default {was} (a multiple of the patch {unit})")
        if shape[-1] % unit or shape[-2] % unit:
            raise DardiagError(
                f"--input-size {shape[-1]}: the latent side must be a positive multiple of the model's "
                f"patch size {unit}"
            )
        return tuple(int(s) for s in shape)

    def _text_tokens(self, given: int | None) -> int:
        """Length of synthetic text embeddings: the flag, else the pipeline's, shrunk to the config's limit."""
        limit, default = self.limits.get("text"), self.entry.text_tokens
        if given is not None:
            if limit is not None and given > limit.most:
                raise DardiagError(f"--text-tokens {given}: {self.entry.name}'s config takes at most {limit.most} "
                                   f"text tokens ({limit.why}); pass --text-tokens {limit.most} or less")
            return given
        if limit is not None and default > limit.most:
            self.sized.append(f"{limit.most} text tokens, not the default {default} ({limit.why})")
            return limit.most
        return default

    def _patch_side(self) -> int:
        """Latent pixels per token side: the patch size, x2 for 2x2-packed (Flux-style) latents."""
        side = 256
        T = self.tokens((1, *([1] if self.entry.video else []), side, side))
        return max(1, round((side * side / max(T, 1)) ** 0.5))

    def _patch_time(self) -> int:
        """Latent frames per token along time (the temporal patch) of a video model."""
        side, frames = self._patch_side(), 64
        one, many = self.tokens((1, 1, side, side)), self.tokens((1, frames, side, side))
        return max(1, round(frames * one / max(many, 1)))

    def tokens(self, shape) -> int:
        """Image tokens T of one sample of this latent shape (C, [F,] H, W)."""
        count = self.entry.tokens or patch2d
        return int(count(self.cfg, tuple(shape)))

    # --- blocks -----------------------------------------------------------------
    def _wrap_blocks(self) -> tuple[list[str], dict[str, object]]:
        paths, picks = [], {}
        for k, (path, stream) in enumerate(stream_blocks(self.model, self.entry, self.streams)):
            if not stream.wrapped:
                paths.append(path)
                picks[path] = self._pick(stream)
                continue
            parent, _, index = path.rpartition(".")
            holder = self.model.get_submodule(parent)
            if not isinstance(holder[int(index)], ImagePart):
                holder[int(index)] = ImagePart(holder[int(index)], stream, self, entry=k == 0)
            else:  # wrapped by an earlier adapter (a model profiled again, a training run's EMA copy): T from this one
                holder[int(index)]._adapter[0] = self
            paths.append(f"{path}.image")
            picks[f"{path}.image"] = self._pick(Stream())  # the identity child returns a tensor
        return paths, picks

    def _pick(self, stream: Stream):
        def pick(output) -> torch.Tensor:
            if stream.index == -1:  # a guessed entry: the element with the image token count
                x = _by_tokens(output, self.image_tokens)
            elif stream.index is not None:
                x = output[stream.index]
            else:
                x = output if torch.is_tensor(output) else output[0]
            if x.dim() == 3 and self.image_tokens and x.shape[1] != self.image_tokens:
                raise DardiagError(
                    f"{self.entry.name}: the hooked block output has {x.shape[1]} tokens, not the {self.image_tokens} "
                    "image tokens; the class table's stream for this class is wrong (please report it) — "
                    "profile it with dardiag.adapters.generic.generic_subject(pick=...) meanwhile"
                )
            return x
        return pick

    def taps(self) -> tuple[Tap, ...]:
        first = self.paths[0]
        if first.endswith(".image"):  # a wrapped first block: the image tokens of its input, (N, T, D)
            z0 = Tap("z_0", f"{first.rpartition('.')[0]}.image_in")
        else:  # the first block's input is the image stream itself (N, T, D)
            z0 = Tap("z_0", first, pick=first_input, pre=True)
        return (z0, *(Tap(f"z_{k}", p, pick=self.picks[p]) for k, p in enumerate(self.paths, start=1)))

    # --- conditioning and the call ----------------------------------------------
    def stream_tokens(self) -> int:
        """Tokens a block carries per sample: the image's, plus the text's where text runs through the
        blocks too (a joint sequence or a second stream), which the cost line's memory counts."""
        joint = any(s.part is not None or s.index is not None for s in self.streams.values())
        return self.tokens(self.shape) + ((self.text_tokens or 0) if joint else 0)

    def cond_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.entry.cond(self.cfg, self.text_tokens)

    def fixed_conditioning(self) -> str:
        return self.entry.fixed(self.cfg, self.shape)

    def call(self, model, x_t, t_native, y, cond):
        """The Subject's call: conditioning to the model's device and dtype, then the class's forward."""
        dtype = next(model.parameters()).dtype
        cond = _Reads({k: v.to(x_t.device, dtype if v.is_floating_point() else v.dtype)  # masks keep bool
                       for k, v in (cond or {}).items()})
        self.image_tokens = self.tokens(x_t.shape[1:])
        try:
            out = self.entry.forward(model, x_t.to(dtype), t_native, y, cond)
        except DardiagError:
            raise
        except Exception as e:  # noqa: BLE001 - a failure inside the model's own code is said in one line
            where = model_frame(e.__traceback__)
            if where is None:  # raised by dardiag's own code: a bug, with its traceback
                raise
            raise DardiagError(self._failed(e, where, x_t, cond)) from None
        unread = [k for k in cond if k.endswith("_mask") and k not in cond.read]
        if unread:  # a mask the call ignores would be reported as used while the padding is attended
            raise DardiagError(f"inputs hold {unread[0]}, but dardiag calls {self.entry.name} without a text mask "
                               f"(its pipeline passes none); drop {unread[0]} from the inputs")
        return out.sample if hasattr(out, "sample") else out  # (N, C_out, [F,] H, W)

    def _failed(self, e: Exception, where: str, x_t: torch.Tensor, cond: dict) -> str:
        """One line for an exception from inside the model: the class, the shapes dardiag passed, the
        model's own message, and the flag that changes what it was given."""
        passed = ", ".join([f"latents {list(x_t.shape)}"] + [f"{k} {list(v.shape)}" for k, v in cond.items()])
        message = " ".join(str(e).split())[:240] or "(no message)"
        said = f"{self.entry.name} failed in its own forward ({where}) on what dardiag passed it ({passed}): " \
               f"{type(e).__name__}: {message}"
        if isinstance(e, _OUT_OF_MEMORY):
            return f"{said}; pass a smaller --batch-size (or --input-size, --frames)"
        if isinstance(e, NameError) and e.name:  # diffusers imports some names only when a package is installed
            package = optional_import(where, e.name)
            return (f"{said}; the model's code imports {e.name!r} only when "
                    f"{package or 'an optional package'} is installed: install it (pip install {package or '...'})")
        sizes = ", ".join([f"--input-size {x_t.shape[-1]}"] + ([f"--frames {x_t.shape[2]}"] if self.entry.video else [])
                          + ([f"--text-tokens {self.text_tokens}"] if self.text_tokens else []))
        function = where.split(" ", 1)[0]
        if "rot" in function or "rope" in function:  # a rotary helper: sizes past its table, or a head it cannot split
            head = cfg_get(self.cfg, "attention_head_dim", "head_dim")
            return (f"{said}; its rotary embedding rejects these sizes ({sizes}): a smaller one may fit, but if "
                    f"none does, its head dimension{f' {head}' if head else ''} is too small for its rotary "
                    "helper, which no flag changes")
        return (f"{said}; the sizes come from {sizes}: change the one the message points at (if every size "
                "fails, this config does not fit its pipeline's call: please report it)")

    def plan(self) -> dict:
        """What will be profiled, in words and numbers (``dardiag inspect`` prints it)."""
        stacks = []
        for s in self.entry.stacks:
            stream = self.streams[s.path]
            where = ("tensor" if stream.index is None else "by token count" if stream.index == -1
                     else f"output[{stream.index}]")
            if stream.layout != "batch":
                where += f", {LAYOUTS[stream.layout]} read as (N, T, D)"
            if stream.part:  # one sequence of image and other tokens (text, history, an anchor frame)
                which = "first" if stream.part == "head" else "last"
                where += f", image = its {which} {self.tokens(self.shape)} tokens"
            stacks.append({"path": s.path, "blocks": len(self.model.get_submodule(s.path)), "stream": where})
        order = "alternating, one block of each stack in turn" if self.entry.interleaved else "stack after stack"
        return {"stacks": stacks, "order": order, "left_out": dict(self.entry.left_out), "note": self.entry.note,
                "sizes": "; ".join(self.sized)}


def _first_lines(plan: dict) -> list[str]:
    """What the profile says before it starts (the engine's report): every block list not profiled, and
    sizes shrunk to the config."""
    lines = []
    if plan["left_out"]:
        lines.append("left out " + "; ".join(f"{path} ({why})" for path, why in plan["left_out"].items()))
    if plan["sizes"]:
        lines.append(f"sizes from its config: {plan['sizes']}")
    return lines


class _Reads(dict):
    """The conditioning an entry's forward sees, noting which keys it reads with ``get`` (``spec.mask`` does)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
def _by_tokens(output, T: int) -> torch.Tensor:
    tensors = [o for o in (output if isinstance(output, (tuple, list)) else [output]) if torch.is_tensor(o)]
    hits = [o for o in tensors if o.dim() == 3 and o.shape[1] == T]
    if len(hits) == 1 or (hits and len(tensors) == 1):
        return hits[0]
    raise DardiagError(
        f"cannot tell the image stream in a block output of shapes {[list(o.shape) for o in tensors]} "
        f"({T} image tokens); profile this class with dardiag.adapters.generic.generic_subject(pick=...)"
    )


#################################################################################
#                                 Subjects                                      #
#################################################################################


def entry_for(class_name: str | None, model: nn.Module | None = None, *, where: str = "",
              blocks: tuple[str, ...] | None = None) -> tuple[ClassEntry, str | None]:
    """-> (the table entry, or a guessed one for an unknown transformer class; the guess in words).
    A class that is not a DiT is refused by name."""
    prefix = f"{where}: " if where else ""
    name = class_name or "(no _class_name)"
    reason = refusal(name)
    if reason:
        raise DardiagError(f"{prefix}{name} is {reason}; dardiag profiles diffusion transformers")
    if name in TABLE and not blocks:
        return TABLE[name], None
    if model is None:
        raise DardiagError(f"{prefix}diffusers class {name} is not in dardiag's table")
    return guess_entry(model, name, base=TABLE.get(name), blocks=blocks)


def check_supported(name: str | None, path: Path) -> None:
    """Refuse a class that is not a DiT before any weight is read (unknown classes are guessed later)."""
    reason = refusal(name or "")
    if reason:
        raise DardiagError(f"{path}: {name} is {reason}; dardiag profiles diffusion transformers")
    if name is None:
        raise DardiagError(f"{path}/config.json has no _class_name; is this a diffusers model folder?")
    if not hasattr(diffusers, name):
        raise DardiagError(
            f"{path}: diffusers {diffusers.__version__} has no class {name}; upgrade diffusers "
            "(pip install -U diffusers) or profile the model with dardiag.adapters.generic.generic_subject"
        )


def _display_name(path: Path) -> str:
    # ".../FLUX.1-dev/transformer" -> "FLUX.1-dev"
    if path.name in ("transformer", "unet", "prior") and path.parent.name:
        return path.parent.name
    return path.stem if path.is_file() else path.name


def diffusers_subject(path, options: LoadOptions | None = None, *, device="cpu", name: str | None = None,
                      dtype: torch.dtype | None = None, seed: int = 0, weights: bool = True,
                      **option_fields) -> Subject:
    """A Subject for a diffusers transformer folder, a pipeline folder's denoiser, or a single original
    file (``.safetensors`` as released) of a class diffusers can convert.

    ``options`` (or their fields as keywords: ``family``, ``input_size``, ``frames``, ``text_tokens``,
    ``blocks``) say what the files cannot; ``dtype``: the weights' dtype on ``device`` (default float32;
    the sweep's ``--dtype`` autocasts); ``seed``: seed of synthetic conditioning (drawn per sample id).
    ``weights=False`` (a model folder or pipeline): the plan only, for ``dardiag inspect``: the model is
    built on the meta device and the files' headers are checked, no weight is read or hashed.
    ``options.shard`` (a model folder or pipeline, under torchrun): built on the meta device, sharded over
    the processes, each reading only its rows (``dardiag.checkpoints.sharded``).
    """
    options = (options or LoadOptions()).replace(**option_fields) if option_fields else (options or LoadOptions())
    path = Path(path)
    dtype = dtype or torch.float32
    if path.is_file():
        if options.shard:
            raise DardiagError(f"{path}: --shard reads diffusers model folders (their shards, row by row); convert "
                               "the single file to a folder with save_pretrained, or profile it without --shard")
        model, raw, class_name, files = single_file_model(path, config=options.config, dtype=dtype, device=device)
        folder, pipeline = path, False
    else:
        folder, pipeline = denoiser_folder(path)
        raw, class_name = read_config(folder)
        check_supported(class_name, folder)
        files = weight_files(folder)
        if weights and options.shard:  # the weights come after the Subject: its blocks are the units
            model = build_on_meta(folder, class_name, raw)
            check_weights(folder, class_name, model, files)
            built = tensor_names(model)
        elif weights:
            model = load_diffusers_model(folder, class_name, raw, files, dtype=dtype, device=device)
        else:  # the plan only: headers checked against a meta-device model, no weight read or hashed
            model = build_on_meta(folder, class_name, raw)
            check_weights(folder, class_name, model, files)
    routing = None if path.is_file() else routed_folder(folder)
    if routing is not None:  # written by dardiag to-dar: the routing is grafted back, its files hashed too
        files = model_files(folder)
        attach_routing(folder, model, class_name, routing, weights=weights,
                       count_tokens=token_counter(model, entry_for(class_name, model, where=str(folder))[0], raw))
    sha = None
    if weights or path.is_file():
        sha, listed = files_sha256(files)
    else:
        listed = {f.name: f"{f.stat().st_size / 2**20:.1f} MiB" for f in files}
    info = {"path": str(folder), "file_class_name": raw.get("_class_name"), "sha256": sha, "files": listed}
    if pipeline:
        info["pipeline"] = str(path)
    subject = diffusers_model_subject(
        model, name=name or _display_name(folder), options=options, seed=seed, class_name=class_name,
        raw_config=raw, checkpoint=str(folder), info=info,
    )
    if weights and options.shard:
        sources = {k: v for f in files for k, v in checked_entries(read_with_format(f, mapped=True)[0], f).items()}
        shard_from_files(model, subject.blocks, sources, dtype=dtype, device=device, name=subject.name,
                         rename=renamed(model, built))
    subject.weights_id = sha
    return subject


def files_sha256(files: list[Path]) -> tuple[str, dict[str, str]]:
    """(one sha256 for the model's files, each file's): the file's own for one file, else a hash of the list."""
    hashes = {f.name: sha256_file(f) for f in files}
    sha = next(iter(hashes.values())) if len(hashes) == 1 else hashlib.sha256(
        "".join(f"{k}:{v}\n" for k, v in sorted(hashes.items())).encode()).hexdigest()
    return sha, hashes


def model_files(folder: Path) -> list[Path]:
    """What a diffusers model folder's function is read from: its weights, and a routed folder's routing files."""
    files = weight_files(folder)
    return [*files, folder / ROUTING_JSON, folder / ROUTING_WEIGHTS] if routed_folder(folder) else files


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
    options: LoadOptions | None = None,
    seed: int = 0,
    class_name: str | None = None,
    raw_config: dict | None = None,
    checkpoint: str = "",
    info: dict | None = None,
    **option_fields,
) -> Subject:
    """A Subject for a diffusers transformer already in memory (e.g. from ``from_pretrained``).
    ``options`` or their fields as keywords (``family``, ``input_size``/``latent_size``, ``frames``,
    ``text_tokens``, ``blocks``) as for :func:`diffusers_subject`."""
    if "latent_size" in option_fields:  # the name this function took before LoadOptions
        option_fields["input_size"] = option_fields.pop("latent_size")
    options = (options or LoadOptions()).replace(**{k: v for k, v in option_fields.items() if v is not None})
    class_name = class_name or getattr(type(model), "_base", type(model)).__name__  # a routed model: its source class
    entry, guess = entry_for(class_name, model, blocks=options.blocks)
    if guess:
        warnings.warn(guess, stacklevel=2)
    adapter = TableAdapter(model, entry, raw_config or {}, latent_size=options.input_size, frames=options.frames,
                           text_tokens=options.text_tokens)
    fam = get_family(options.family or entry.family)
    spec = SiteSpec(depth=len(adapter.paths), taps=adapter.taps(), has_sublayers=False, routes={}, residual=True)
    routing, call, editing = "residual", adapter.call, tap_editing(model, spec.taps)
    if is_routed(model):  # DAR routing grafted on (dardiag to-dar): its own sites, weights, no block editing
        spec, routing, call, editing = routed_site_spec(model), router_of(model).spec.name, \
            routed_call(adapter.call, adapter.tokens), None
        info = {**(info or {}), "routing": router_of(model).spec.to_dict()}
    shapes = adapter.cond_shapes()
    fixed = tuple(n for n in [adapter.fixed_conditioning()] if n)
    make_cond = Conditioning(shapes, seed=seed, notes=fixed) if shapes else None
    plan = adapter.plan()
    info = {
        "class_name": class_name,
        "adapter": "guessed" if guess else "table",
        "family": fam.name,
        "depth": len(adapter.paths),
        "block_lists": {s["path"]: s["blocks"] for s in plan["stacks"]},
        "plan": plan,
        "input_shape": list(adapter.shape),
        "image_tokens": adapter.tokens(adapter.shape),
        "first_lines": _first_lines(plan),
        "stream_tokens": adapter.stream_tokens(),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "diffusers_version": diffusers.__version__,
        "config": json.loads(json.dumps(dict(model.config), default=str)),
        "conditioning": make_cond.describe() if make_cond else (
            "class labels from the inputs" if entry.classes(adapter.cfg) else "none (unconditional)"),
        **({"guess": guess} if guess else {}),
        **(info or {}),
    }
    if make_cond is not None:
        make_cond.info = info
    subject = Subject(
        name=name or class_name,
        model=model,
        family=fam,
        spec=spec,
        routing=routing,
        input_shape=adapter.shape,
        num_classes=entry.classes(adapter.cfg),
        call=call,
        checkpoint=checkpoint,
        info=info,
        make_cond=make_cond,
        editing=editing,  # ablation and caching by hooks on the image stream of each block
        blocks=tuple(p.removesuffix(".image") for p in adapter.paths),  # a wrapped block: its ImagePart
    )

    def resize(shape: tuple[int, ...]) -> None:  # a pipeline's sizes: the latents it draws
        adapter.shape = subject.input_shape = tuple(int(v) for v in shape)
        info.update(input_shape=list(adapter.shape), image_tokens=adapter.tokens(adapter.shape),
                    stream_tokens=adapter.stream_tokens())

    subject.resize = resize
    return subject


__all__ = ["diffusers_subject", "diffusers_model_subject", "is_single_file", "supply_conditioning", "TableAdapter"]


def supply_conditioning(subject: Subject, tensors: dict) -> None:
    """Use user-supplied conditioning (e.g. real text embeddings, one row per input sample)."""
    if not isinstance(subject.make_cond, Conditioning):
        raise DardiagError(f"{subject.name} takes no conditioning besides class labels; got {', '.join(tensors)}")
    subject.make_cond.supply(tensors)

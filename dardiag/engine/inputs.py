"""The fixed (x0, y, noise) set every noise level of a run reuses, and how it is cut into minibatches.

Symptoms are measured on (x0, noise) pairs, and x0 decides what they mean at low noise levels
(diagnostics.md section 10). The inputs are one of:

* ``"image latents"``: a file written by ``dardiag latents`` (real images through the model's VAE);
* ``"file"``: any other latents file (``x0``, optional ``y``, ``noise``, conditioning);
* ``"generated"``: x0 drawn by the model itself (``inputs="generated"``): by dardiag's own sampler (its
  DiT/SiT/REPA), or by a diffusers model's pipeline, with that pipeline's conditioning for the same prompts;
* ``"in memory"``: a dict (a ``"meta": {"source": ...}`` entry names it, as ``held_out_digits`` does);
* ``"synthetic"``: none given: seeded standard-normal latents, which are not images.

The engine opens no file: a latents file arrives as the dict its opener read (``dardiag.data.open_inputs``),
whose ``meta`` says which file it was (``file``, ``sha256``).

``Inputs.kind`` and ``Inputs.label`` (short, a column of the table) say which; ``Inputs.source`` is
the full account the run's metadata compares on resume. Generated inputs are drawn in chunks
(:class:`Drawing`), by the sweep's generate unit (progress, stopping, kept in OUT) or, in memory, at once.

Legend: N images, C channels, H/W latent side.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import torch

from dardiag.errors import DardiagError
from dardiag.metrics.cka import row_blocks
from dardiag.subject import Subject

SYNTHETIC_SAMPLES = 64
GENERATED = "generated"  # inputs="generated": x0 drawn by the model itself
GENERATE_CHUNK = 64  # images sampled per batch: a fixed size, so a seed gives the same images at any --batch-size
PIPELINE_HINT = ("for what a diffusers model generates: dardiag profile PIPELINE_DIR --inputs generated --prompts "
                 "PROMPTS.txt (the folder with model_index.json, or --pipeline PIPELINE_DIR beside a transformer folder)")
SYNTHETIC_NOTICE = ("synthetic inputs: standard-normal latents are not images, so what they show near noise "
                    "level 0 says little about the model; encode real images with `dardiag latents IMAGES --vae "
                    "VAE --out latents.pt` and pass --inputs latents.pt, or pass --inputs generated")


@dataclass
class Drawing:
    """Generated inputs, drawn chunk by chunk: ``draw(sl, on_step=None)`` -> ``{"x0": (n, ...),
    <conditioning>: (n, ...)}`` for the samples of slice ``sl`` (deterministic: a chunk drawn again is the
    same), calling ``on_step()`` ``steps`` times (progress); ``use(cond)`` hands the whole conditioning to
    the subject once drawn."""

    chunks: list[slice]
    draw: Callable[..., dict[str, torch.Tensor]]
    steps: int = 1
    use: Callable[[dict], None] | None = None
    meta: dict = field(default_factory=dict)  # what a file of these inputs says about them


class Inputs:
    """The fixed (x0, y, noise) set every level reuses; ``kind``, ``label`` and ``source`` say what it is.

    Generated inputs are drawn lazily, at the first unit that needs them: a run read back (or
    continued past its last level) never samples.
    """

    def __init__(self, x0: torch.Tensor | None, y: torch.Tensor, noise: torch.Tensor, source: str, *,
                 kind: str = "in memory", label: str = "", drawing: Drawing | None = None):
        self._x0, self.drawing = x0, drawing  # (N, C, H, W), or how to draw it
        self.y = y  # (N,) int64
        self.noise = noise  # (N, C, H, W)
        self.source = source  # the full account (run metadata, compared on resume)
        self.kind = kind  # synthetic | file | image latents | generated | in memory
        self.label = label  # short: the table's ``inputs`` column, the CLI's first lines, figure footers

    @property
    def x0(self) -> torch.Tensor:
        if self._x0 is None:
            self.fill([self.drawing.draw(sl) for sl in self.drawing.chunks])
        return self._x0

    @property
    def drawn(self) -> bool:
        """False while generated x0 are still to be sampled."""
        return self._x0 is not None

    @property
    def count(self) -> int:
        return self.noise.shape[0]

    def fill(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Generated inputs from their chunks, in order: x0 set, the conditioning handed to the subject;
        -> everything drawn ({"x0": (N, ...), <conditioning>: (N, ...)})."""
        whole = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if tuple(whole["x0"].shape) != tuple(self.noise.shape):
            raise DardiagError(f"the generated inputs have shape {list(whole['x0'].shape)}, not "
                               f"{list(self.noise.shape)}; delete them (OUT/_inputs) and run again")
        if self.drawing is not None and self.drawing.use is not None:
            self.drawing.use({k: v for k, v in whole.items() if k != "x0"})
        self._x0 = whole["x0"]
        return whole


def minibatches(n: int, batch_size: int) -> list[slice]:
    """Consecutive minibatches of ``batch_size`` images; a tail too small for CKA over images (under 4,
    and under the batch size: a batch of 1 or 2 images is CKA over tokens) joins the previous one."""
    return [slice(a, b) for a, b in row_blocks(n, batch_size, min_rows=min(4, batch_size))]


def noisy_batch(inputs: Inputs, sl: slice, t_native: float, family, device):
    """One minibatch at one native timestep, on ``device``: ``(x0, noise, y, t, x_t)`` with x_t =
    family.corrupt(x0, noise, t). Every analysis of a level (the sweep, --ablation) builds x_t here, so
    they see the same numbers."""
    x0 = inputs.x0[sl].to(device)  # (N, C, H, W)
    noise = inputs.noise[sl].to(device)  # (N, C, H, W)
    y = inputs.y[sl].to(device)  # (N,)
    t = torch.full((x0.shape[0],), t_native, dtype=torch.float64, device=device)  # (N,)
    t = t.long() if family.integer_time else t.float()
    return x0, noise, y, t, family.corrupt(x0, noise, t)


def _check_fits_in_memory(n: int, shape: tuple[int, ...]) -> None:
    """Synthetic latents and noise for ``n`` samples must fit comfortably in RAM (a typo guard)."""
    need = 2 * n * math.prod(shape) * 4  # x0 and noise, float32
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no guard
        return
    if need > ram // 2:
        raise DardiagError(
            f"--samples {n} needs {need / 2**30:.1f} GiB for the latents alone, over half of this machine's "
            f"{ram / 2**30:.0f} GiB; use fewer samples (the statistics converge long before that)"
        )


def make_inputs(spec, subject: Subject, samples: int | None, seed: int, *, steps: int = 50,
                cfg: float = 1.0, chunk: int = GENERATE_CHUNK) -> Inputs:
    """Inputs for one subject: from a dict (``spec``; a latents file as its opener read it; a dict of
    conditioning alone, e.g. from ``dardiag prompts``, goes with synthetic latents), drawn by the model
    (``spec="generated"``, with ``steps`` sampler steps and guidance ``cfg``), or, when None, seeded
    synthetic latents. Labels and noise the spec lacks are drawn with ``seed``. Synthetic conditioning
    (text embeddings nobody supplied) is said in the label, like synthetic latents."""
    inputs = _make_inputs(spec, subject, samples, seed, steps=steps, cfg=cfg, chunk=chunk)
    if inputs.drawing is not None and inputs.drawing.use is not None:
        return inputs  # the conditioning comes with the drawing (a pipeline's own), its label says so
    describe = getattr(subject.make_cond, "describe", None)
    if describe is not None and describe().startswith("synthetic"):
        inputs.label += "; synthetic N(0, 1) text conditioning"
        inputs.source += f"; {describe()}"
    padding = getattr(subject.make_cond, "padding", lambda: {})()  # {sequence: padding fraction}
    if padding:  # the pipeline's own masks came with the text: say so where the inputs are named
        masked = ", ".join(f"{k} with its padding mask ({p:.0%} padding)" for k, p in padding.items())
        inputs.label += f"; {masked}"
        inputs.source += f"; {masked}"
    return inputs


def _standard_normal(n: int, shape: tuple[int, ...], num_classes: int, g: torch.Generator):
    """-> x0 [N, *shape], y [N] uniform classes, noise [N, *shape]; drawn in this order (seeds reproduce)."""
    x0 = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, max(num_classes, 1), (n,), generator=g)
    noise = torch.randn(n, *shape, generator=g)
    return x0, y, noise


def _make_inputs(spec, subject: Subject, samples: int | None, seed: int, *, steps: int, cfg: float,
                 chunk: int) -> Inputs:
    shape = tuple(subject.input_shape)  # (C, H, W), or (C, F, H, W) for video models
    g = torch.Generator().manual_seed(seed)
    if isinstance(spec, dict) and "x0" not in spec:  # conditioning alone: synthetic latents beside it
        cond = {k: torch.as_tensor(v) for k, v in spec.items() if k not in ("y", "noise", "meta")}
        rows = min((v.shape[0] for v in cond.values()), default=0)
        if not cond or rows == 0:
            raise DardiagError("the inputs hold neither latents (x0) nor conditioning")
        n = samples or rows
        if n > rows:
            raise DardiagError(f"--samples {n} but the conditioning holds only {rows} rows (prompts); "
                               f"pass --samples {rows} or more prompts")
        x0, y, noise = _standard_normal(n, shape, subject.num_classes, g)
        cond = {k: v[:n] for k, v in cond.items()}
        _conditioning(subject, cond, seed)
        meta = spec.get("meta") if isinstance(spec.get("meta"), dict) else {}
        what = f"conditioning {meta['file']}" if meta.get("file") else "conditioning in memory"
        return Inputs(x0, y, noise, f"synthetic: standard normal latents, seed {seed}; {what} "
                                    f"(sha256 {meta.get('sha256')}): {', '.join(cond)}",
                      kind="synthetic", label=f"synthetic N(0, 1) latents (seed {seed}), {what}")
    if spec is None:
        n = samples or (len(subject.pipeline.prompts) if subject.pipeline is not None else SYNTHETIC_SAMPLES)
        _check_fits_in_memory(n, shape)
        x0, y, noise = _standard_normal(n, shape, subject.num_classes, g)
        _conditioning(subject, {}, seed)
        return Inputs(x0, y, noise, f"synthetic: standard normal latents, uniform classes, seed {seed}",
                      kind="synthetic", label=f"synthetic N(0, 1) latents (seed {seed})")
    if isinstance(spec, str) and spec == GENERATED:
        if subject.pipeline is not None:
            return _pipeline_generated(subject, samples or len(subject.pipeline.prompts), seed, chunk)
        return _generated(subject, samples or SYNTHETIC_SAMPLES, seed, steps, cfg)
    if isinstance(spec, (str, Path)):
        raise DardiagError(f"the engine takes inputs already read; open {spec} with dardiag.data.open_inputs "
                           "(dardiag.profile does)")
    data = dict(spec)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    if meta.get("file"):  # the content, not the path's spelling, identifies the inputs (resume compares configs)
        source = f"file: {meta['file']}, sha256 {meta.get('sha256')}"
        kind, label = "file", f"file {meta['file']}"
    else:
        source, kind, label = "in-memory inputs", "in memory", "in-memory inputs"
    if meta.get("folder") and meta.get("vae"):  # written by `dardiag latents`
        kind = "image latents"
        label = (f"latents of {Path(str(meta['folder'])).name}/ ({meta.get('count', '?')} images, "
                 f"VAE {Path(str(meta['vae'])).name})")
        source += f"; images in {meta['folder']}, VAE {meta['vae']}, size {meta.get('size')}"
    elif meta.get("source"):
        label = str(meta["source"])
        source += f"; {label}"
        kind = "generated" if meta.get("kind") == "generated" else kind  # a `dardiag generate` file
    if meta.get("conditioning_file"):  # a second file: conditioning beside the latents
        source += f"; conditioning {meta['conditioning_file']}, sha256 {meta.get('conditioning_sha256')}"
        label += f", conditioning {meta['conditioning_file']}"
    x0 = torch.as_tensor(data["x0"]).float()
    if tuple(x0.shape[1:]) != shape:
        raise DardiagError(
            f"inputs x0 have shape {list(x0.shape)}, but model {subject.name} takes latents "
            f"[N, {', '.join(map(str, shape))}]; pass inputs that match the model"
        )
    n = x0.shape[0] if samples is None else min(samples, x0.shape[0])
    if samples is not None and samples > x0.shape[0]:
        raise DardiagError(f"--samples {samples} but the inputs hold only {x0.shape[0]} latents")
    x0 = x0[:n]
    if data.get("y") is not None:
        y = torch.as_tensor(data["y"]).long()[:n]
        if subject.num_classes and (y.min() < 0 or y.max() >= subject.num_classes):
            raise DardiagError(f"inputs y must lie in 0..{subject.num_classes - 1} for {subject.name}")
    else:
        y = torch.randint(0, max(subject.num_classes, 1), (n,), generator=g)
        source += f"; classes drawn with seed {seed}"
    if data.get("noise") is not None:
        noise = torch.as_tensor(data["noise"]).float()[:n]
        if noise.shape != x0.shape:
            raise DardiagError(f"inputs noise has shape {list(noise.shape)}, x0 has {list(x0.shape)}")
    else:
        noise = torch.randn(x0.shape, generator=g)
        source += f"; noise drawn with seed {seed}"
    cond = {k: torch.as_tensor(v)[:n] for k, v in data.items() if k not in ("x0", "y", "noise", "meta")}
    _conditioning(subject, cond, seed)
    if cond:
        source += f"; conditioning from the inputs: {', '.join(cond)}"
    return Inputs(x0, y, noise, source, kind=kind, label=label)


def _generated(subject: Subject, n: int, seed: int, steps: int, cfg: float) -> Inputs:
    """x0 drawn by the model itself: uniform classes and the sampler's start noise from one seed
    stream, the profile's noise from another (so x_t is not built from the sampler's own noise)."""
    fam = subject.family
    if subject.sample is None:
        raise DardiagError(
            f"--inputs generated needs a sampler: dardiag's own (its DiT/SiT/REPA) or a diffusers pipeline; "
            f"{subject.name} ({fam.name}) has neither: pass its pipeline folder (model_index.json) or "
            "--pipeline DIR, or encode real images with `dardiag latents`"
        )
    shape = tuple(subject.input_shape)
    _check_fits_in_memory(n, shape)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, max(subject.num_classes, 1), (n,), generator=g)  # (N,)
    noise = torch.randn(n, *shape, generator=g)  # (N, C, [F,] H, W) the profile's noise

    def draw(sl: slice, on_step=None) -> dict[str, torch.Tensor]:  # chunk i has its own seed: any split, same images
        i = sl.start // GENERATE_CHUNK
        x0 = subject.sample(y[sl], steps, cfg, zlib.crc32(f"generate {seed} {i}".encode())).cpu()  # (n, C, H, W)
        if not torch.isfinite(x0).all():
            raise DardiagError(f"{subject.name}: the generated inputs are not finite (NaN or inf); lower "
                               "--generate-cfg or check the checkpoint with `dardiag inspect`")
        for _ in range(steps if on_step is not None else 0):
            on_step()
        return {"x0": x0}

    sampler = getattr(subject.sample, "label", "the model's sampler")  # e.g. "DDIM", "Euler"
    _conditioning(subject, {}, seed)
    chunks = [slice(a, min(a + GENERATE_CHUNK, n)) for a in range(0, n, GENERATE_CHUNK)]
    label = f"generated by the model ({sampler} {steps} steps, cfg {cfg:g})"
    return Inputs(None, y, noise, f"generated: {n} samples of the model, {sampler} {steps} steps, cfg {cfg:g}, "
                                  f"uniform classes, seed {seed}",
                  kind="generated", label=label, drawing=Drawing(chunks, draw, steps, meta={"source": label}))


def _pipeline_generated(subject: Subject, n: int, seed: int, chunk: int) -> Inputs:
    """x0 the model's pipeline generates for its prompts (sample j: prompt j mod P, generator seed + j),
    with the conditioning its call hands the transformer for them; the profile's noise from ``seed``."""
    ps = subject.pipeline
    shape = tuple(subject.input_shape)
    _check_fits_in_memory(n, shape)
    noise = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))  # (N, C, [F,] H, W)
    # (N,) a class-conditional pipeline's labels (its x0 belong to them), none for text-to-image ones
    y = torch.tensor(ps.prompts.labels(range(n), subject.num_classes) if ps.by_class else [0] * n, dtype=torch.long)

    def draw(sl: slice, on_step=None) -> dict[str, torch.Tensor]:
        x0, cond = ps.generate(list(range(sl.start, sl.stop)), on_step)
        return {"x0": x0, **cond}

    label = ps.label()
    masks = sorted(k.removesuffix("_mask") for k in ps.map.cond_keys if k.endswith("_mask"))
    if masks:  # the padding of the pipeline's text, masked as its call masks it
        label += f"; {', '.join(masks)} with the pipeline's padding mask"
    sizes = ", ".join(f"{k} {v}" for k, v in (("height", ps.settings.height), ("width", ps.settings.width),
                                                ("num_frames", ps.settings.num_frames)) if v is not None)
    extra = "".join(f", {k}={v!r}" for k, v in ps.settings.extra)
    source = (f"generated: {n} samples by {ps.name} ({ps.folder.name}), {ps.steps()} steps, guidance "
              f"{ps.guidance()}, {sizes or 'its default size'}{extra}; {ps.prompts.source}, sample j = prompt j mod "
              f"{len(ps.prompts)} with generator seed {seed} + j, in calls of {chunk}; the profile's noise seed {seed}")
    chunks = [slice(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    return Inputs(None, y, noise, source, kind="generated", label=label,
                  drawing=Drawing(chunks, draw, ps.steps() or 1, use=lambda cond: _conditioning(subject, cond, seed),
                                  meta={"source": label, "pipeline": str(ps.folder), "prompts": ps.prompts.of(range(n)),
                                        "seed": seed, "settings": ps.describe()}))


def _conditioning(subject: Subject, cond: dict, seed: int) -> None:
    """Hand per-sample conditioning from the inputs (text embeddings, ...) and the seed to the subject."""
    use = getattr(subject.make_cond, "use_inputs", None)
    if use is not None:
        use(cond, seed=seed)
    elif cond:
        raise DardiagError(
            f"inputs hold {', '.join(cond)}, but {subject.name} takes no conditioning besides class labels"
        )

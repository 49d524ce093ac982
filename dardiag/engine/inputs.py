"""The fixed (x0, y, noise) set every noise level of a run reuses, and how it is cut into minibatches.

Symptoms are measured on (x0, noise) pairs, and x0 decides what they mean at low noise levels
(diagnostics.md section 10): the inputs come from a latents file, a dict in memory, or, when none are
given, seeded standard-normal latents. ``Inputs.source`` says which, for the run's metadata.

Legend: N images, C channels, H/W latent side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dardiag.checkpoints.files import sha256_file
from dardiag.data import load_latents
from dardiag.errors import DardiagError
from dardiag.metrics.cka import row_blocks
from dardiag.subject import Subject

SYNTHETIC_SAMPLES = 64


@dataclass
class Inputs:
    """The fixed (x0, y, noise) set every level reuses; ``source`` says where it came from."""

    x0: torch.Tensor  # (N, C, H, W)
    y: torch.Tensor  # (N,) int64
    noise: torch.Tensor  # (N, C, H, W)
    source: str

    @property
    def count(self) -> int:
        return self.x0.shape[0]


def minibatches(n: int, batch_size: int) -> list[slice]:
    """Consecutive minibatches of ``batch_size`` images; a tail too small for CKA joins the previous one."""
    return [slice(a, b) for a, b in row_blocks(n, batch_size)]


def _check_fits_in_memory(n: int, shape: tuple[int, int, int]) -> None:
    """Synthetic latents and noise for ``n`` samples must fit comfortably in RAM (a typo guard)."""
    need = 2 * n * shape[0] * shape[1] * shape[2] * 4  # x0 and noise, float32
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no guard
        return
    if need > ram // 2:
        raise DardiagError(
            f"--samples {n} needs {need / 2**30:.1f} GiB for the latents alone, over half of this machine's "
            f"{ram / 2**30:.0f} GiB; use fewer samples (the statistics converge long before that)"
        )


def make_inputs(spec, subject: Subject, samples: int | None, seed: int) -> Inputs:
    """Inputs for one subject from a dict/file (``spec``) or, when None, seeded synthetic latents."""
    C, H, W = subject.input_shape
    g = torch.Generator().manual_seed(seed)
    if spec is None:
        n = samples or SYNTHETIC_SAMPLES
        _check_fits_in_memory(n, (C, H, W))
        x0 = torch.randn(n, C, H, W, generator=g)
        y = torch.randint(0, max(subject.num_classes, 1), (n,), generator=g)
        noise = torch.randn(n, C, H, W, generator=g)
        _conditioning(subject, {}, seed)
        return Inputs(x0, y, noise, f"synthetic: standard normal latents, uniform classes, seed {seed}")
    if isinstance(spec, (str, Path)):
        # the content, not the path's spelling, identifies the inputs (resume compares configs)
        data = load_latents(spec)
        source = f"file: {Path(spec).name}, sha256 {sha256_file(Path(spec))}"
    else:
        data, source = dict(spec), "in-memory inputs"
    x0 = torch.as_tensor(data["x0"]).float()
    if x0.dim() != 4 or tuple(x0.shape[1:]) != (C, H, W):
        raise DardiagError(
            f"inputs x0 have shape {list(x0.shape)}, but model {subject.name} takes latents "
            f"[N, {C}, {H}, {W}]; pass inputs that match the model"
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
    return Inputs(x0, y, noise, source)


def _conditioning(subject: Subject, cond: dict, seed: int) -> None:
    """Hand per-sample conditioning from the inputs (text embeddings, ...) and the seed to the subject."""
    use = getattr(subject.make_cond, "use_inputs", None)
    if use is not None:
        use(cond, seed=seed)
    elif cond:
        raise DardiagError(
            f"inputs hold {', '.join(cond)}, but {subject.name} takes no conditioning besides class labels"
        )

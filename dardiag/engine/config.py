"""What a profile measures, as one frozen value: built once (CLI, Python API, the trainer's periodic
profile), validated once, stored whole in the run metadata and compared on resume.

``ProfileConfig`` holds every measurement setting (the grid, inputs size, minibatching, seed,
precision, analyses) and ``device`` and ``checkpoint_blocks``, the settings a resumed run may change
(``RESUMABLE``). How a checkpoint is opened (family, heads, latent side, ...) is not a measurement
setting: it is ``dardiag.adapters.options.LoadOptions``, used before the engine sees a model. The run's arguments that
are not settings stay outside too: the models, ``inputs``, ``out``, display names, ``force``/``resume``
and the progress callback.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dardiag.errors import DardiagError

DEFAULT_LEVELS = 16
MAX_LEVELS = 1000  # DiT's whole discrete schedule; a larger grid is a typo, not a study
MAX_SAMPLER_STEPS = 10_000  # 40x the most any released sampler uses; more is a typo that would run for days
DTYPES = ("float32", "bfloat16", "float16")
CKA_ROWS = ("tokens", "images")
# may differ when a run is continued: they do not decide what is measured (checkpointed blocks give the same table)
RESUMABLE = frozenset({"device", "checkpoint_blocks"})
CKA_MIN_ROWS = 4  # the unbiased HSIC estimator needs n >= 4 rows per minibatch
OPTIONAL_ANALYSES = ("ablation", "trajectory")  # off by default; compared on resume only when on
SAMPLER_STEPS, SAMPLER_CFG = 50, 1.0  # dardiag's own sampler when no step count / guidance is given


def default_grid(n: int = DEFAULT_LEVELS) -> list[float]:
    """``n`` evenly spaced noise levels from 0 (clean) to 1 (pure noise)."""
    if not isinstance(n, int) or not 1 <= n <= MAX_LEVELS:
        raise DardiagError(f"--levels must be between 1 and {MAX_LEVELS}, got {n}")
    return [float(v) for v in np.linspace(0.0, 1.0, n)]


@dataclass(frozen=True)
class Analyses:
    """Which analyses a profile runs (all are recorded in the run's metadata)."""

    cka: bool = True
    cka_rows: str = "tokens"  # "tokens" (rows = N*T tokens) | "images" (rows = N, features T*D)
    cka_max_rows: int | None = None  # split larger minibatches into CKA minibatches of this many rows
    cka_gram_dtype: str = "float64"
    sublayers: bool = True  # h_rms / v_rms of every sublayer input and output
    routes: bool = True  # route_alpha (DAR) and route_importance (residual)
    probe: bool = True  # keep token-pooled states for the timestep probe
    token_maps: bool = False  # per-token act_rms / grad_rms lists
    outliers: bool = True  # act_absmax, act_kurtosis, channel / token top-1% shares of every state
    channel_maps: bool = False  # per-channel RMS lists (channel_act_rms)
    ablation: bool = False  # ablate_dloss / ablate_rel_out: each block skipped, one extra forward per block
    trajectory: bool = False  # along the model's own sampler: step changes and the causal cache error
    cache_error: bool = True  # trajectory: the causal cache error (one extra forward per block and step)

    def __post_init__(self):
        if self.cka_rows not in CKA_ROWS:
            raise DardiagError(f"--cka-rows must be tokens or images, got {self.cka_rows!r}")
        if self.cka_gram_dtype not in ("float32", "float64"):
            raise DardiagError(f"cka_gram_dtype must be float32 or float64, got {self.cka_gram_dtype!r}")
        if self.cka and self.cka_max_rows is not None and self.cka_max_rows < CKA_MIN_ROWS:
            raise DardiagError(
                f"--cka-max-rows {self.cka_max_rows} is too small: the unbiased CKA needs at least 4 rows "
                "per minibatch; use 4 or more, or leave it out"
            )


def _floats(values, flag: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise DardiagError(f"{flag} takes numbers, got {values!r}") from None
    if not out:
        raise DardiagError(f"the {flag.lstrip('-').replace('-', ' ')} grid is empty; pass at least one value")
    if not all(math.isfinite(v) for v in out):
        raise DardiagError(f"{flag} must be finite numbers, got {list(out)}")
    if len(out) > MAX_LEVELS:
        raise DardiagError(f"{len(out)} values for {flag}: at most {MAX_LEVELS}")
    return out


def checked_grid(noise_levels=None, timesteps=None, *, flag: str = "--noise-levels"):
    """-> (noise_levels, timesteps) as tuples of floats (or None), or one ``DardiagError``: the one check of a
    noise grid (profile, ``dardiag.profile``, the trainer's ``--profile-noise-levels``). Whether timesteps lie
    in a family's range is the family's question (``Family.check_native``, when the grid is resolved)."""
    noise_levels, timesteps = _floats(noise_levels, flag), _floats(timesteps, "--timesteps")
    if noise_levels is not None and timesteps is not None:
        raise DardiagError("pass either --noise-levels or --timesteps, not both")
    if noise_levels is not None and not all(0 <= v <= 1 for v in noise_levels):
        raise DardiagError(f"{flag} must lie in [0, 1] (1 = pure noise); got {list(noise_levels)}")
    return noise_levels, timesteps


@dataclass(frozen=True)
class ProfileConfig:
    """Every setting of a profile (see the module docstring). Invalid values raise ``DardiagError``."""

    noise_levels: tuple[float, ...] | None = None  # canonical levels, 1 = noise; None: default_grid()
    timesteps: tuple[float, ...] | None = None  # the family's native timesteps instead
    samples: int | None = None  # images per level; None: all of the inputs (64 synthetic)
    batch_size: int = 16  # images per minibatch (grad_rms scales with 1/B)
    seed: int = 0  # synthetic latents, drawn noise and labels, the probe's split
    device: str = "auto"  # CUDA when present, else the CPU (dardiag.engine.devices)
    dtype: str = "float32"  # autocast dtype of the forward pass; statistics stay float64
    analyses: Analyses = field(default_factory=Analyses)
    # None: the sampler's own default (a pipeline's call defaults; dardiag's sampler: SAMPLER_STEPS, SAMPLER_CFG)
    generate_steps: int | None = None  # inputs="generated": sampler steps (DDIM for dit, Euler for sit / repa)
    generate_cfg: float | None = None  # inputs="generated": classifier-free guidance scale (1 = off)
    trajectory_steps: int | None = None  # analyses.trajectory: steps of the model's sampler (guidance: generate_cfg)
    # every block recomputed in the backward (dardiag.engine.memory); None: when the plain backward would
    # not fit the free memory (the cost line's estimate)
    checkpoint_blocks: bool | None = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen: normalise once)
        for name, v in zip(("noise_levels", "timesteps"), checked_grid(self.noise_levels, self.timesteps)):
            set_(name, v)
        if isinstance(self.analyses, dict):
            set_("analyses", Analyses(**self.analyses))
        if self.dtype not in DTYPES:
            raise DardiagError(f"unknown --dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        for name, v in (("--batch-size", self.batch_size), ("--samples", self.samples)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise DardiagError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise DardiagError(f"--seed must be a non-negative integer, got {self.seed!r}")
        # over tokens a minibatch of one image already gives T rows; over images it gives B
        if self.analyses.cka and self.analyses.cka_rows == "images" and self.batch_size < CKA_MIN_ROWS:
            raise DardiagError(
                f"--batch-size {self.batch_size} is too small for CKA: the unbiased estimator needs at least 4 "
                "rows per minibatch; use --batch-size 4 or more, or --no-cka"
            )
        if self.checkpoint_blocks not in (None, True, False):
            raise DardiagError(f"checkpoint_blocks must be True, False or None (decided by the free memory), "
                               f"got {self.checkpoint_blocks!r}")
        if self.generate_steps is not None and (not isinstance(self.generate_steps, int) or isinstance(
                self.generate_steps, bool) or not 1 <= self.generate_steps <= MAX_SAMPLER_STEPS):
            raise DardiagError(f"--generate-steps must be an integer in 1..{MAX_SAMPLER_STEPS}, "
                               f"got {self.generate_steps!r}")
        if self.trajectory_steps is not None and (not isinstance(self.trajectory_steps, int) or isinstance(
                self.trajectory_steps, bool) or not 2 <= self.trajectory_steps <= MAX_SAMPLER_STEPS):
            raise DardiagError(f"--trajectory-steps must be an integer in 2..{MAX_SAMPLER_STEPS} (step i is compared "
                               f"with i - 1), got {self.trajectory_steps!r}")
        if self.generate_cfg is not None and not (
                isinstance(self.generate_cfg, (int, float)) and not isinstance(self.generate_cfg, bool)
                and math.isfinite(self.generate_cfg) and self.generate_cfg >= 0):
            raise DardiagError(f"--generate-cfg must be a finite number >= 0 (1 = off), got {self.generate_cfg!r}")

    @property
    def grid(self) -> tuple[float, ...] | None:
        """The noise levels asked for (the default grid when neither levels nor timesteps are given)."""
        if self.noise_levels is None and self.timesteps is None:
            return tuple(default_grid())
        return self.noise_levels

    @property
    def sampler_steps(self) -> int:
        """dardiag's own sampler: the generation's steps."""
        return self.generate_steps or SAMPLER_STEPS

    @property
    def sampler_cfg(self) -> float:
        return SAMPLER_CFG if self.generate_cfg is None else float(self.generate_cfg)

    @property
    def min_samples(self) -> int:
        return CKA_MIN_ROWS if self.analyses.cka and self.analyses.cka_rows == "images" else 1

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists, not tuples), the analyses nested: what the run metadata stores."""
        d = dataclasses.asdict(self)
        for k in ("noise_levels", "timesteps"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    def compared(self) -> dict[str, Any]:
        """The settings a resumed run must share with the stored one (all but ``RESUMABLE``). The
        analyses added later (``OPTIONAL_ANALYSES``) appear only when on, so a run written before they
        existed still continues."""
        d = {k: v for k, v in self.to_dict().items() if k not in RESUMABLE}
        for name in OPTIONAL_ANALYSES:
            if not d["analyses"][name]:
                del d["analyses"][name]
        if d["analyses"]["cache_error"]:  # on by default, and before it could be turned off
            del d["analyses"]["cache_error"]
        if not self.analyses.trajectory:
            del d["trajectory_steps"]
        # None (the sampler's default) is compared as dardiag's own sampler's default, as runs stored it before
        # pipelines sampled; what a pipeline resolves it to is in the models' sampler info, compared too
        for key, old in (("generate_steps", SAMPLER_STEPS), ("generate_cfg", SAMPLER_CFG),
                         ("trajectory_steps", SAMPLER_STEPS)):
            if key in d and d[key] is None:
                d[key] = old
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ProfileConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DardiagError(f"unknown profile setting(s) {unknown}; known: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_kwargs(cls, **kw) -> "ProfileConfig":
        """The keyword form of ``dardiag.profile(...)``; unknown keywords name the known ones."""
        return cls.from_dict(kw)

    def replace(self, **changes) -> "ProfileConfig":
        return dataclasses.replace(self, **changes)

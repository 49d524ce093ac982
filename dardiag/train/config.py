"""What a training run is: one frozen dataclass, saved inside every checkpoint it writes.

The model size is a preset (``DiT-S/2``) or explicit ``depth``/``hidden_size``/``num_heads``/
``patch_size``; channels, latent side and class count come from the data (``model_config``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from dardiag.engine.config import checked_grid
from dardiag.errors import DardiagError
from dardiag.families import DIT_FAMILIES, FAMILIES
from dardiag.models.config import DiTConfig, preset

# Fields that may change when a run is resumed: they decide how long and how often, not what is learned.
RESUMABLE = frozenset({"out", "steps", "save_every", "log_every", "profile_every", "device", "resume", "force"})
LR_MAX = 1e37  # AdamW's first step is lr / (1 - beta1) = 10 lr, and torch needs it as a float32
# TrainConfig field -> the ``dardiag train`` flag that sets it, where the two names differ
FLAGS = {"hidden_size": "--hidden", "num_heads": "--heads", "patch_size": "--patch", "init_sha256": "--init (its content)"}


def flag(field: str) -> str:
    return FLAGS.get(field, "--" + field.replace("_", "-"))


@dataclass(frozen=True)
class TrainConfig:
    out: str
    # ---- model: a preset, or explicit sizes (the defaults are the bundled models' size)
    preset: str | None = None
    depth: int = 8
    hidden_size: int = 64
    num_heads: int = 4
    patch_size: int = 2
    input_size: int | None = None  # None: the data's side; else it must match the data
    routing: str = "residual"  # "residual" | "dar"
    query: str = "static_t"  # DAR only
    chunk_size: int = 4  # DAR only
    class_dropout: float = 0.1  # the model's class_dropout_prob (CFG null class), applied in train mode
    # ---- fine-tuning (dardiag.train.init): the model fields above then come from this checkpoint
    init: str | None = None
    init_sha256: str | None = None  # what the --init file held when the run started
    lora: int = 0  # LoRA rank on the attention and MLP linears (dardiag.train.lora); 0 = full fine-tune
    # ---- objective and data
    family: str = "sit"
    data: str = "digits"  # "digits" (train split) or a latents file (see data.load_latents)
    # ---- optimisation (AdamW, weight decay 0, constant lr after a linear warmup)
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    ema: float = 0.999  # EMA decay cap; see trainer.ema_decay for the warmup
    seed: int = 0
    # ---- outputs
    save_every: int = 500  # OUT/ckpt_{step:07d}.pt every K steps (and at the end); 0 = only at the end
    log_every: int = 1
    profile_every: int = 0  # 0 = off
    profile_samples: int = 64
    profile_batch_size: int = 32
    profile_noise_levels: tuple[float, ...] | None = None  # None: the profiler's default grid
    profile_cka: bool = True
    device: str = "cpu"
    resume: bool = False
    force: bool = False

    def __post_init__(self):
        if self.profile_noise_levels is not None:  # lists from JSON/argparse -> a hashable tuple
            object.__setattr__(self, "profile_noise_levels", tuple(float(v) for v in self.profile_noise_levels))
        _check(self)

    # ------------------------------------------------------------------ model
    def size(self) -> tuple[int, int, int, int]:
        """(depth, hidden_size, num_heads, patch_size), from the preset when one is named."""
        if self.preset is None:
            return self.depth, self.hidden_size, self.num_heads, self.patch_size
        try:
            p = preset(self.preset)
        except ValueError as e:
            raise DardiagError(str(e)) from None
        return p.depth, p.hidden_size, p.num_heads, p.patch_size

    def model_config(self, *, in_channels: int, input_size: int, num_classes: int) -> DiTConfig:
        """The DiTConfig this run trains; learn_sigma is off for both families (the loss is the simple MSE)."""
        depth, hidden, heads, patch = self.size()
        try:
            return DiTConfig(
                input_size=input_size, patch_size=patch, in_channels=in_channels, hidden_size=hidden,
                depth=depth, num_heads=heads, num_classes=num_classes,
                class_dropout_prob=self.class_dropout, learn_sigma=False, routing=self.routing,
                query=self.query, chunk_size=self.chunk_size,
            )
        except ValueError as e:
            raise DardiagError(str(e)) from None

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["profile_noise_levels"] is not None:
            d["profile_noise_levels"] = list(d["profile_noise_levels"])
        return d  # only str/int/float/bool/None/list: weights_only-loadable and JSON-able

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise DardiagError(f"unknown training settings {sorted(unknown)}")
        return cls(**d)

    def resume_diff(self, stored: dict) -> list[str]:
        """Settings that differ from a stored run and may not change on resume."""
        mine = self.to_dict()
        # a field added after the run started (init, lora) has its default there
        default = {f.name: f.default for f in dataclasses.fields(self)}
        return [
            f"{flag(k)}: stored {stored.get(k, default[k])!r}, now {mine[k]!r}"
            for k in mine if k not in RESUMABLE and stored.get(k, default[k]) != mine[k]
        ]


def _check(c: TrainConfig) -> None:
    """Every setting, before any data is read or any file in OUT is written or deleted."""
    def need(ok: bool, msg: str):
        if not ok:
            raise DardiagError(msg)

    def finite(v: float) -> bool:
        return isinstance(v, (int, float)) and math.isfinite(v)

    # a diffusers --init folder trains with its class's own family (dardiag.train.diffusers_model)
    diffusers = c.init is not None and Path(c.init).is_dir() and c.family in FAMILIES
    need(c.family in DIT_FAMILIES or diffusers,
         f"--family must be one of {', '.join(DIT_FAMILIES)} for training, got {c.family!r}")
    need(c.steps >= 1, f"--steps must be at least 1, got {c.steps}")
    need(c.batch_size >= 1, f"--batch-size must be at least 1, got {c.batch_size}")
    need(finite(c.lr) and 0 < c.lr <= LR_MAX,
         f"--lr must be a number > 0 and at most {LR_MAX:g} (a larger AdamW step overflows float32), got {c.lr}")
    need(c.warmup >= 0, f"--warmup must be >= 0, got {c.warmup}")
    need(finite(c.grad_clip) and c.grad_clip >= 0,
         f"--grad-clip must be a finite number >= 0 (0 = off), got {c.grad_clip}")
    need(0.0 <= c.ema < 1.0, f"--ema must be in [0, 1), got {c.ema}")
    need(0.0 <= c.class_dropout < 1.0, f"--class-dropout must be in [0, 1), got {c.class_dropout}")
    need(c.seed >= 0, f"--seed must be >= 0, got {c.seed}")
    need(c.save_every >= 0, f"--save-every must be >= 0 (0 = only at the end), got {c.save_every}")
    need(c.log_every >= 1, f"--log-every must be at least 1, got {c.log_every}")
    need(c.profile_every >= 0, f"--profile-every must be >= 0 (0 = off), got {c.profile_every}")
    need(c.profile_samples >= 4, f"--profile-samples must be at least 4 (CKA needs n >= 4), got {c.profile_samples}")
    need(c.profile_batch_size >= 1, f"--profile-batch-size must be at least 1, got {c.profile_batch_size}")
    need(not c.profile_cka or c.profile_batch_size >= 4,
         f"--profile-batch-size must be at least 4 for CKA (or pass --no-profile-cka), got {c.profile_batch_size}")
    checked_grid(c.profile_noise_levels, flag="--profile-noise-levels")
    need(not (c.resume and c.force), "pass either --resume or --force, not both")
    need(c.input_size is None or c.input_size >= 1, f"--input-size must be positive, got {c.input_size}")
    need(c.lora >= 0, f"--lora must be a rank >= 1 (0 = off), got {c.lora}")
    need(c.lora == 0 or c.init is not None, "--lora fine-tunes a checkpoint: pass --init CKPT")
    need(c.chunk_size >= 1, f"--chunk-size must be at least 1, got {c.chunk_size}")
    depth, hidden, heads, patch = c.size()
    for name, value in (("--depth", depth), ("--hidden", hidden), ("--heads", heads), ("--patch", patch)):
        need(value >= 1, f"{name} must be at least 1, got {value}")
    need(hidden % 4 == 0, f"--hidden must be a multiple of 4 (the 2-D sin-cos position embedding), got {hidden}")
    need(hidden % heads == 0, f"--hidden {hidden} is not divisible by --heads {heads}; "
         f"use a width that is a multiple of the head count")
    need(c.input_size is None or c.input_size % patch == 0,
         f"--input-size {c.input_size} is not a multiple of --patch {patch}")
    # the remaining checks of DiTConfig (routing, query, chunk size divides 2*depth) fail here, before any
    # data is read; the patch size stands in for the latent side, which only the data knows
    c.model_config(in_channels=1, input_size=c.input_size or patch, num_classes=1)

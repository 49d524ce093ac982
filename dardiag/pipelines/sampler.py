"""The pipeline as dardiag's sampler: generated inputs and observed trajectories for any diffusers class.

A :class:`PipelineSampler` holds a pipeline folder, the prompts and how to call the pipeline
(:class:`CallSettings`: its step count, guidance, sizes, by its own names, its own defaults for anything
not given). It opens the pipeline around the subject's transformer (``dardiag.pipelines.load``), learns
how the pipeline's latents and arguments read in dardiag's terms (``dardiag.pipelines.door``) and sizes
the subject's latents to what the pipeline draws.

Seeds anyone can reproduce with the pipeline alone: sample j (0-based; prompt j mod P of the list) is
drawn with ``generator=torch.Generator(device).manual_seed(seed + j)``. A call for several samples passes
the list of their generators, which gives every sample the starting noise it gets alone.

The conditioning of a sample is what the pipeline's call hands the transformer for it: a call with
guidance off (so that only the conditional branch runs) stopped at the transformer's door, read under
dardiag's names: every call default (text length, instructions, templates) is the pipeline's.

Legend: N samples of a call, R rows of a transformer call (N, or 2N under batched guidance).
"""

from __future__ import annotations

import inspect
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from dardiag.errors import DardiagError
from dardiag.pipelines.door import CallMap, bind, call_map, latents_argument, solve_shape, stopped_call
from dardiag.checkpoints.pipeline_dir import open_pipeline
from dardiag.pipelines.prompts import Prompts
from dardiag.subject import Subject

FLAGS = {"num_inference_steps": "--generate-steps / --trajectory-steps", "guidance_scale": "--generate-cfg",
         "height": "--height", "width": "--width", "num_frames": "--num-frames"}
GUIDANCE_OFF = {"guidance_scale": 1.0, "true_cfg_scale": 1.0}  # the conditional branch alone, where a call has these


@dataclass(frozen=True)
class CallSettings:
    """What the pipeline's call is asked, by its own argument names; None: the pipeline's default."""

    steps: int | None = None  # num_inference_steps
    guidance: float | None = None  # guidance_scale
    height: int | None = None  # pixels
    width: int | None = None
    num_frames: int | None = None  # frames as the pipeline counts them
    extra: tuple[tuple[str, object], ...] = ()  # any other argument of its call (--call key=value)

    def __post_init__(self):
        for name in ("steps", "height", "width", "num_frames"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise DardiagError(f"{FLAGS.get(name, '--' + name.replace('_', '-'))} must be a positive integer, got {v!r}")
        if self.guidance is not None and not (isinstance(self.guidance, (int, float)) and self.guidance >= 0
                                              and self.guidance == self.guidance and self.guidance != float("inf")):
            raise DardiagError(f"--generate-cfg must be a finite number >= 0, got {self.guidance!r}")

    def asked(self, steps: int | None = None) -> dict:
        """The arguments given (``steps`` overrides the settings' step count), by the call's names."""
        out = {"num_inference_steps": steps or self.steps, "guidance_scale": self.guidance, "height": self.height,
               "width": self.width, "num_frames": self.num_frames, **dict(self.extra)}
        return {k: v for k, v in out.items() if v is not None}

    def to_dict(self) -> dict:
        return {"steps": self.steps, "guidance": self.guidance, "height": self.height, "width": self.width,
                "num_frames": self.num_frames, "extra": {k: v for k, v in self.extra}}


def call_parameters(pipe) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def check_arguments(pipe, asked: dict) -> dict:
    """``asked`` if the pipeline's call names every one of them; one line naming the first it does not (a
    call that also takes ``**kwargs`` would ignore it silently)."""
    params = call_parameters(pipe)
    for key in asked:
        if key not in params:
            flag = FLAGS.get(key, f"--call {key}=...")
            raise DardiagError(f"{type(pipe).__name__}'s call takes no {key}; drop {flag}")
    return asked


def default_of(pipe, name: str):
    p = call_parameters(pipe).get(name)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


#################################################################################
#                      Every transformer call, observed                         #
#################################################################################


@contextmanager
def intercept(model: nn.Module, around: Callable) -> Iterator[None]:
    """Inside, every call of ``model`` runs ``around(run, args, kwargs)``, where ``run(*args, **kwargs)``
    is the model's own forward (hooks on its submodules fire as usual); removed on exit."""
    had = "forward" in model.__dict__
    own = model.__dict__.get("forward")
    original = model.forward

    def forward(*args, **kwargs):
        return around(original, args, kwargs)

    model.forward = forward
    try:
        yield
    finally:
        if had:
            model.forward = own
        else:
            del model.forward


class StepClock:
    """Which sampler step and which call within it a transformer call is, from its timestep: a call with a
    new timestep begins a step (steps counted from 0 as the pipeline's loop counts them), a call with the
    same one is the next call of the step (the other guidance pass). Without a time argument every call
    is a step of its own."""

    def __init__(self, time_key: str | None):
        self.key, self.step, self.slot, self.last = time_key, -1, 0, None

    def tick(self, arguments: dict) -> tuple[int, int]:
        t = arguments.get(self.key) if self.key else None
        t = torch.as_tensor(t).flatten()[0].item() if t is not None else object()
        if t != self.last:
            self.step, self.slot, self.last = self.step + 1, 0, t
        else:
            self.slot += 1
        return self.step, self.slot


def prediction(out) -> torch.Tensor:
    """The tensor a transformer call returned (``.sample`` or the first element of a tuple)."""
    if hasattr(out, "sample"):
        return out.sample
    return out[0] if isinstance(out, (tuple, list)) else out


#################################################################################
#                                 The sampler                                   #
#################################################################################


@dataclass
class PipelineSampler:
    """A pipeline folder as the sampler of one subject (see the module docstring)."""

    folder: Path
    prompts: Prompts
    settings: CallSettings = field(default_factory=CallSettings)
    seed: int = 0
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    subject: Subject | None = None
    map: CallMap | None = None
    _pipe: object = None

    # ------------------------------------------------------------------ opening
    @property
    def pipe(self):
        if self._pipe is None:
            self._pipe = open_pipeline(self.folder, self.subject.model, device=self.device, dtype=self.dtype)
            check_arguments(self._pipe, self.settings.asked())
        return self._pipe

    @property
    def name(self) -> str:
        return type(self.pipe).__name__

    def attach(self, subject: Subject) -> None:
        """Become ``subject``'s pipeline: its latents sized to what the pipeline draws (a call stopped at the
        transformer's door says the shape), and the map between the two calls learned."""
        self.subject = subject
        subject.pipeline = self
        key, _ = latents_argument(subject, device=self.device)
        args = self._stopped([0], GUIDANCE_OFF)
        door_shape = tuple(args[key].shape[1:])
        if math.prod(door_shape) == 0:
            sizes = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.settings.asked().items()
                              if k in ("height", "width", "num_frames")) or "its default sizes"
            raise DardiagError(f"{self.name} draws empty latents {list(door_shape)} at {sizes}; pass larger sizes")
        hints = self._hints(subject)
        shape = solve_shape(subject, door_shape, hints, device=self.device)
        if shape != tuple(subject.input_shape):
            if subject.resize is None:
                raise DardiagError(f"{subject.name}: the pipeline draws latents of shape {list(shape)}, and this "
                                   f"model's latent shape is fixed at {list(subject.input_shape)}")
            subject.resize(shape)
        self.map = call_map(subject, device=self.device)
        subject.info["sampler"] = self.describe()

    def _hints(self, subject: Subject) -> list[tuple[int, ...]]:
        """Latent shapes from the pixel sizes asked for, by the pipeline's own VAE scale factors."""
        s, own = self.settings, tuple(subject.input_shape)
        if s.height is None or s.width is None:
            return []
        out = []
        for attr in ("vae_scale_factor_spatial", "vae_spatial_compression_ratio", "vae_scale_factor"):
            f = getattr(self.pipe, attr, None)
            if isinstance(f, int) and f > 0:
                hw = (s.height // f, s.width // f)
                if len(own) == 4:
                    frames = [own[1]]
                    for tattr in ("vae_scale_factor_temporal", "vae_temporal_compression_ratio"):
                        t = getattr(self.pipe, tattr, None)
                        if isinstance(t, int) and t > 0 and s.num_frames:
                            frames.insert(0, (s.num_frames - 1) // t + 1)
                    out += [(own[0], fr, *hw) for fr in frames]
                else:
                    out.append((own[0], *hw))
        return out

    def describe(self) -> dict:
        """The sampler's settings as resolved (what a resumed run compares; ``prompt_texts``: what a later
        command that samples again, ``cache-plan``, asks the pipeline)."""
        return {"pipeline": self.name, "folder": self.folder.name, "prompts": self.prompts.source,
                "prompt_texts": list(self.prompts.texts), "seed": self.seed,
                **self.settings.to_dict(), "steps_used": self.steps(), "guidance_used": self.guidance()}

    def steps(self, steps: int | None = None) -> int | None:
        return steps or self.settings.steps or default_of(self.pipe, "num_inference_steps")

    def guidance(self) -> float | None:
        g = self.settings.guidance if self.settings.guidance is not None else default_of(self.pipe, "guidance_scale")
        return float(g) if isinstance(g, (int, float)) else None

    def label(self, steps: int | None = None) -> str:
        g = self.guidance()
        return (f"generated by the pipeline ({self.steps(steps)} steps"
                + (f", guidance {g:g})" if g is not None else ")"))

    # ------------------------------------------------------------------ calls
    def generators(self, ids) -> list[torch.Generator]:
        dev = torch.device(self.device)
        return [torch.Generator(dev).manual_seed(self.seed + int(j)) for j in ids]

    @property
    def by_class(self) -> bool:
        """The call takes class labels, not prompts (DiTPipeline)."""
        params = call_parameters(self.pipe)
        return "class_labels" in params and "prompt" not in params

    @property
    def latent_output(self) -> bool:
        """The call returns its latents for ``output_type="latent"`` (most pipelines); a call that always
        decodes (DiTPipeline) has them read at its scheduler's last step (:meth:`last_step`)."""
        return '"latent"' in inspect.getsource(type(self.pipe).__call__)

    def arguments(self, ids, steps: int | None = None, **more) -> dict:
        """The pipeline's call for samples ``ids``: their prompts (or class labels) and generators, the
        settings, ``more``."""
        asked = ({"class_labels": self.prompts.labels(ids, self.subject.num_classes)} if self.by_class
                 else {"prompt": self.prompts.of(ids)})
        return {**asked, "generator": self.generators(ids), "return_dict": False,
                **({"output_type": "latent"} if self.latent_output else {}),
                **check_arguments(self.pipe, {**self.settings.asked(steps), **more})}

    @contextmanager
    def last_step(self) -> Iterator[list]:
        """Inside, every ``scheduler.step`` output is kept (the last one: the final latents)."""
        scheduler = self.pipe.scheduler
        original, kept = scheduler.step, []

        def step(*args, **kwargs):
            out = original(*args, **kwargs)
            kept.append(out[0] if isinstance(out, tuple) else out.prev_sample)
            return out

        scheduler.step = step
        try:
            yield kept
        finally:
            del scheduler.step

    def call(self, ids, steps: int | None = None, on_step: Callable[[], None] | None = None, **more) -> torch.Tensor:
        """The pipeline's own call for samples ``ids``: its latents (N, ...) as it returns them;
        ``on_step()`` after each of its steps (counted by the transformer's timestep)."""
        steps_out = not self.latent_output and "output_type" not in more
        try:
            with self.counting(on_step, steps), (self.last_step() if steps_out else nullcontext([])) as kept:
                out = self.pipe(**self.arguments(ids, steps, **more))
        except DardiagError:
            raise
        except Exception as e:  # noqa: BLE001 - a call the pipeline refuses (sizes, steps) or its model fails
            text = " ".join(f"{type(e).__name__}: {e}".split())[:240]
            raise DardiagError(f"{self.name} failed on {len(ids)} prompt(s) ({text}); check --height/--width/"
                               "--num-frames/--generate-steps or the --call arguments") from None
        latents = out[0] if isinstance(out, (tuple, list)) else getattr(out, "images", getattr(out, "frames", out))
        if steps_out:  # read at the last scheduler step; batched guidance stepped both halves, the same samples
            latents = kept[-1][:len(ids)]
        if not torch.is_tensor(latents):
            raise DardiagError(f"{self.name} returned {type(latents).__name__} for output_type='latent', not latents")
        return latents

    def _stopped(self, ids, more: dict) -> dict:
        """The arguments of the pipeline's first transformer call for samples ``ids`` (nothing of it runs)."""
        more = {k: v for k, v in more.items() if k in call_parameters(self.pipe)}
        try:
            return stopped_call(self.subject.model, lambda: self.pipe(**self.arguments(ids, **more)),
                                f"{self.name}'s call")
        except DardiagError:
            raise
        except Exception as e:  # noqa: BLE001 - as in call()
            text = " ".join(f"{type(e).__name__}: {e}".split())[:240]
            raise DardiagError(f"{self.name} failed before its first denoising step ({text}); check --height/"
                               "--width/--num-frames or the --call arguments") from None

    def reference(self, ids) -> dict:
        """The arguments the transformer gets for the conditional branch of samples ``ids`` (guidance off):
        under batched guidance that is still two halves, [uncond; cond], of which the second is kept."""
        args = self._stopped(ids, GUIDANCE_OFF)
        n = len(ids)
        key = self.map.latents_key if self.map else None
        rows = args[key].shape[0] if key and torch.is_tensor(args.get(key)) else n
        keep = slice(rows - n, rows)  # diffusers batches guidance as [uncond; cond]
        return {k: (v[keep] if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == rows else v) for k, v in args.items()}

    def conditioning(self, ids) -> dict[str, torch.Tensor]:
        """The conditioning of samples ``ids`` under dardiag's names (N rows)."""
        return self.map.conditioning(self.reference(ids), slice(None))

    @contextmanager
    def counting(self, on_step: Callable[[], None] | None, steps: int | None) -> Iterator[None]:
        """Inside, ``on_step()`` once per sampler step of the pipeline's call (a transformer call with a new
        timestep ends the previous step), ``self.steps(steps)`` times in all."""
        if on_step is None:
            yield
            return
        total, told = self.steps(steps) or 0, [0]
        clock = StepClock(self.map.time_key if self.map else None)

        def tell() -> None:
            if told[0] < total:
                told[0] += 1
                on_step()

        def pre(module, args, kwargs) -> None:
            step, slot = clock.tick(bind(module, args, kwargs))
            if step > 0 and slot == 0:  # a new step: the previous one is done
                tell()

        handle = self.subject.model.register_forward_pre_hook(pre, with_kwargs=True)
        try:
            yield
            while told[0] < total:
                tell()
        finally:
            handle.remove()

    def generate(self, ids, on_step: Callable[[], None] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> (x0 of samples ``ids`` in dardiag's layout (N, C, [F,] H, W), their conditioning)."""
        cond = self.conditioning(ids)
        latents = self.call(ids, on_step=on_step)
        x0 = self.map.to_subject(latents.detach().float().cpu())
        if not torch.isfinite(x0).all():
            raise DardiagError(f"{self.subject.name}: the pipeline generated non-finite latents (NaN or inf); lower "
                               "--generate-cfg or check the weights with `dardiag inspect`")
        return x0, cond


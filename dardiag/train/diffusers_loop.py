"""``train(config)`` for a diffusers transformer: the DiT trainer's run directory, resumption, EMA,
divergence checks and periodic profile, around the class's own call and its family's loss.

What differs from the DiT loop (``trainer.py``): the model is a diffusers folder (``--init DIR``,
residual or routed), called through its class table entry with its conditioning; the data is a latents
file in the transformer's layout with that conditioning beside it (``diffusers_data.py``); a timestep is
a uniform noise level in the family's native units, and the loss is the family's (flow matching: noise
- x0 or x0 - noise, epsilon, v); blocks are gradient-checkpointed, and on CUDA the forward runs under
bfloat16 autocast (float32 master weights, the loss in float32). A checkpoint holds what the run
changes (every weight of a full fine-tune; LoRA factors and routing otherwise) plus the optimizer: the
rest is the ``--init`` folder, whose files are checked on resume.

Legend: N batch, C latent channels, F frames, H/W latent side.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import nullcontext
from pathlib import Path

import torch

from dardiag.atomic import atomic_write
from dardiag.engine.devices import resolve_device
from dardiag.families import Family, get_family
from dardiag.runs import claim
from dardiag.runs.layout import LAST, PROFILE_DIR
from dardiag.runs.lifecycle import Plan
from dardiag.subject import Subject
from dardiag.train import lora, outdir
from dardiag.train.config import TrainConfig
from dardiag.train.diffusers_data import check_matches_subject, load_training_data, probe_set, shape_options
from dardiag.train.diffusers_model import load_diffusers_init, prepare_model
from dardiag.train.profiling import ProfileHook
from dardiag.train.rng import batch_indices, generator, seed_for
from dardiag.train.trainer import RNG_SCHEME, Steps, _deterministic, _one_line, prepare, run_steps
from dardiag.train.watch import Watch
from dardiag.errors import DardiagError

FORMAT = "diffusers-finetune"  # the checkpoint's kind: trainable tensors over an --init folder


def draw(config: TrainConfig, family: Family, step: int, n: int, shape: tuple, device):
    """Step ``step``'s batch: indices, native timesteps of uniform noise levels, noise (CPU generators)."""
    idx = batch_indices(config.seed, step, config.batch_size, n)  # (N,)
    g = generator(config.seed, "batch", step)
    level = torch.rand(config.batch_size, generator=g, dtype=torch.float64)  # (N,) noise levels in [0, 1)
    t = family.to_native(level)
    t = t.round().long() if family.integer_time else t.float()  # (N,)
    noise = torch.randn((config.batch_size, *shape), generator=g)  # (N, C, [F,] H, W)
    return idx, t.to(device), noise.to(device)


def step_inputs(subject: Subject, data: dict, config: TrainConfig, family: Family, step: int, device):
    """(x0, x_t, t, y, cond) of step ``step``, on ``device``."""
    n = data["x0"].shape[0]
    idx, t, noise = draw(config, family, step, n, tuple(data["x0"].shape[1:]), device)
    x0 = data["x0"][idx].to(device)  # (N, C, [F,] H, W)
    y = data["y"][idx].to(device) if "y" in data else torch.zeros(len(idx), dtype=torch.long, device=device)
    cond = subject.make_cond(len(idx), idx) if subject.make_cond else None
    cond = {k: v.to(device) for k, v in cond.items()} if cond else None
    return x0, noise, family.corrupt(x0, noise, t), t, y, cond


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


#################################################################################
#                                  Checkpoints                                  #
#################################################################################


def _save(out: Path, config: TrainConfig, model, ema, opt, step: int, loss: float, wall_s: float, *,
          numbered: bool = True) -> None:
    obj = {
        "dardiag": {"format": FORMAT, "step": step, "family": config.family, "init": config.init},
        "model": lora.trainable_state(model), "ema": lora.trainable_state(ema, like=model), "opt": opt.state_dict(),
        "train": {"config": config.to_dict(), "rng": RNG_SCHEME, "loss": loss, "wall_s": wall_s},
    }
    for path in ([outdir.ckpt_path(out, step)] if numbered else []) + [out / LAST]:
        atomic_write(path, lambda f: torch.save(obj, f))


def _restore(obj: dict, path: Path, model, ema, opt) -> tuple[int, float]:
    try:
        if obj["dardiag"].get("format") != FORMAT:
            raise KeyError("not a diffusers fine-tune")
        lora.load_trainable(model, obj["model"], str(path))
        lora.load_trainable(ema, obj["ema"], str(path), like=model)
        opt.load_state_dict(obj["opt"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise DardiagError(f"cannot resume from {path}: not a complete training checkpoint ({_one_line(e)})") from None
    return int(obj["dardiag"]["step"]), float(obj["train"].get("wall_s", 0.0))


class DiffusersProfileHook(ProfileHook):
    """``--profile-every``: the EMA model profiled as a diffusers Subject (its own conditioning object,
    which the profile fills from the probe set), the same table as the DiT trainer's."""

    def __init__(self, config: TrainConfig, out: Path, probe: dict, *, name: str, subject: Subject):
        super().__init__(config, out, probe, name=name)
        self.subject = subject

    def profiled(self, ema, step: int) -> Subject:
        return dataclasses.replace(self.subject, model=ema, step=step)


#################################################################################
#                                     Loop                                      #
#################################################################################


def train_diffusers(config: TrainConfig, *, on_step=None, plan: Plan | None = None, report=None, progress=None,
                    profile_progress=None) -> Path:
    """Fine-tune the diffusers folder ``config.init`` (see the module docstring); -> ``OUT/last.pt``.
    ``report(line)`` gets what the run trains, before the first step; ``progress`` and ``profile_progress``
    as for ``dardiag.train.trainer.train``."""
    c = config
    device = resolve_device(c.device)
    out = Path(c.out)
    with claim(out) as hold:
        plan = prepare(c)
        if plan.action == "complete":
            outdir.finish(plan)
            return out / LAST
        family = get_family(c.family)
        data = load_training_data(c.data)
        subject = load_diffusers_init(c, device)
        check_matches_subject(data, subject, what=f"the latents in {c.data}")
        outdir.apply(plan)
        hold.keep()
        saved = [plan.found.record.progress if plan.action == "continue" else 0]
        try:
            _loop(c, plan, device, family, data, subject, on_step, saved, report,
                  Watch(c, None, progress, profile_progress))
        except Exception:
            outdir.put_back(plan, step=saved[0])
            raise
        outdir.finish(plan)
    return out / LAST


def _loop(c: TrainConfig, plan: Plan, device, family: Family, data: dict, subject: Subject, on_step, saved_step,
          report, watch: Watch | None = None) -> None:
    out = Path(c.out)
    resume_from = out / LAST if plan.action == "continue" else None
    stored = plan.found.record.data if resume_from else None
    plan.found.record = None
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), _deterministic(device):
        torch.manual_seed(seed_for(c.seed, "init", 0))  # LoRA's A factors
        subject.model.train()
        model, what = prepare_model(subject, c)
        ema = copy.deepcopy(model).requires_grad_(False).eval()
        supplied = subject.make_cond.supplied if subject.make_cond else {}
        if report is not None:
            report(f"{subject.info['class_name']} ({subject.routing}, {subject.spec.depth} blocks) from {c.init}: {what}; "
                   f"loss: {family.description}; {data['x0'].shape[0]} latents from {c.data}"
                   + ("; bfloat16 autocast" if device.type == "cuda" else "")
                   + (f"; conditioning {subject.make_cond.describe()}" if subject.make_cond else ""))
        hook = None
        if c.profile_every:
            from dardiag.adapters.diffusers import diffusers_model_subject  # diffusers is an optional extra

            psubject = diffusers_model_subject(ema, class_name=subject.info["class_name"], raw_config=subject.info["config"],
                                               name=out.name or "train", seed=c.seed, text_tokens=_text_tokens(supplied),
                                               **shape_options(data["x0"]))
            hook = DiffusersProfileHook(c, out / PROFILE_DIR, probe_set(data, c), name=out.name or "train",
                                        subject=psubject)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=c.lr, betas=(0.9, 0.999), weight_decay=0.0)
        start, wall_before = 0, 0.0
        if resume_from is not None:
            start, wall_before = _restore(stored, resume_from, model, ema, opt)
        del stored
        saved = start if resume_from is not None else None

        def loss_at(step: int) -> torch.Tensor:
            x0, noise, x_t, t, y, cond = step_inputs(subject, data, c, family, step, device)
            with _autocast(device):
                pred = subject.call(model, x_t, t, y, cond)  # (N, C_out, [F,] H, W)
            return family.loss(pred, x0, noise, t)  # float32

        def save(step: int, loss: float, wall_s: float, numbered: bool = True) -> None:
            _save(out, c, model, ema, opt, step, loss, wall_s, numbered=numbered)

        run_steps(c, plan, Steps(model, ema, opt, params, loss_at, save, hook, start, wall_before, saved,
                                 trainable_only=True), on_step, saved_step, watch)
    if hook is not None:
        hook.finish()


def _text_tokens(supplied: dict) -> int | None:
    """The text length of supplied sequences (the profile's synthetic ones then match it)."""
    for v in supplied.values():
        if v.dim() == 3:
            return int(v.shape[1])
    return None

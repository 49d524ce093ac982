"""``train(config)``: a small, exactly resumable DiT/SiT training loop.

One loop for both routings and both objectives: the family adapter supplies corruption and loss
(sit: t ~ U(0, 1), velocity MSE; dit: t ~ U{0..999}, epsilon MSE), the model is the reference
``DiT``. On CPU a run killed and resumed from ``OUT/last.pt`` ends bit-identical to an uninterrupted
one: all randomness is a function of (seed, step) (``rng.py``), and a checkpoint holds the model, the
EMA, the optimizer and the step.

Legend: N batch, n training set size, C latent channels, H/W latent side.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from dardiag.checkpoints import atomic_save, checkpoint_dict, save_checkpoint
from dardiag.data import check_matches_model, digits_latents, load_latents
from dardiag.engine.devices import resolve_device
from dardiag.engine.progress import Progress
from dardiag.errors import DardiagError
from dardiag.families import get_family
from dardiag.models.dit import DiT
from dardiag.runs import claim, stop
from dardiag.runs.layout import LAST, PROFILE_DIR, REPLACED
from dardiag.runs.lifecycle import Plan
from dardiag.train import outdir
from dardiag.train import lora, memory
from dardiag.train.config import TrainConfig
from dardiag.train.init import load_init
from dardiag.train.profiling import ProfileHook, probe_inputs
from dardiag.train.rng import batch_indices, generator, seed_for
from dardiag.train.watch import Watch

DIGITS_SPLIT_SEED = 0  # the held-out digits are the same whatever the training seed
RNG_SCHEME = "per step: numpy SeedSequence(seed, stream, step|epoch); see dardiag/train/rng.py"


#################################################################################
#                                   Pieces                                      #
#################################################################################


def load_data(config: TrainConfig) -> tuple[dict, dict]:
    """-> (training latents, held-out latents for the profiling probe)."""
    if config.data == "digits":
        return digits_latents("train", DIGITS_SPLIT_SEED), digits_latents("test", DIGITS_SPLIT_SEED)
    data = load_latents(config.data)
    return data, data  # a user's file has no held-out part; the probe is its first images


def build_model_config(config: TrainConfig, data: dict):
    _, c, h, w = data["x0"].shape
    if h != w:
        raise DardiagError(f"training needs square latents; {config.data} holds {h}x{w}")
    patch = config.size()[3]
    if config.input_size is None and h % patch:
        raise DardiagError(f"the latents in {config.data} are {h}x{w}, not a multiple of --patch {patch}; "
                           f"use a patch size that divides {h}")
    num_classes = int(data["y"].max()) + 1 if "y" in data else 1  # no labels: one class, all y = 0
    mcfg = config.model_config(in_channels=c, input_size=config.input_size or h, num_classes=num_classes)
    check_matches_model(data, mcfg, what=f"the latents in {config.data}")
    return mcfg


def ema_decay(cap: float, updates: int) -> float:
    """EMA warmup (as TensorFlow's ExponentialMovingAverage with num_updates): short runs would
    otherwise keep a large share of the random init in the EMA; the cap applies once reached."""
    return min(cap, (1.0 + updates) / (10.0 + updates))


@torch.no_grad()
def update_ema(ema: DiT, model: DiT, decay: float, *, trainable_only: bool = False) -> None:
    """``trainable_only``: frozen tensors (LoRA's base weights) stay bit-identical to the model's."""
    for e, p in zip(ema.parameters(), model.parameters()):
        if p.requires_grad or not trainable_only:
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)


def lr_at(config: TrainConfig, step: int) -> float:
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    return config.lr


def _draw(config: TrainConfig, family_name: str, step: int, x0_all, y_all, device):
    """Step ``step``'s batch, timesteps and noise; CPU generators, so the draws do not depend on device."""
    n = x0_all.shape[0]
    idx = batch_indices(config.seed, step, config.batch_size, n)  # (N,)
    g = generator(config.seed, "batch", step)
    x0 = x0_all[idx]  # (N, C, H, W)
    t = get_family(family_name).draw_native(config.batch_size, g)  # (N,) dit: 0..999; sit, repa: [0, 1)
    noise = torch.randn(x0.shape, generator=g)  # (N, C, H, W)
    return x0.to(device), y_all[idx].to(device), noise.to(device), t.to(device)


@contextmanager
def _deterministic(device: torch.device):
    # On CUDA, strict mode would also need CUBLAS_WORKSPACE_CONFIG; there it only warns (no bit-exact promise).
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_last(path: Path, device) -> tuple[dict, dict, int]:
    """``OUT/last.pt`` -> (checkpoint dict, stored TrainConfig dict, step); a damaged file is one line."""
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
        stored = obj["train"]["config"]
        step = int(obj["dardiag"]["step"])
        if not isinstance(stored, dict):
            raise TypeError(f"stored config is a {type(stored).__name__}")
    except Exception as e:  # unpickling a damaged file raises anything from KeyError to IndexError
        raise DardiagError(f"cannot resume from {path}: not a complete training checkpoint ({_one_line(e)}); "
                           "copy an intact ckpt_*.pt over it, or pass --force to start the run over") from None
    return obj, stored, step


def prepare(config: TrainConfig) -> Plan:
    """What ``train(config)`` will do with OUT (continue, start, replace, or nothing: already complete);
    checks that OUT is writable and that a run there has the same settings. Changes nothing in OUT, except
    putting back the run an interrupted ``--force`` replaced before writing a checkpoint."""
    device = resolve_device(config.device)
    return outdir.plan(Path(config.out), config, read_last=lambda p: read_last(p, device), diff=config.resume_diff)


def _restore(obj: dict, path: Path, model, ema, opt) -> tuple[int, float]:
    """Load a checked ``read_last`` dict into model/EMA/optimizer; -> (step, wall seconds so far)."""
    try:
        if lora.is_lora(model):  # the frozen base came from --init; the factors and routing from the run
            state = obj["train"]["lora"]
            lora.load_trainable(model, state["model"], str(path))
            lora.load_trainable(ema, state["ema"], str(path), like=model)
        else:
            model.load_state_dict(obj["model"])
            ema.load_state_dict(obj["ema"])
        opt.load_state_dict(obj["opt"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise DardiagError(f"cannot resume from {path}: not a complete training checkpoint ({_one_line(e)})") from None
    return int(obj["dardiag"]["step"]), float(obj["train"].get("wall_s", 0.0))


def _all_finite(*models) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in models for p in m.parameters())


def _diverged(config: TrainConfig, what: str, step: int, saved: int | None, replacing: bool) -> DardiagError:
    """The divergence error; what it says is kept is what ``train`` leaves in OUT."""
    out = Path(config.out)
    clip = "" if config.grad_clip else " or turn --grad-clip on"
    if replacing:
        return DardiagError(f"training diverged at step {step}: {what}; stopped, and the run it was replacing is "
                            f"back in {out} as it was; try a lower --lr (now {config.lr:g}){clip}")
    if saved is None:
        return DardiagError(f"training diverged at step {step}: {what}; stopped, no checkpoint was written; "
                            f"rerun with a lower --lr (now {config.lr:g}){clip}")
    return DardiagError(f"training diverged at step {step}: {what}; stopped, the last good checkpoint "
                        f"({out / LAST}, step {saved}) is kept; to try a lower --lr (now {config.lr:g}){clip}, "
                        f"use another --out, or --force (this run stays in {out / REPLACED} until the new "
                        "one completes)")


def _save(out: Path, config: TrainConfig, model, ema, opt, step: int, loss: float, wall_s: float, *,
          numbered: bool = True) -> None:
    """``ckpt_<step>.pt`` and ``last.pt``; ``numbered=False`` (a stop between two saves): ``last.pt`` only,
    which is all a continued run reads (every draw is a function of the step: it continues bit-identically)."""
    extra = {"opt": opt.state_dict(),
             "train": {"config": config.to_dict(), "rng": RNG_SCHEME, "loss": loss, "wall_s": wall_s}}
    if config.lora:  # plain DiT weights for every reader; the factors to continue on top of --init
        extra["train"]["lora"] = {"model": lora.trainable_state(model), "ema": lora.trainable_state(ema, like=model)}
        obj = checkpoint_dict(model, family=config.family, ema=ema, step=step, extra=extra)
        obj["model"], obj["ema"] = lora.merged_state_dict(model), lora.merged_state_dict(ema)
        for path in ([outdir.ckpt_path(out, step)] if numbered else []) + [out / LAST]:
            atomic_save(obj, path)
        return
    if numbered:
        save_checkpoint(outdir.ckpt_path(out, step), model, family=config.family, ema=ema, step=step, extra=extra)
    save_checkpoint(out / LAST, model, family=config.family, ema=ema, step=step, extra=extra)


#################################################################################
#                                    Loop                                       #
#################################################################################


def train(config: TrainConfig, *, on_step=None, plan: Plan | None = None, report=None, progress=None,
          profile_progress: Progress | None = None) -> Path:
    """Train, checkpointing into ``config.out``; returns the path of ``OUT/last.pt``.

    A run in OUT with the same settings is continued (bit-exactly on CPU), or left alone when it is
    complete; see ``outdir`` for other settings and ``--force``. OUT is held (``dardiag.runs.claim``)
    from the plan to the end, and the plan is made again under that hold: ``plan`` (from
    ``prepare(config)``) only says that the caller checked it. ``on_step(step, loss)`` is called after
    every finished step (tests that simulate a kill). For people: ``report(line)`` gets the opening
    line (what was loaded, the data, the device, what happens to OUT); ``progress(line)`` about 20
    lines a run (loss, time per step, ETA) and one before and after each ``--profile-every`` profile,
    which shows its own minibatches to ``profile_progress``.
    """
    c = config
    device = resolve_device(c.device)
    out = Path(c.out)
    with claim(out) as hold:
        plan = prepare(c)  # under the hold: no other process changed OUT since
        if plan.action == "complete":
            outdir.finish(plan)  # a run replaced by this one, whose finish was interrupted
            return out / LAST
        family = get_family(c.family)
        data, held_out = load_data(c)
        init = load_init(c, device)[0] if c.init else None
        mcfg = init.config if init is not None else build_model_config(c, data)
        if init is not None:
            check_matches_model(data, mcfg, what=f"the latents in {c.data}")
        memory.check_fits(mcfg, c.batch_size, device)  # before OUT changes: a typo must not reach the OOM killer
        outdir.apply(plan)
        hold.keep()
        saved = [plan.found.record.progress if plan.action == "continue" else 0]
        try:
            _loop(c, plan, device, family, data, held_out, mcfg, on_step, saved, init,
                  watch=Watch(c, report, progress, profile_progress))
        except Exception:  # an error (divergence included), not Ctrl-C: that keeps both runs to continue
            outdir.put_back(plan, step=saved[0])
            raise
        outdir.finish(plan)
    return out / LAST


@dataclass
class Steps:
    """What the step loop needs besides the settings: the model, its EMA and optimizer, how step i's loss is
    made (``loss_at``: its batch, forward and loss; the dropout seed and learning rate are set before), how
    a checkpoint is written (``save(step, loss, wall_s, numbered)``), the periodic profile, where it starts."""

    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    params: list
    loss_at: Callable[[int], torch.Tensor]
    save: Callable[..., None]
    hook: object  # ProfileHook or None
    start: int
    wall_before: float
    saved: int | None  # the step of the good OUT/last.pt, if any
    trainable_only: bool = False  # the EMA follows the trainable tensors only (LoRA: the base stays bit-identical)


def run_steps(c: TrainConfig, plan: Plan, r: Steps, on_step, saved_step: list, watch: Watch | None = None) -> None:
    """Steps ``r.start`` .. ``c.steps``: loss, backward, clip, AdamW, EMA, the loss log, the periodic profile,
    checkpoints; a first Ctrl-C / SIGTERM finishes the step and keeps it; divergence stops with what is kept.
    ``watch`` says the progress (loss, time per step, ETA) and the periodic profiles."""
    out = Path(c.out)
    outdir.write_config(out, c.to_dict())
    log = outdir.LossLog(out, keep_until=r.start)
    watch = watch or Watch(c)
    watch.begin(r.start)
    t0 = time.perf_counter()
    loss_value = float("nan")
    saved = r.saved
    halt = stop.current()  # a first Ctrl-C / SIGTERM under `dardiag train`: finish the step, keep it, stop
    try:
        with halt.deferred("this step"):  # the loop checks between steps; a second signal stops at once
            for step in range(r.start, c.steps):
                if halt.requested:
                    if saved != step and _all_finite(r.model, r.ema):
                        r.save(step, loss_value, r.wall_before + time.perf_counter() - t0, numbered=False)
                        saved = saved_step[0] = step
                    halt.check()
                torch.manual_seed(seed_for(c.seed, "dropout", step))  # label dropout's torch.rand
                lr = lr_at(c, step)
                for group in r.opt.param_groups:
                    group["lr"] = lr
                loss = r.loss_at(step)
                done = step + 1
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # stop before the step spreads it into the weights
                    raise _diverged(c, f"the loss is {loss_value}", done, saved, plan.replacing)
                r.opt.zero_grad(set_to_none=True)
                loss.backward()
                if c.grad_clip:
                    torch.nn.utils.clip_grad_norm_(r.params, c.grad_clip)
                r.opt.step()
                if r.trainable_only:
                    update_ema(r.ema, r.model, ema_decay(c.ema, done), trainable_only=True)
                else:
                    update_ema(r.ema, r.model, ema_decay(c.ema, done))
                wall = time.perf_counter() - t0
                if done % c.log_every == 0 or done == c.steps:
                    log.write(done, loss_value, lr, wall)
                profile_s = 0.0
                if r.hook is not None and done % c.profile_every == 0:
                    profile_s = watch.profiled(r.hook, r.ema, done)
                if (c.save_every and done % c.save_every == 0) or done == c.steps:
                    if not _all_finite(r.model, r.ema):  # a finite loss can still overflow the update
                        raise _diverged(c, "the weights are no longer finite", done, saved, plan.replacing)
                    r.save(done, loss_value, r.wall_before + wall)
                    saved = saved_step[0] = done
                watch.step(done, loss_value, profile_s)
                if on_step is not None:
                    on_step(done, loss_value)
    finally:
        log.close()


def _loop(c: TrainConfig, plan: Plan, device, family, data, held_out, mcfg, on_step, saved_step: list,
          init: DiT | None = None, watch: Watch | None = None) -> None:
    out = Path(c.out)
    resume_from = out / LAST if plan.action == "continue" else None
    stored = plan.found.record.data if resume_from else None
    plan.found.record = None  # the weights are loaded once; do not keep a second copy alive
    x0_all = data["x0"]  # (n, C, H, W)
    y_all = data.get("y", torch.zeros(x0_all.shape[0], dtype=torch.long))  # (n,)

    hook = None
    if c.profile_every:
        check_matches_model(held_out, mcfg, what="the profiling probe")
        hook = ProfileHook(c, out / PROFILE_DIR, probe_inputs(held_out, c), name=out.name or "train")

    cuda = [device.index or 0] if device.type == "cuda" else []
    # fork_rng: seeding for dropout must not leak into the caller's global RNG
    with torch.random.fork_rng(devices=cuda), _deterministic(device):
        torch.manual_seed(seed_for(c.seed, "init", 0))  # also LoRA's A factors
        model = DiT(mcfg).to(device) if init is None else init
        if c.lora:
            model = lora.add_lora(model, c.lora)
        ema = copy.deepcopy(model).requires_grad_(False).eval()
        params = [p for p in model.parameters() if p.requires_grad]  # pos_embed is fixed; LoRA: factors, routing
        opt = torch.optim.AdamW(params, lr=c.lr, betas=(0.9, 0.999), weight_decay=0.0)
        start, wall_before = 0, 0.0
        if resume_from is not None:
            start, wall_before = _restore(stored, resume_from, model, ema, opt)
        del stored
        saved = start if resume_from is not None else None  # the step of the good OUT/last.pt, if any
        watch = watch or Watch(c)
        watch.opening(plan, device, data, model, start)
        if hook is not None and start == 0 and init is not None:
            # the starting point of a fine-tune, the figure's "before" (a new model's step 0 is adaLN-Zero:
            # every block the identity and every gradient 0, which says nothing and breaks log axes)
            watch.profiled(hook, ema, 0)
        model.train()  # train mode: the LabelEmbedder drops labels with p = class_dropout

        def loss_at(step: int) -> torch.Tensor:
            x0, y, noise, t = _draw(c, family.name, step, x0_all, y_all, device)
            pred = model(family.corrupt(x0, noise, t), t, y)  # (N, C, H, W)
            return family.loss(pred, x0, noise, t)

        def save(step: int, loss: float, wall_s: float, numbered: bool = True) -> None:
            if numbered:  # the usual call; tests replace _save with one taking these arguments only
                _save(out, c, model, ema, opt, step, loss, wall_s)
            else:
                _save(out, c, model, ema, opt, step, loss, wall_s, numbered=False)

        run_steps(c, plan, Steps(model, ema, opt, params, loss_at, save, hook, start, wall_before, saved,
                                 trainable_only=bool(c.lora)), on_step, saved_step, watch)
    if hook is not None:
        hook.finish()

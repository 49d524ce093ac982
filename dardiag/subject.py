"""A profiled model: the network plus everything the engine must know to drive and hook it.

The engine, hooks, metrics and store never look inside a model: they see a ``Subject``. Adding a model
kind means writing one function that returns a Subject (``dardiag.adapters``: our DiT, diffusers
transformers, any ``nn.Module``). This module is a leaf: producers import it, it imports no producer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from dardiag.families import Family
from dardiag.hooks.edits import Editing
from dardiag.hooks.recorder import Tap


@dataclass(frozen=True)
class SiteSpec:
    """What the engine's collector needs to know about a model's recorded sites, with no reference to its class."""

    depth: int
    taps: tuple[Tap, ...]
    has_sublayers: bool = False  # h_l / v_l taps exist
    routes: dict[int, tuple[int, ...]] = field(default_factory=dict)  # DAR: aggregator l -> sources
    residual: bool = False  # h_l = sum_{i<l} v_i: counterfactual importance is defined


@dataclass
class Subject:
    name: str  # display name in tables and figures
    model: nn.Module
    family: Family
    spec: SiteSpec
    routing: str  # "residual", "dar-static_t-c4", ...
    input_shape: tuple[int, ...]  # (C, H, W) of the latents the model takes; (C, F, H, W) for video
    num_classes: int  # 0 = unconditional / text-conditioned
    call: Callable  # call(model, x_t, t_native, y, cond) -> output (N, >= C, H, W)
    checkpoint: str = ""
    step: int | None = None
    info: dict = field(default_factory=dict)  # detected config, sha256, ...
    # make_cond(N, sample_ids) -> extra conditioning (text embeddings, ...) synthesised per batch
    make_cond: Callable | None = None
    # sample(y, steps, cfg, seed, forward=None) -> x0 (N, C, H, W): the model's own sampler (inputs="generated");
    # forward(i, x, t_native, y) -> output, when given, runs the model at sampler step i (trajectory, caching)
    sample: Callable | None = None
    # sha256 of the file the weights were read from just now (the opener sets it); None: the weights
    # may have changed since any file was read (a model handed over in memory), so their tensors are hashed
    weights_id: str | None = None
    # how whole blocks are skipped or reused (ablation, trajectory caching); None: this model cannot be edited
    editing: Editing | None = None
    # resize(shape): call the model on latents of another shape (C, [F,] H, W) from now on (diffusers
    # classes: a pipeline's sizes); None: the shape is fixed
    resize: Callable | None = None
    # the diffusers pipeline that samples this model (a dardiag.pipelines.PipelineSampler): generated inputs
    # and trajectories along its own loop; None: dardiag's own sampler (``sample``) or none
    pipeline: object | None = None
    # module paths of the blocks, in call order: the units the memory levers act on (dardiag.engine.memory:
    # each recomputed in the backward, each sharded on its own); () = not known
    blocks: tuple[str, ...] = ()

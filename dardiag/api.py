"""``dardiag.profile``: open what the user passed (checkpoint paths, model folders, latents files), then
hand the engine its Subjects and inputs. The engine (``dardiag.engine.sweep.profile``) opens nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from dardiag.adapters.open import DTYPES, open_subject
from dardiag.adapters.options import LoadOptions
from dardiag.data import open_inputs
from dardiag.engine import distributed
from dardiag.engine.config import ProfileConfig
from dardiag.engine.devices import device_name
from dardiag.engine.inputs import GENERATED
from dardiag.engine.memory import check_shard
from dardiag.engine.progress import Progress, as_progress
from dardiag.engine.sweep import profile as profile_subjects
from dardiag.errors import DardiagError
from dardiag.analysis.sanity import attach_notices
from dardiag.pipelines.options import PipelineOptions, attach_pipelines


def _as_list(models) -> list:
    """One model (a path, a Subject, a DiT, a ``(model, info)`` pair) or a list of them."""
    single_pair = isinstance(models, tuple) and len(models) == 2 and not isinstance(models[0], (str, Path, tuple))
    if not isinstance(models, (list, tuple)) or single_pair:
        return [models]
    return list(models)


def profile(models: Sequence | object, *, out: str | Path | None = None, inputs=None, conditioning=None,
            config: ProfileConfig | None = None, load: LoadOptions | None = None,
            names: Sequence[str] | None = None, force: bool = False, resume: bool = False,
            progress: Progress | Callable[[str], None] | None = None, report: Callable[[str], None] | None = None,
            **settings) -> pd.DataFrame:
    """Profile one or more models over a noise-level grid and return the long-form table.

    ``models``: checkpoint files, diffusers model or pipeline folders, ``(model, ModelInfo)`` pairs,
    dardiag ``DiT``s (with ``family=``) or Subjects (one or a list).
    ``inputs``: a latents file (``dardiag latents``), a dict ``{x0, y?, noise?}``, ``"generated"`` (x0
    sampled by the model) or None (seeded synthetic latents, which are not images: a warning says so).
    ``conditioning``: a file from ``dardiag prompts`` (text embeddings) to go with ``inputs`` (or with
    synthetic latents); a text-to-image model given none gets synthetic N(0, 1) embeddings, said in the
    table's ``inputs`` column. A diffusers model opened from a pipeline folder (or given ``pipeline=``)
    samples with that pipeline for ``inputs="generated"`` and ``trajectory``: ``prompts=`` (a file or a
    list; default a built-in list), ``height=``, ``width=``, ``num_frames=`` and ``call={...}`` (any other
    argument of its call) are :class:`dardiag.pipelines.options.PipelineOptions`.
    The measurement settings are a :class:`ProfileConfig` (``config=``), how to open the models a
    :class:`LoadOptions` (``load=``), or the fields of either as keywords (``noise_levels=[0.1, 0.9],
    samples=64, family="sit"``). With ``--dtype bfloat16`` / ``float16`` the weights are read in that
    dtype (no float32 copy) unless ``load.weights_dtype`` says otherwise. ``out``, ``force``,
    ``resume``, ``progress`` and ``report``: see :func:`dardiag.engine.sweep.profile`; loading each
    checkpoint is a step of its own for a ``Progress`` (``progress.loading(path)``).
    """
    load_kw = {k: settings.pop(k) for k in list(settings) if k in LoadOptions.fields()}
    pipe_kw = {k: settings.pop(k) for k in list(settings) if k in PipelineOptions.fields()}
    pipeline = PipelineOptions(**pipe_kw)
    if load is None:
        load = LoadOptions(**load_kw)
    elif load_kw:
        raise DardiagError(f"pass load= or loading keywords, not both (got {', '.join(sorted(load_kw))})")
    if config is None:
        config = ProfileConfig.from_kwargs(**settings)
    elif settings:
        raise DardiagError(f"pass config= or keyword settings, not both (got {', '.join(sorted(settings))})")
    config = config.replace(device=device_name(config.device))  # before any file is read: a bad --device costs no load
    device = distributed.rank_device(config.device)
    if load.shard:  # the process group before any weight is read: each process reads only its rows
        check_shard(config)
        distributed.init_if_needed(config.device)  # the sweep leaves it when done
    watch = as_progress(progress)
    models = _as_list(models)
    if not models:
        raise DardiagError("no model to profile; pass at least one checkpoint")
    weights = load if load.weights_dtype or config.dtype == "float32" else load.replace(weights_dtype=config.dtype)
    given = list(names or [])
    subjects = []
    for i, m in enumerate(models):
        with watch.loading(str(m) if isinstance(m, (str, Path)) else type(m).__name__):
            subjects.append(open_subject(m, weights, device=device, name=given[i] if i < len(given) else None,
                                         seed=config.seed))
    generated = isinstance(inputs, str) and inputs == GENERATED
    attach_pipelines(subjects, pipeline, needed=generated or config.analyses.trajectory, seed=config.seed,
                     steps=config.generate_steps, guidance=config.generate_cfg, device=device,
                     dtype=DTYPES[weights.weights_dtype or "float32"])
    if conditioning is not None:
        if generated:
            raise DardiagError("--cond goes with latents files or synthetic latents, not --inputs generated")
        if inputs is not None and not isinstance(inputs, (str, Path)):
            raise DardiagError("pass conditioning in the inputs dict itself when inputs are in memory")
        inputs = open_inputs(inputs, conditioning=conditioning)
    elif isinstance(inputs, (str, Path)) and str(inputs) != GENERATED:
        inputs = open_inputs(inputs)
    df = profile_subjects(subjects, out=out, inputs=inputs, config=config, names=names, force=force,
                          resume=resume, progress=watch if progress is not None else None, report=report,
                          opened=load.compared())
    return attach_notices(df)  # df.attrs["dardiag_notices"], in memory too (read_profile attaches them)

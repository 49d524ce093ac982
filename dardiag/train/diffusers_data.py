"""The training data of a diffusers fine-tune: latents in the transformer's layout with their conditioning.

One torch (or .npz) file, as ``dardiag latents`` + ``dardiag prompts`` (and the pipeline's
``dardiag generate``) write it::

    {"x0": (N, C, H, W) or (N, C, F, H, W), "meta": {...},
     "encoder_hidden_states": (N, L, D_text), "pooled_projections": (N, D_pool), ...   # the class's names
     "encoder_hidden_states_mask": (N, L) 0/1, "y": (N,) class labels, "noise": like x0}  # optional

Row i of every tensor belongs to latent i. Conditioning the class takes but the file lacks is drawn
N(0, 1) per sample (as the profile does), and the run's first line says so.

Legend: N latents, C channels, F frames, H/W latent side.
"""

from __future__ import annotations

import torch

from dardiag.data import load_latents
from dardiag.errors import DardiagError
from dardiag.subject import Subject
from dardiag.train.config import TrainConfig
from dardiag.train.rng import seed_for

NOT_CONDITIONING = ("x0", "y", "noise", "meta")


def load_training_data(path: str) -> dict:
    """The file, strictly (``dardiag.data.load_latents``: shapes, finite values, one row per latent)."""
    return load_latents(path)


def conditioning(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in NOT_CONDITIONING}


def check_matches_subject(data: dict, subject: Subject, *, what: str) -> None:
    """One line if ``data`` cannot feed ``subject``: the latents' rank and channels, its conditioning's names
    and shapes (they are handed to its conditioning here), labels, and one forward of the first latent."""
    x0 = data["x0"]
    want = subject.input_shape  # (C, H, W) or (C, F, H, W)
    if x0.dim() != len(want) + 1 or x0.shape[1] != want[0]:
        layout = "N, C, F, H, W" if len(want) == 4 else "N, C, H, W"
        raise DardiagError(f"{what} have shape {list(x0.shape)}; {subject.info.get('class_name')} takes ({layout}) "
                           f"latents with C = {want[0]}")
    cond = conditioning(data)
    if cond:
        if subject.make_cond is None:
            raise DardiagError(f"{what} hold {', '.join(cond)}, but {subject.name} takes no conditioning besides "
                               "class labels")
        subject.make_cond.supply(cond)
    if "y" in data and subject.num_classes and int(data["y"].max()) >= subject.num_classes:
        raise DardiagError(f"{what} hold label {int(data['y'].max())} but the model has {subject.num_classes} classes")
    p = next(subject.model.parameters())
    t = subject.family.to_native(torch.full((1,), 0.5, dtype=torch.float64))
    t = (t.round().long() if subject.family.integer_time else t.float()).to(p.device)
    cond1 = subject.make_cond(1, torch.arange(1)) if subject.make_cond else None
    try:
        with torch.no_grad():
            subject.call(subject.model, x0[:1].to(p.device), t, torch.zeros(1, dtype=torch.long, device=p.device),
                         {k: v.to(p.device) for k, v in cond1.items()} if cond1 else None)
    except DardiagError:
        raise
    except Exception as e:  # the class's own shape checks
        raise DardiagError(f"{subject.info.get('class_name')} cannot take {what} of shape {list(x0.shape[1:])} "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:140]})") from None


def shape_options(x0: torch.Tensor) -> dict:
    """The loading options under which a Subject takes latents shaped like ``x0`` (the profile checks it)."""
    H, W = x0.shape[-2:]
    if H != W:
        raise DardiagError(f"--profile-every profiles square latents; the data's are {H}x{W}")
    return {"input_size": int(H), **({"frames": int(x0.shape[2])} if x0.dim() == 5 else {})}


def probe_set(data: dict, config: TrainConfig) -> dict:
    """The periodic profile's fixed inputs: the first ``profile_samples`` latents with their conditioning,
    noise fixed by the seed."""
    n = min(config.profile_samples, data["x0"].shape[0])
    x0 = data["x0"][:n]
    probe = {"x0": x0, "meta": {"source": f"the first latents of {config.data} ({n})"}}
    for k, v in data.items():
        if k not in ("x0", "meta"):
            probe[k] = v[:n]
    if "noise" not in probe:
        g = torch.Generator().manual_seed(seed_for(config.seed, "probe", 0))
        probe["noise"] = torch.randn(x0.shape, generator=g)
    return probe

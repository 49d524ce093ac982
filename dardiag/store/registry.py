"""Every metric dardiag writes, declared once: name, meaning, axis label, scale, index columns, error.

The ``metric`` column of the table holds one of these names. The store validates rows against this
registry (a row of ``cka`` must fill ``block``, ``other_block`` and ``noise_level``), the plots take
their labels and log scales from it, and a test keeps the README's metric table in step with it.
Definitions: the diagnostics contract (``shared/design/diagnostics.md``), sections 3-6 and 8. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

#: how a metric's ``stderr`` is defined (diagnostics.md section 8)
STDERR_KINDS = {
    "images": "sd over images of the per-image value / sqrt(N)",
    "jackknife": "delete-one-minibatch jackknife of the HSIC ratio",
    "folds": "sd over the pair-disjoint held-out folds / sqrt(folds)",
    "none": "undefined (NaN): a max or a ratio of sums over all images",
}

#: the timestep probe needs this many (x0, noise) pairs (train, validation and test parts): fewer write no rows
PROBE_MIN_PAIRS = 8


@dataclass(frozen=True)
class Metric:
    name: str
    meaning: str  # one line, as in the README's table
    label: str  # axis label (matplotlib mathtext)
    keys: tuple[str, ...]  # index columns every row of this metric fills
    log: bool = False  # spans orders of magnitude: log axes and log colour scales
    stderr: str = "images"  # one of STDERR_KINDS
    values: str | None = None  # list column holding a map ("token_values", "channel_values")
    signed: bool = False  # may be negative: diverging colour scales centred at 0
    depth: bool = False  # every row fills block or sublayer (states z_k, h_l and v_l alike)

    def __post_init__(self):
        if self.stderr not in STDERR_KINDS:
            raise ValueError(f"{self.name}: stderr must be one of {sorted(STDERR_KINDS)}, got {self.stderr!r}")


_Z = ("site", "block", "noise_level")  # a block state z_k at a noise level
_SUB = ("site", "sublayer", "noise_level")  # a sublayer input h_l / output v_l (or a DAR aggregator)
_STATE = ("site", "noise_level")  # any recorded state: z_k (block) or h_l / v_l (sublayer)
_STEP = ("site", "block", "sampler_step", "noise_level")  # block k at step i of the model's sampler
_CALL = ("sampler_step", "noise_level")  # the whole transformer call at step i of a pipeline's loop

_ALL = (
    Metric("act_rms", "mean over images and tokens of the channel RMS of z_k",
           r"activation RMS of $z_k$", _Z, log=True),
    Metric("grad_rms", "the same statistic of dL/dz_k; L is a mean, so it scales with 1/B",
           r"gradient RMS of $\partial L/\partial z_k$", _Z, log=True),
    Metric("cos_prev", "mean over images and tokens of cos(z_{k-1}, z_k), k >= 1",
           r"$\cos(z_{k-1}, z_k)$", _Z, signed=True),
    Metric("cka", "unbiased minibatch linear CKA(z_block, z_other_block), may be negative",
           "linear CKA (unbiased)", ("site", "block", "other_block", "noise_level"),
           stderr="jackknife", signed=True),
    Metric("h_rms", "channel RMS of the sublayer input h_l", r"sublayer input RMS of $h_l$", _SUB,
           log=True),
    Metric("v_rms", "channel RMS of the gated sublayer output v_l", r"sublayer output RMS of $v_l$",
           _SUB, log=True),
    Metric("route_alpha", "DAR weight alpha_{source -> sublayer}, mean over images and tokens",
           r"routing weight $\alpha_{i\to l}$", ("site", "sublayer", "source", "noise_level")),
    Metric("route_entropy", "entropy (nats) of the DAR weights over sources, mean over images and tokens",
           "routing entropy (nats)", _SUB),
    Metric("route_importance", "residual models: counterfactual gate gradient dL/dg_{source -> sublayer}",
           r"importance $\partial L/\partial g_{i\to l}$", ("site", "sublayer", "source", "noise_level"),
           signed=True),
    Metric("probe_r2", "held-out R^2 of a ridge probe predicting the noise level from a pooled state",
           r"probe $R^2$ (noise level)", ("site",), stderr="folds", signed=True),
    Metric("token_act_rms", "per-token act_rms map in token_values; value = its mean",
           r"token activation RMS of $z_k$", _Z, log=True, values="token_values"),
    Metric("token_grad_rms", "per-token grad_rms map in token_values; value = its mean",
           r"token gradient RMS of $\partial L/\partial z_k$", _Z, log=True, values="token_values"),
    Metric("loss", "the family's simple denoising loss, mean squared error", "denoising loss (MSE)",
           ("noise_level",), log=True),
    Metric("act_absmax", "max of abs(z) over images, tokens and channels", r"max $|z|$", _STATE, depth=True, log=True,
           stderr="none"),
    Metric("act_kurtosis", "mean(z^4) / mean(z^2)^2 over all entries, not centred; 3 for a Gaussian",
           "kurtosis (3 = Gaussian)", _STATE, depth=True, log=True, stderr="none"),
    Metric("channel_top_share", "share of sum(z^2) held by the top ceil(d/100) channels",
           "top-1% channel share of energy", _STATE, depth=True, stderr="none"),
    Metric("token_top_share", "share of sum(z^2) held by the top ceil(T/100) token positions",
           "top-1% token share of energy", _STATE, depth=True, stderr="none"),
    Metric("channel_act_rms", "per-channel RMS over images and tokens in channel_values; value = RMS of the state",
           r"channel RMS of $z$", _STATE, depth=True, log=True, stderr="none", values="channel_values"),
    # along the model's own sampler (--trajectory): step i against step i - 1, per image
    Metric("step_rel_change", "norm(z_k(i) - z_k(i-1)) / norm(z_k(i-1)) between sampler steps i-1 and i, per image",
           r"step change $\|z_k(i) - z_k(i-1)\| / \|z_k(i-1)\|$", _STEP, log=True),
    Metric("step_cos", "cos(z_k(i-1), z_k(i)) between sampler steps, mean over tokens",
           r"$\cos(z_k(i-1), z_k(i))$", _STEP, signed=True),
    Metric("delta_rel_change", "step_rel_change of block k's contribution (residual z_k - z_{k-1}, DAR its sublayer outputs)",
           r"contribution step change of block $k$", _STEP, log=True),
    Metric("cache_error", "relative change of the prediction at step i when block k reuses its contribution of step i-1",
           r"cache error $\|\Delta \hat{y}\| / \|\hat{y}\|$", _STEP, log=True),
    # what caching methods calibrate on, per pipeline call (--trajectory of a pipeline); each row's
    # sample_values holds every sample's own value (fits and folds over prompts)
    Metric("mag_ratio", "MagCache's ratio: mean over tokens of norm(r(i)) / norm(r(i-1)), r = z_D - z_0 (the block "
           "stack's output minus its input)", r"magnitude ratio $\|r(i)\| / \|r(i-1)\|$", _CALL,
           values="sample_values"),
    Metric("first_block_change", "FirstBlockCache's signal: mean|r_1(i) - r_1(i-1)| / mean|r_1(i-1)|, r_1 = z_1 - z_0",
           "first-block residual change", _CALL, log=True, values="sample_values"),
    Metric("modulated_input_change", "TeaCache's signal: relative L1 change of the first block's attention input "
           "(its modulated, normalised image stream)", "modulated input change", _CALL, log=True,
           values="sample_values"),
    Metric("output_change", "relative L1 change of the transformer's prediction between steps i-1 and i",
           "output change", _CALL, log=True, values="sample_values"),
    # blocks removed (--ablation), on the sweep's inputs, noise and timesteps
    Metric("ablate_dloss", "increase of the loss when block k is skipped (residual z_k = z_{k-1}, DAR its outputs leave every softmax)",
           r"loss increase, block $k$ skipped", ("site", "block", "noise_level"), signed=True),
    Metric("ablate_rel_out", "norm(pred with block k skipped - pred) / norm(pred)",
           r"output change, block $k$ skipped", ("site", "block", "noise_level"), log=True),
)

METRICS: dict[str, Metric] = {m.name: m for m in _ALL}


def metric(name: str) -> Metric:
    """The registered metric ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def metric_label(name: str) -> str:
    """Axis label of a metric (its name when it is not registered: hand-built tables still plot)."""
    m = METRICS.get(name)
    return m.label if m else name


def is_log(name: str) -> bool:
    m = METRICS.get(name)
    return bool(m and m.log)

"""``--ablation``: is a block that looks redundant actually removable? Each block skipped in turn.

At one noise level, on the sweep's own minibatches (the same x0, noise and timestep as act_rms, cos_prev
and CKA, so the maps line up cell for cell), for every block k = 1..D and image j:

* ``ablate_dloss`` = L_j(block k skipped) - L_j, the increase of the family's simple loss (the one the
  sweep differentiates; negative where the block hurt that image);
* ``ablate_rel_out`` = ||pred_j(block k skipped) - pred_j|| / ||pred_j|| over the prediction channels.

"Skipped" is the Subject's skip edit (``dardiag.hooks.edits``): residual z_k = z_{k-1}; DAR the block's
sublayer outputs leave every later softmax. Each value is a mean over images with its standard error
(diagnostics.md section 8). Cost: D + 1 forward passes per minibatch, no backward (the first is the
unedited reference, computed here without gradients rather than taken from the sweep's pass).

Legend: N images, C channels, D depth.
"""

from __future__ import annotations

from typing import Sequence

import torch

from dardiag.engine import distributed
from dardiag.engine.collector import add_per_image, mean_and_stderr
from dardiag.engine.config import Analyses
from dardiag.engine.inputs import Inputs, noisy_batch
from dardiag.errors import DardiagError
from dardiag.hooks.edits import BlockEdit
from dardiag.metrics import relative_change
from dardiag.subject import SiteSpec, Subject


def check_ablation(subject: Subject) -> None:
    if subject.editing is None:
        raise DardiagError(f"--ablation needs a model whose blocks can be skipped; {subject.name} "
                           f"({subject.routing}) has no block editing")


class AblationCollector:
    """Per-image cells [D, 3] of both metrics; the same state / restored / merge protocol as
    ``LevelCollector``, so ``distributed.reduce_collector`` merges it exactly."""

    def __init__(self, spec: SiteSpec, analyses: Analyses, device: torch.device | str = "cpu"):
        self.spec, self.an, self.device = spec, analyses, torch.device(device)
        D = spec.depth
        self.sums = {k: torch.zeros(D, 3, dtype=torch.float64, device=self.device) for k in ("dloss", "rel_out")}

    def add(self, k: int, dloss: torch.Tensor, rel_out: torch.Tensor) -> None:
        add_per_image(self.sums["dloss"][k - 1], dloss)
        add_per_image(self.sums["rel_out"][k - 1], rel_out)

    def state(self) -> dict:
        return {"sums": {k: v.detach().cpu().clone() for k, v in self.sums.items()}}

    @classmethod
    def restored(cls, spec: SiteSpec, analyses: Analyses, state: dict, device="cpu") -> "AblationCollector":
        col = cls(spec, analyses, device)
        col.sums = {k: v.to(col.device) for k, v in state["sums"].items()}
        return col

    def merge(self, other: "AblationCollector") -> None:
        for k, v in other.sums.items():
            self.sums[k] = self.sums[k] + v.to(self.device)

    def rows(self) -> list[dict]:
        out = []
        for key, metric in (("dloss", "ablate_dloss"), ("rel_out", "ablate_rel_out")):
            for i, cell in enumerate(self.sums[key].cpu()):
                if cell[2] == 0:
                    continue
                value, se = mean_and_stderr(cell)
                out.append(dict(metric=metric, site="z", block=i + 1, value=value, stderr=se, n_samples=int(cell[2])))
        return out


@torch.no_grad()
def run_ablation(subject: Subject, inputs: Inputs, t_native: float, *, batches: Sequence[slice], analyses: Analyses,
                 device, dtype=torch.float32) -> AblationCollector:
    """Every block of ``subject`` skipped in turn on the minibatches ``batches`` at ``t_native``."""
    check_ablation(subject)
    model, fam, C = subject.model, subject.family, subject.input_shape[0]
    col = AblationCollector(subject.spec, analyses, device)
    autocast = dict(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32)
    for sl in batches:
        x0, noise, y, t, x_t = noisy_batch(inputs, sl, t_native, fam, device)  # x_t (N, C, H, W)
        cond = subject.make_cond(x0.shape[0], torch.arange(sl.start, sl.stop)) if subject.make_cond else None

        def run():
            with torch.autocast(**autocast):
                out = subject.call(model, x_t, t, y, cond)  # (N, C_out, H, W)
            return out[:, :C], fam.loss_per_image(out, x0, noise, t)  # (N, C, H, W), (N,)

        pred, loss = run()
        for k in range(1, subject.spec.depth + 1):
            with subject.editing.edit({k: BlockEdit()}):
                pred_k, loss_k = run()
            col.add(k, loss_k.double() - loss.double(), relative_change(pred_k, pred))
    return col


def ablation_rows(subject: Subject, inputs: Inputs, t_native: float, *, batches: Sequence[slice], analyses: Analyses,
                  device, dtype=torch.float32) -> list[dict]:
    """The level unit's ablation rows: this process' minibatches, merged over processes."""
    col = run_ablation(subject, inputs, t_native, batches=batches, analyses=analyses, device=device, dtype=dtype)
    return distributed.reduce_collector(col).rows()

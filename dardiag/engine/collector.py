"""Streaming statistics of one (model, noise level) unit, fed by the recorder's hooks.

Everything is reduced on the fly into fixed-size float64 sums (``self.sums``, a dict of tensors whose
keys and shapes depend only on the model's layout), so partial statistics of several processes merge
key by key (:meth:`LevelCollector.merge`). No activation outlives its minibatch: states are held from
their forward until the minibatch's backward ends, which autograd does anyway.

Uncertainty (diagnostics.md section 8): a per-image average keeps three numbers per cell, the sums of
s_i and s_i^2 over images and their count N, where s_i is the image's own value (its mean over tokens,
its own loss, its own gate gradient); ``rows()`` gives value = mean and stderr = sd(ddof 1) / sqrt(N).
CKA keeps each minibatch's HSIC terms for the jackknife. Outliers (section 9) are sums and maxima.

Definitions: shared/design/diagnostics.md — §3 act_rms / grad_rms / cos_prev, §4 unbiased minibatch
CKA, §5 routing weights and counterfactual importance, §6 pooled states for the timestep probe, §8
standard errors, §9 outliers. The maths are ``dardiag.metrics``; here they are only accumulated.
Legend: N images, T tokens, D channels, P = depth + 1 block states, L = 2 * depth sublayers, S sources.
"""

from __future__ import annotations

import math

import torch

from dardiag.engine.config import Analyses
from dardiag.errors import DardiagError
from dardiag.metrics import (
    CKAAccumulator,
    cka_rows,
    energy_sums,
    kurtosis,
    route_entropy,
    rms_from_energy,
    route_weights,
    source_importance,
    token_cosine,
    token_rms,
    top_share,
)
from dardiag.subject import SiteSpec

MAX_KEYS = ("max_",)  # sums merged by maximum, not addition


def mean_and_stderr(cell: torch.Tensor) -> tuple[float, float]:
    """(mean, standard error) from a per-image cell [sum s_i, sum s_i^2, N]; stderr NaN for N < 2."""
    total, squares, n = (float(v) for v in cell)
    if n == 0:
        return float("nan"), float("nan")
    mean = total / n
    if n < 2:
        return mean, float("nan")
    var = max(squares - n * mean * mean, 0.0) / (n - 1)  # rounding can leave a tiny negative
    return mean, math.sqrt(var / n)


def add_per_image(cell: torch.Tensor, s: torch.Tensor) -> None:
    """Add per-image values ``s`` [..., N] into per-image cells ``cell`` [..., 3] (sum, sum of squares, count)."""
    s = s.detach().to(torch.float64)
    cell[..., 0] += s.sum(dim=-1)
    cell[..., 1] += s.square().sum(dim=-1)
    cell[..., 2] += s.shape[-1]


class LevelCollector:
    """Accumulates one unit's statistics across minibatches; ``rows()`` turns them into table rows."""

    def __init__(self, spec: SiteSpec, analyses: Analyses, device: torch.device | str = "cpu"):
        self.spec, self.an, self.device = spec, analyses, torch.device(device)
        P, L = spec.depth + 1, 2 * spec.depth
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=self.device)  # noqa: E731
        # per-image cells [..., 3] = (sum s_i, sum s_i^2, images)
        self.sums: dict[str, torch.Tensor] = {"act": z(P, 3), "grad": z(P, 3), "cos": z(P, 3), "loss": z(3)}
        self.do_sublayers = spec.has_sublayers and analyses.sublayers
        if self.do_sublayers:
            self.sums.update(h_rms=z(L + 1, 3), v_rms=z(L + 1, 3))
        self.do_alpha = bool(spec.routes) and analyses.routes
        self.do_importance = spec.residual and spec.has_sublayers and analyses.routes
        if self.do_alpha:
            for l, srcs in spec.routes.items():
                self.sums[f"alpha_{l}"] = z(len(srcs), 3)
                self.sums[f"entropy_{l}"] = z(3)
        if self.do_importance:
            for l in range(1, L + 1):  # sources 0..l-1 (sublayer 1 reads only v_0: kept too)
                self.sums[f"importance_{l}"] = z(l, 3)
        self.cka = None
        if analyses.cka:
            self.cka = CKAAccumulator(P, max_rows=analyses.cka_max_rows, device=self.device,
                                      gram_dtype=getattr(torch, analyses.cka_gram_dtype), keep_terms=True)
        self.probe_feats: dict[str, list[torch.Tensor]] = {}
        self.probe_ids: list[torch.Tensor] = []
        self._batch: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ accumulation
    def _add(self, key: str, index, s: torch.Tensor) -> None:
        """Add per-image values ``s`` [..., N] into the cell(s) ``self.sums[key][index]``."""
        add_per_image(self.sums[key] if index is None else self.sums[key][index], s)

    def _lazy(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A sum whose shape is known only at the first minibatch (tokens T, channels D)."""
        if key not in self.sums:
            self.sums[key] = torch.zeros(*shape, dtype=torch.float64, device=self.device)
        return self.sums[key]

    def _rms(self, kind: str, i: int, x: torch.Tensor) -> torch.Tensor:
        """Per-token RMS of state ``kind_i`` [N, T, D] -> [N, T]; with outliers on, the same squares feed
        the energy sums of diagnostics.md §9 (channel / token sums of x^2, sum of x^4, max |x|, count),
        from which rows take the shares, kurtosis and max at the end."""
        if not self.an.outliers:
            return token_rms(x)
        e = energy_sums(x)
        n = self.spec.depth + 1 if kind == "z" else 2 * self.spec.depth + 1
        self._lazy(f"chan_{kind}", (n, e["channel"].numel()))[i] += e["channel"]
        self._lazy(f"tok_{kind}", (n, e["token"].numel()))[i] += e["token"]
        self._lazy(f"m4_{kind}", (n,))[i] += e["fourth"]
        self._lazy(f"entries_{kind}", (n,))[i] += e["count"]
        mx = self._lazy(f"max_{kind}", (n,))
        mx[i] = torch.maximum(mx[i], e["absmax"])
        return rms_from_energy(e["per_token"], x.shape[-1])

    # ------------------------------------------------------------------ hooks
    def begin_batch(self, x_t: torch.Tensor, sample_ids: torch.Tensor) -> None:
        self._batch = {}
        if self.an.probe:
            self.probe_ids.append(sample_ids.cpu())
            pooled = x_t.detach().flatten(2).mean(-1)  # (N, C): raw x_t pooled over positions
            self.probe_feats.setdefault("x_t", []).append(pooled.float().cpu())

    def on_forward(self, name: str, x: torch.Tensor) -> None:
        kind, idx = name.split("_")
        i = int(idx)
        if kind == "z":
            xd = x.detach()
            r = self._rms("z", i, xd)  # (N, T)
            self._add("act", i, r.mean(dim=1))
            if i > 0 and f"z_{i - 1}" in self._batch:
                self._add("cos", i, token_cosine(self._batch[f"z_{i - 1}"], xd).mean(dim=1))
            if self.an.token_maps:
                self._lazy("tokmap_act", (self.spec.depth + 1, r.shape[1]))[i] += r.sum(0, dtype=torch.float64)
            self._batch[name] = xd
            if self.an.probe:
                self.probe_feats.setdefault(name, []).append(xd.float().mean(1).cpu())  # (N, D)
        elif kind in ("h", "v") and self.do_sublayers:
            xd = x.detach()
            self._add(f"{kind}_rms", i, self._rms(kind, i, xd).mean(dim=1))
            if kind == "h" and self.an.probe:
                self.probe_feats.setdefault(name, []).append(xd.float().mean(1).cpu())
            if kind == "v" and self.do_importance:
                self._batch[name] = xd
        elif kind == "alpha" and self.do_alpha:
            a = x.detach().to(torch.float64)  # (S, N, T)
            self._add(f"alpha_{i}", None, route_weights(a, per_image=True))  # (S, N)
            self._add(f"entropy_{i}", None, route_entropy(a, per_image=True))  # (N,)

    def on_backward(self, name: str, grad: torch.Tensor) -> None:
        kind, idx = name.split("_")
        i = int(idx)
        if kind == "z":
            r = token_rms(grad)  # (N, T)
            self._add("grad", i, r.mean(dim=1))
            if self.an.token_maps:
                self._lazy("tokmap_grad", (self.spec.depth + 1, r.shape[1]))[i] += r.sum(0, dtype=torch.float64)
        elif kind == "h" and self.do_importance:
            # h_l = sum_{i<l} v_i in a residual model (v_0 = z_0): dL/dg_{i->l} = <dL/dh_l, v_i>. L of this
            # minibatch is the mean of its N images' losses, so image j's own gate gradient dL_j/dg is
            # N <grad_j, v_i,j>: the value is then B-independent (unlike grad_rms)
            srcs = [self._batch["z_0"]] + [self._batch[f"v_{j}"] for j in range(1, i)]
            self._add(f"importance_{i}", None, source_importance(grad, srcs, per_image=True) * grad.shape[0])
            # the gradients of h_l arrive from the last sublayer down (h_l feeds h_{l+1}), so no later one reads
            # v_{i-1}: dropped now, the backward's share of the kept outputs shrinks as it goes
            self._batch.pop(f"v_{i - 1}", None)

    def end_batch(self, loss_per_image: torch.Tensor) -> None:
        """After the backward pass: fold this minibatch's states into the CKA sums, add the losses.

        CKA runs here rather than after the forward because autograd has freed the activations by
        now: the Gram tile then never adds to the forward+backward peak (DiT-XL/2, 4 images: 0.4 GiB).
        The sublayer outputs kept for the routing importance are dropped before it: with checkpointed
        blocks nothing else holds them, and this phase is then the minibatch's peak.
        """
        self._batch = {k: v for k, v in self._batch.items() if k.startswith("z_")}  # the sublayer outputs go first
        if self.cka is not None:
            P = self.spec.depth + 1
            self.cka.update([cka_rows(self._batch[f"z_{k}"], self.an.cka_rows) for k in range(P)])
        self._add("loss", None, loss_per_image.detach().reshape(-1))
        self._batch = {}

    # ------------------------------------------------------------------ merging (several processes)
    def state(self) -> dict:
        """Everything :meth:`rows` needs, as CPU tensors: the sums and the CKA accumulator's state."""
        return {"sums": {k: v.detach().cpu().clone() for k, v in self.sums.items()},
                "cka": self.cka.state() if self.cka is not None else None}

    @classmethod
    def restored(cls, spec: SiteSpec, analyses: Analyses, state: dict, device="cpu") -> "LevelCollector":
        col = cls(spec, analyses, device)
        col.sums = {k: v.to(col.device) for k, v in state["sums"].items()}
        if col.cka is not None:
            col.cka.load_state(state["cka"])
        return col

    def merge(self, other: "LevelCollector") -> None:
        """Add another collector's statistics (the same model and analyses, other minibatches) into this
        one: sums add, maxima take the maximum, CKA accumulators merge through their own merge."""
        if set(other.sums) != set(self.sums) or any(other.sums[k].shape != v.shape for k, v in self.sums.items()):
            raise DardiagError("processes hold statistics of different layouts; every process must profile the "
                               "same model with the same options")
        for k, v in other.sums.items():
            v = v.to(self.device)
            self.sums[k] = torch.maximum(self.sums[k], v) if k.startswith(MAX_KEYS) else self.sums[k] + v
        if self.cka is not None:
            self.cka.merge(other.cka)

    # ------------------------------------------------------------------ results
    def rows(self) -> list[dict]:
        """Long-form rows (metric, site, block, other_block, sublayer, source, value, stderr, n_samples)."""
        s = {k: v.cpu() for k, v in self.sums.items()}
        n = int(s["loss"][2])
        out: list[dict] = []

        def row(metric, cell=None, *, value=None, stderr=float("nan"), **kw):
            if cell is not None:
                if cell[2] == 0:
                    return
                value, stderr = mean_and_stderr(cell)
            out.append(dict(metric=metric, value=float(value), stderr=float(stderr), n_samples=n, **kw))

        row("loss", s["loss"])
        P, L = self.spec.depth + 1, 2 * self.spec.depth
        for k in range(P):
            row("act_rms", s["act"][k], site="z", block=k)
            if k > 0:
                row("cos_prev", s["cos"][k], site="z", block=k)
            row("grad_rms", s["grad"][k], site="z", block=k)
        for key, cells, metric in (("tokmap_act", "act", "token_act_rms"), ("tokmap_grad", "grad", "token_grad_rms")):
            if key in s:
                for k in range(P):
                    vals = (s[key][k] / n).float()
                    _, se = mean_and_stderr(s[cells][k])  # the map's mean is act_rms / grad_rms of the block
                    row(metric, value=vals.mean(), stderr=se, site="z", block=k, token_values=vals.tolist())
        if self.do_sublayers:
            for l in range(1, L + 1):
                row("h_rms", s["h_rms"][l], site="h", sublayer=l)
                row("v_rms", s["v_rms"][l], site="v", sublayer=l)
        if self.do_alpha:
            for l, srcs in self.spec.routes.items():
                for src, cell in zip(srcs, s[f"alpha_{l}"]):
                    row("route_alpha", cell, site="alpha", sublayer=l, source=src)
                row("route_entropy", s[f"entropy_{l}"], site="alpha", sublayer=l)
        if self.do_importance:
            for l in range(1, L + 1):
                for src, cell in enumerate(s[f"importance_{l}"]):
                    row("route_importance", cell, site="h", sublayer=l, source=src)
        if self.cka is not None and self.cka.count:
            m, se = self.cka.matrix().cpu(), self.cka.stderr()
            for i in range(P):
                for j in range(P):
                    row("cka", value=m[i, j], stderr=se[i, j], site="z", block=i, other_block=j,
                        cka_rows=self.an.cka_rows)
        for kind in ("z", "h", "v"):
            if f"chan_{kind}" in s:
                out += self._outlier_rows(kind, s, n)
        return out

    def _outlier_rows(self, kind: str, s: dict, n: int) -> list[dict]:
        chan, tok = s[f"chan_{kind}"], s[f"tok_{kind}"]
        rows = []
        for i in range(chan.shape[0]):
            if s[f"entries_{kind}"][i] == 0:
                continue  # no such state (h_0, v_0)
            where = {"site": kind, "block" if kind == "z" else "sublayer": i}
            total = float(chan[i].sum())
            entries = float(s[f"entries_{kind}"][i])
            rows += [
                dict(metric="act_absmax", value=float(s[f"max_{kind}"][i]), **where),
                dict(metric="act_kurtosis", value=kurtosis(total, s[f"m4_{kind}"][i], entries), **where),
                dict(metric="channel_top_share", value=top_share(chan[i]), **where),
                dict(metric="token_top_share", value=top_share(tok[i]), **where),
            ]
            if self.an.channel_maps:
                per_channel = (chan[i] / (entries / chan.shape[1])).sqrt().float()  # (D,) RMS over N*T entries
                rows.append(dict(metric="channel_act_rms", value=math.sqrt(total / entries),
                                 channel_values=per_channel.tolist(), **where))
        return [dict(r, stderr=float("nan"), n_samples=n) for r in rows]

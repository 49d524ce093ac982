"""Streaming statistics of one (model, noise level) unit, fed by the recorder's hooks.

Everything is reduced on the fly into fixed-size float64 sums (``self.sums``, a dict of tensors whose
keys and shapes depend only on the model's layout, so partial sums from several processes add up
key by key). No activation outlives its minibatch: states are held from their forward until the
minibatch's backward ends, which autograd does anyway.

Definitions: shared/design/diagnostics.md — §3 act_rms / grad_rms / cos_prev, §4 unbiased minibatch
CKA, §5 routing weights and counterfactual importance, §6 pooled states for the timestep probe.
Legend: N images, T tokens, D channels, P = depth + 1 block states, L = 2 * depth sublayers.
"""

from __future__ import annotations

import torch

from dardiag.engine.config import Analyses
from dardiag.errors import DardiagError
from dardiag.metrics import (
    CKAAccumulator,
    cka_rows,
    route_entropy,
    route_weights,
    source_importance,
    token_cosine,
    token_rms,
)
from dardiag.subject import SiteSpec


class LevelCollector:
    """Accumulates one unit's statistics across minibatches; ``rows()`` turns them into table rows."""

    def __init__(self, spec: SiteSpec, analyses: Analyses, device: torch.device | str = "cpu"):
        self.spec, self.an, self.device = spec, analyses, torch.device(device)
        P, L = spec.depth + 1, 2 * spec.depth
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=self.device)  # noqa: E731
        self.sums: dict[str, torch.Tensor] = {
            "act": z(P), "grad": z(P), "cos": z(P), "pairs": z(P), "grad_pairs": z(P),
            "loss": z(()), "images": z(()),
        }
        if spec.has_sublayers and analyses.sublayers:
            self.sums.update(h_rms=z(L + 1), v_rms=z(L + 1), sub_pairs=z(L + 1))
        self.do_alpha = bool(spec.routes) and analyses.routes
        self.do_importance = spec.residual and spec.has_sublayers and analyses.routes
        if self.do_alpha:
            for l, srcs in spec.routes.items():
                self.sums[f"alpha_{l}"] = z(len(srcs))
                self.sums[f"entropy_{l}"] = z(())
        if self.do_importance:
            for l in range(2, L + 1):  # sublayer 1 reads only v_0: importance of one source, kept too
                self.sums[f"importance_{l}"] = z(l)
            self.sums["importance_1"] = z(1)
        self.cka = None
        if analyses.cka:
            self.cka = CKAAccumulator(
                P, max_rows=analyses.cka_max_rows, device=self.device,
                gram_dtype=getattr(torch, analyses.cka_gram_dtype),
            )
        self.probe_feats: dict[str, list[torch.Tensor]] = {}
        self.probe_ids: list[torch.Tensor] = []
        self._batch: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ hooks
    def begin_batch(self, x_t: torch.Tensor, sample_ids: torch.Tensor) -> None:
        self._batch = {}
        self._n = x_t.shape[0]
        if self.an.probe:
            self.probe_ids.append(sample_ids.cpu())
            pooled = x_t.detach().flatten(2).mean(-1)  # (N, C): raw x_t pooled over positions
            self.probe_feats.setdefault("x_t", []).append(pooled.float().cpu())

    def on_forward(self, name: str, x: torch.Tensor) -> None:
        kind, idx = name.split("_")
        i = int(idx)
        s = self.sums
        if kind == "z":
            xd = x.detach()
            r = token_rms(xd)  # (N, T)
            s["act"][i] += r.sum(dtype=torch.float64)
            s["pairs"][i] += r.numel()
            if i > 0 and f"z_{i - 1}" in self._batch:
                s["cos"][i] += token_cosine(self._batch[f"z_{i - 1}"], xd).sum(dtype=torch.float64)
            if self.an.token_maps:
                self._token("tok_act", i, r)
            self._batch[name] = xd
            if self.an.probe:
                self.probe_feats.setdefault(name, []).append(xd.float().mean(1).cpu())  # (N, D)
        elif kind in ("h", "v") and "h_rms" in s:
            r = token_rms(x.detach())  # (N, T)
            s[f"{kind}_rms"][i] += r.sum(dtype=torch.float64)
            if kind == "h":
                s["sub_pairs"][i] += r.numel()
                if self.an.probe:
                    self.probe_feats.setdefault(name, []).append(x.detach().float().mean(1).cpu())
            if kind == "v" and self.do_importance:
                self._batch[name] = x.detach()
        elif kind == "alpha" and self.do_alpha:
            a = x.detach().to(torch.float64)  # (S, N, T)
            pairs = a.shape[1] * a.shape[2]  # the pure metrics average over (N, T): sums = mean * pairs
            s[f"alpha_{i}"] += route_weights(a) * pairs
            s[f"entropy_{i}"] += route_entropy(a) * pairs

    def on_backward(self, name: str, grad: torch.Tensor) -> None:
        kind, idx = name.split("_")
        i = int(idx)
        if kind == "z":
            r = token_rms(grad)  # (N, T)
            self.sums["grad"][i] += r.sum(dtype=torch.float64)
            self.sums["grad_pairs"][i] += r.numel()
            if self.an.token_maps:
                self._token("tok_grad", i, r)
        elif kind == "h" and self.do_importance:
            # h_l = sum_{i<l} v_i in a residual model (v_0 = z_0): dL/dg_{i->l} = <dL/dh_l, v_i>
            # L of this minibatch is a mean over its N images, so N * dL/dg is the sum over images of
            # each image's own gate gradient; rows() divides by all images: B-independent (unlike grad_rms)
            srcs = [self._batch["z_0"]] + [self._batch[f"v_{j}"] for j in range(1, i)]
            n = grad.shape[0]
            gate_grad = source_importance(grad, srcs) * n  # (S,) dL/dg, summed over the minibatch
            self.sums[f"importance_{i}"] += gate_grad * n

    def _token(self, key: str, i: int, r: torch.Tensor) -> None:
        if key not in self.sums:
            self.sums[key] = torch.zeros(self.spec.depth + 1, r.shape[1], dtype=torch.float64, device=self.device)
        self.sums[key][i] += r.sum(0, dtype=torch.float64)

    def end_batch(self, loss: torch.Tensor) -> None:
        """After the backward pass: fold this minibatch's states into the CKA sums, add the loss.

        CKA runs here rather than after the forward because autograd has freed the activations by
        now: the Gram tile then never adds to the forward+backward peak (DiT-XL/2, 4 images: 0.4 GiB).
        """
        if self.cka is not None:
            P = self.spec.depth + 1
            self.cka.update([cka_rows(self._batch[f"z_{k}"], self.an.cka_rows) for k in range(P)])
        self.sums["loss"] += loss.detach().to(torch.float64) * self._n
        self.sums["images"] += self._n
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
        """Add another collector's statistics (the same model and analyses, other minibatches) into this one."""
        if set(other.sums) - {"tok_act", "tok_grad"} != set(self.sums) - {"tok_act", "tok_grad"} or any(
                other.sums[k].shape != self.sums[k].shape for k in other.sums if k in self.sums):
            raise DardiagError("processes hold statistics of different layouts; every process must profile the "
                               "same model with the same options")
        for k, v in other.sums.items():
            if k in self.sums:
                self.sums[k] += v.to(self.device)
            else:  # token maps are created at the first minibatch
                self.sums[k] = v.to(self.device).clone()
        if self.cka is not None:
            self.cka.merge(other.cka)

    # ------------------------------------------------------------------ results
    def rows(self) -> list[dict]:
        """Long-form rows (metric, site, block, other_block, sublayer, source, value, n_samples)."""
        s = {k: v.cpu() for k, v in self.sums.items()}
        n = int(s["images"])
        out: list[dict] = []

        def row(metric, value, **kw):
            out.append(dict(metric=metric, value=float(value), n_samples=n, **kw))

        row("loss", s["loss"] / n)
        P = self.spec.depth + 1
        for k in range(P):
            if s["pairs"][k] > 0:
                row("act_rms", s["act"][k] / s["pairs"][k], site="z", block=k)
                if k > 0:
                    row("cos_prev", s["cos"][k] / s["pairs"][k], site="z", block=k)
            if s["grad_pairs"][k] > 0:
                row("grad_rms", s["grad"][k] / s["grad_pairs"][k], site="z", block=k)
        for key, metric in (("tok_act", "token_act_rms"), ("tok_grad", "token_grad_rms")):
            if key in s:
                for k in range(P):
                    vals = (s[key][k] / n).float()
                    row(metric, vals.mean(), site="z", block=k, token_values=vals.tolist())
        if "h_rms" in s:
            for l in range(1, 2 * self.spec.depth + 1):
                if s["sub_pairs"][l] > 0:
                    row("h_rms", s["h_rms"][l] / s["sub_pairs"][l], site="h", sublayer=l)
                    row("v_rms", s["v_rms"][l] / s["sub_pairs"][l], site="v", sublayer=l)
        if self.do_alpha:
            for l, srcs in self.spec.routes.items():
                pairs = s["pairs"][0]  # every aggregator sees every (image, token) once
                for src, a in zip(srcs, s[f"alpha_{l}"]):
                    row("route_alpha", a / pairs, site="alpha", sublayer=l, source=src)
                row("route_entropy", s[f"entropy_{l}"] / pairs, site="alpha", sublayer=l)
        if self.do_importance:
            for l in range(1, 2 * self.spec.depth + 1):
                for src, g in enumerate(s[f"importance_{l}"]):
                    row("route_importance", g / n, site="h", sublayer=l, source=src)
        if self.cka is not None and self.cka.count:
            m = self.cka.matrix().cpu()
            for i in range(P):
                for j in range(P):
                    row("cka", m[i, j], site="z", block=i, other_block=j, cka_rows=self.an.cka_rows)
        return out

"""The full (D+1) x (D+1) linear-CKA matrix of one DiT's block states: dardiag against peer libraries.

Activations (``--model``), computed once, float32, and fed to every library as the same minibatch of
n rows (one minibatch: the unbiased-HSIC minibatch scheme of Nguyen et al. 2021 then reduces to the
unbiased CKA of that minibatch):

* ``dit-s`` (default): z_0..z_12 of a DiT-S/2-like model (depth 12, width 384, 256 tokens; random
  weights with the zero-initialised adaLN gates and head randomised) on ``--images`` latents at noise
  level 0.5: 13 states of n = images x 256 token rows, d = 384. More rows than features together
  (n > 13 x 384) only from 20 images on, so our Gram-tile route runs.
* ``bundled``: z_0..z_8 of the bundled residual digit model (depth 8, width 64, 64 tokens) on
  ``--images`` held-out digits at t = 0.5: 9 states of n = images x 64 rows, d = 64. Narrow model,
  many rows: our feature-space route runs (n D^2 / 2 multiply-adds, D = 576, instead of n^2 D).

Libraries (benchmark-only, ``pip install 'dardiag[bench]'``; a missing one is skipped):

* dardiag   ``CKAAccumulator(13).update(states)`` - float64 Grams (the default) and float32 Grams.
* pytorch-cka (``import cka``) ``cka.CKA(replay, replay, layers).compare``-style ``_compare`` loop.
* ckatorch  ``ckatorch.CKA(replay, replay, layers)(loader, epochs=1)``.
* torch-cka ``torch_cka.CKA(replay, replay, ...).compare(loader)``.

Peers take models and data loaders, so each runs on a ``Replay`` module whose named identity layers
emit the stored states (the replay itself costs microseconds). Times are wall seconds for the whole
matrix, the best of ``--repeats`` (peers slower than 60 s run once); values are compared with our
float64 result: max |difference| over the 169 entries. A last check feeds two independent Gaussian
feature sets, where the unbiased CKA is about 0 and may be negative, to show clamping or bias.

Usage::

    python benchmarks/bench_cka_peers.py                 # 4 images = 1024 rows
    python benchmarks/bench_cka_peers.py --images 8      # 2048 rows (torch-cka / ckatorch: minutes)
    python benchmarks/bench_cka_peers.py --skip torch_cka,ckatorch
    python benchmarks/bench_cka_peers.py --threads 1     # steadier on a shared machine
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dardiag.metrics import CKAAccumulator
from dardiag.models import DiT, DiTConfig


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("dit-s", "bundled"), default="dit-s", help="whose states (see above)")
    p.add_argument("--images", type=int, default=None,
                   help="images -> n = tokens x images rows (default 4 for dit-s, 128 for bundled)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads for every library")
    p.add_argument("--skip", default="", help="comma-separated peers to skip: pytorch_cka,pytorch_cka_f64,ckatorch,torch_cka")
    return p.parse_args(argv)


@torch.no_grad()
def dit_states(images: int) -> list[torch.Tensor]:
    """z_0..z_D of a DiT-S/2-like model: D+1 float32 tensors [images * 256, 384] (token rows)."""
    torch.manual_seed(0)
    model = DiT(DiTConfig(input_size=32, patch_size=2, hidden_size=384, depth=12, num_heads=6)).eval()
    for p in model.parameters():
        if p.requires_grad and torch.count_nonzero(p) == 0:
            p.normal_(0.0, 0.02)
    states = {}
    handles = [model.sites[f"z_{k}"].register_forward_hook(
        lambda m, a, out, k=k: states.__setitem__(k, out.reshape(-1, out.shape[-1])))
        for k in range(model.config.depth + 1)]
    x = torch.randn(images, 4, 32, 32)  # (N, C, H, W)
    model(x, torch.full((images,), 500), torch.zeros(images, dtype=torch.long))
    for h in handles:
        h.remove()
    return [states[k].contiguous() for k in range(len(states))]


@torch.no_grad()
def bundled_states(images: int) -> list[torch.Tensor]:
    """z_0..z_8 of the bundled residual digit model on held-out digits: 9 x [images * 64, 64]."""
    from dardiag.bundled import bundled_checkpoints, held_out_digits
    from dardiag.checkpoints import load_model

    model, _ = load_model(bundled_checkpoints()["residual"])
    x0 = held_out_digits()["x0"]
    if images > x0.shape[0]:
        raise SystemExit(f"--images {images}: only {x0.shape[0]} held-out digits; use at most that")
    torch.manual_seed(0)
    x0 = x0[:images]  # (N, 1, 16, 16)
    x_t = 0.5 * x0 + 0.5 * torch.randn_like(x0)  # SiT path at t = 0.5
    states = {}
    handles = [model.sites[f"z_{k}"].register_forward_hook(
        lambda m, a, out, k=k: states.__setitem__(k, out.reshape(-1, out.shape[-1])))
        for k in range(model.config.depth + 1)]
    model.eval()(x_t, torch.full((images,), 0.5), torch.zeros(images, dtype=torch.long))
    for h in handles:
        h.remove()
    return [states[k].float().contiguous() for k in range(len(states))]


class Replay(nn.Module):
    """Emits stored states through named identity layers ``s0, s1, ...`` for the rows it is given."""

    def __init__(self, states: list[torch.Tensor], leading_batch: bool = False):
        super().__init__()
        self.states, self.leading_batch = states, leading_batch
        self.layers = nn.ModuleList(nn.Identity() for _ in states)

    def forward(self, idx):
        for layer, s in zip(self.layers, self.states):
            x = s[idx]  # (n, d)
            layer(x.unsqueeze(0) if self.leading_batch else x)  # ckatorch wants (bsz, n, d)
        return idx

    def names(self) -> list[str]:
        return [f"layers.{i}" for i in range(len(self.states))]


def loader(n: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(n)), batch_size=n, shuffle=False)


# ------------------------------------------------------------------ the contenders
def ours(states, gram_dtype=torch.float64):
    acc = CKAAccumulator(len(states), gram_dtype=gram_dtype)
    acc.update(states)
    return acc.matrix()


def peer_pytorch_cka(states):
    import cka

    r = Replay(states)
    with cka.CKA(r, r, layers=r.names(), device="cpu") as c:
        return c._compare(loader(states[0].shape[0]), progress=False)


def peer_ckatorch(states):
    import ckatorch

    r = Replay(states, leading_batch=True)
    c = ckatorch.CKA(r, r, layers=r.names(), device="cpu")
    with contextlib.redirect_stderr(io.StringIO()):  # tqdm bars
        return c(loader(states[0].shape[0]), epochs=1)


def peer_torch_cka(states):
    import torch_cka

    r = Replay(states)
    c = torch_cka.CKA(r, r, model1_name="a", model2_name="b", model1_layers=r.names(), model2_layers=r.names())
    with contextlib.redirect_stderr(io.StringIO()):
        c.compare(loader(states[0].shape[0]))
    return c.export()["CKA"]


def independent_check(peers: dict, seeds: int = 5) -> None:
    """Two independent Gaussian feature sets (n = 32 rows, d = 5000): the unbiased CKA is ~0 and may be
    negative (diagnostics.md section 4); a clamp shows as 0, a biased estimator as ~1."""
    print("\nindependent features, n = 32, d = 5000, CKA(X, Y) for seeds 0..4:")
    cols = {"dardiag": lambda s: ours(s)[0, 1].item()}
    cols.update({PIP[k]: (lambda s, fn=fn: torch.as_tensor(fn(s))[0, 1].item()) for k, fn in peers.items()})
    try:
        from ckatorch.core import cka_base

        cols["ckatorch cka_base (default)"] = lambda s: cka_base(s[0], s[1]).item()
    except ImportError:
        pass
    for name, fn in cols.items():
        vals = []
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            vals.append(fn([torch.randn(32, 5000, generator=g), torch.randn(32, 5000, generator=g)]))
        print(f"  {name:28s} " + "  ".join(f"{v:+.4f}" for v in vals))


def peer_pytorch_cka_f64(states):
    """pytorch-cka computes in its input's dtype: fed float64, its values meet ours (equal-values timing)."""
    return peer_pytorch_cka([s.double() for s in states])


PEERS = {"pytorch_cka": peer_pytorch_cka, "pytorch_cka_f64": peer_pytorch_cka_f64,
         "ckatorch": peer_ckatorch, "torch_cka": peer_torch_cka}
PIP = {"pytorch_cka": "pytorch-cka", "pytorch_cka_f64": "pytorch-cka (float64 in)",
       "ckatorch": "ckatorch", "torch_cka": "torch-cka"}
MODULE = {"pytorch_cka": "cka", "pytorch_cka_f64": "cka", "ckatorch": "ckatorch", "torch_cka": "torch_cka"}


EQUAL = 1e-5  # "equal values": max |CKA - ours (float64)| over the matrix; our float32 Grams stay within it


def timed(fn, states, repeats):
    best, out = float("inf"), None
    for i in range(repeats):
        t = time.perf_counter()
        out = fn(states)
        best = min(best, time.perf_counter() - t)
        if best > 60:
            break
    return best, torch.as_tensor(out, dtype=torch.float64)


def main(argv=None) -> None:
    a = parse(argv)
    warnings.simplefilter("ignore")
    if a.threads:
        torch.set_num_threads(a.threads)
    states = dit_states(a.images or 4) if a.model == "dit-s" else bundled_states(a.images or 128)
    P, (n, d) = len(states), states[0].shape
    print(f"{P} states of n = {n} rows x d = {d}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    ours(states)  # warm-up
    t64, ref = timed(ours, states, a.repeats)
    t32, m32 = timed(lambda s: ours(s, torch.float32), states, a.repeats)
    rows = [("dardiag (float64)", t64, 0.0), ("dardiag (float32)", t32, (m32 - ref).abs().max().item())]
    skip = {s for s in a.skip.split(",") if s}
    available = {}
    for name, fn in PEERS.items():
        if name in skip:
            continue
        try:
            importlib.import_module(MODULE[name])  # import time is not the peer's CKA time
        except ImportError as e:
            print(f"{name}: not importable ({e}); pip install 'dardiag[bench]'")
            continue
        t, m = timed(fn, states, a.repeats)
        available[name] = fn
        rows.append((f"{PIP[name]}", t, (m - ref).abs().max().item()))
        print(f"  {PIP[name]:26s} {t:8.3f} s   max |CKA - ours| {rows[-1][2]:.2e}   "
              f"min entry {m.min().item():+.4f} (ours {ref.min().item():+.4f})", flush=True)
    print(f"\n{'library':26s} {'seconds':>9s} {'x ours (f64)':>13s} {'x ours (f32)':>13s} {'max |diff| vs ours':>19s}")
    for name, t, diff in rows:
        print(f"{name:26s} {t:9.3f} {t / t64:13.1f} {t / t32:13.1f} {diff:19.2e}")
    peers = [r for r in rows if not r[0].startswith("dardiag")]
    if peers:
        fastest = min(peers, key=lambda r: r[1])
        print(f"\nfastest peer: {fastest[0]} at {fastest[1]:.3f} s = {fastest[1] / t64:.1f}x our float64 time, "
              f"{fastest[1] / t32:.1f}x our float32 time")
        equal = [r for r in peers if r[2] <= EQUAL]
        if equal:
            fastest = min(equal, key=lambda r: r[1])
            print(f"fastest peer at equal values (max |diff| <= {EQUAL:g}): {fastest[0]} at {fastest[1]:.3f} s = "
                  f"{fastest[1] / t64:.1f}x our float64 time")
        else:
            print(f"no peer agrees with ours to {EQUAL:g}")
    independent_check(available)


if __name__ == "__main__":
    main()

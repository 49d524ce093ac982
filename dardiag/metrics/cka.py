"""Unbiased linear CKA with the minibatch scheme (diagnostics.md section 4).

Definition: Nguyen, Raghu & Kornblith (2021), "Do Wide and Deep Networks Learn the Same Things?",
arXiv 2010.15327, with the unbiased HSIC estimator of Song et al. (2012). For each minibatch b with
linear Gram matrices K_b, L_b whose diagonals are set to 0,

    HSIC1(K, L) = [ tr(K L) + sum(K) sum(L) / ((n-1)(n-2)) - 2/(n-2) * sum(K L) ] / (n (n-3)),

the sums S_KL = sum_b HSIC1(K_b, L_b), S_KK, S_LL are accumulated in float64 and only at the end
CKA = S_KL / sqrt(S_KK S_LL). Negative values are legitimate and never clamped.

Dimension letters: N images, T tokens, D channels; n rows (examples) of one minibatch, d features,
P recorded states (D+1 for z_0..z_D).
"""

import math
from typing import Optional, Sequence

import torch

__all__ = ["hsic1", "CKAAccumulator", "cka_rows", "unbiased_cka", "row_blocks"]

ROW_MODES = ("tokens", "images")


def hsic1(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC1 of two [n, n] Gram matrices, the formula of diagnostics.md section 4 verbatim.

    A direct reference implementation (float64, explicit K @ L): the diagonals are zeroed on copies.
    Use :class:`CKAAccumulator` for real work. Returns a 0-d float64 tensor. Needs n >= 4.
    """
    if K.dim() != 2 or K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise ValueError(f"K and L must be square and of equal shape, got {tuple(K.shape)} and {tuple(L.shape)}")
    n = K.shape[0]
    if n < 4:
        raise ValueError(f"unbiased HSIC needs n >= 4 examples, got n = {n}")
    K = K.to(torch.float64).clone()  # (n, n)
    L = L.to(torch.float64).clone()  # (n, n)
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    KL = K @ L  # (n, n)
    return (torch.trace(KL) + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * KL.sum()) / (n * (n - 3))


def cka_rows(z: torch.Tensor, mode: str = "tokens") -> torch.Tensor:
    """Turn a state [N, T, D] into CKA rows (diagnostics.md section 4).

    ``"tokens"`` (the default): every token is an example, [N*T, D], image-major order.
    ``"images"``: every image is an example, its tokens flattened, [N, T*D].
    Returns a view where possible; record the mode beside the result.
    """
    if z.dim() != 3:
        raise ValueError(f"z must be [N, T, D], got shape {tuple(z.shape)}")
    N, T, D = z.shape
    if mode == "tokens":
        return z.reshape(N * T, D)  # (N*T, D)
    if mode == "images":
        return z.reshape(N, T * D)  # (N, T*D)
    raise ValueError(f"mode must be one of {ROW_MODES}, got {mode!r}")


TILE_BYTES = 256 * 2**20  # default bound on one [P, b, b] Gram tile (see CKAAccumulator)
ROWS_BYTES = 64 * 2**20  # bound on the stacked centered rows of a group of states
# Row-block size of the Gram tiles on CPU. Measured (1 thread, float64, 13 states of d = 384,
# n = 1024..2048; 29 of d = 1152, n = 1024; 9 of d = 64, n = 4096): blocks of 256-384 rows were
# 1.2-3.8x faster than one n x n tile, because a [P, b, b] tile then stays in cache for the pair
# products and sums that follow its Gram; 128 rows was slower again. GPUs prefer the largest tile.
CPU_BLOCK_ROWS = 384
METHODS = ("auto", "grams", "features")


def row_blocks(n: int, size: Optional[int], min_rows: int = 4) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges of at most ``size`` rows covering 0..n; a tail of fewer than
    ``min_rows`` joins the previous range (the unbiased HSIC needs n >= 4). ``size=None``: one range.

    The one minibatch rule of dardiag: the engine cuts images into minibatches with it, and
    :class:`CKAAccumulator` cuts a minibatch's rows into CKA minibatches (``max_rows``) with it.
    """
    if size is None or n <= size:
        return [(0, n)]
    bounds = [(s, min(s + size, n)) for s in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_rows:
        tail = bounds.pop()
        bounds[-1] = (bounds[-1][0], tail[1])
    return bounds


class CKAAccumulator:
    """Streaming unbiased-CKA matrix between P states over many minibatches (diagnostics.md section 4).

    Each :meth:`update` gets one minibatch: P tensors [n, d_p] with the same rows (examples) in the
    same order. Per minibatch it needs, for every state, the linear Gram matrix K (diagonal zeroed) and
    its row sums, then HSIC1 for all P x P pairs at O(n^2) per pair, using, for symmetric K and L,
    tr(K L) = sum(K * L) and sum(K L) = rowsum(K) . rowsum(L).

    Features are centered per minibatch before the Gram. This is exact, not an approximation:
    HSIC1 is invariant to translating the features of either state, and centering removes the
    large cancelling terms that uncentered residual streams produce.

    Row blocks (memory and speed; the result does not depend on them beyond float rounding): all P
    Grams take P * n^2 * 8 bytes in float64 (29 states at n = 4096 rows: 3.9 GB; they grow as n^2,
    the model's activations only as n). So the n rows are cut into m equal blocks of at most b rows:
    ``block_rows`` if given, else 384 on CPU (cache-sized, see ``CPU_BLOCK_ROWS``) and on other devices
    the largest size whose [P, b, b] tile fits ``tile_bytes`` (default 256 MiB: b = 1075 rows for 29
    states in float64, 1605 for 13); b never exceeds that size. Only the blocks K_IJ with I <= J are
    formed, all P states at once as one tile. By symmetry tr(K L) = sum_I <K_II, L_II> + 2 sum_{I<J} <K_IJ, L_IJ> (one
    [P, b*b] @ [b*b, P] matmul per tile), and K_IJ gives the row sums of block I (sum over columns)
    and of block J (sum over rows). Memory is one tile plus the centered rows of a group of states
    (at most 64 MiB), whatever n is; the Grams cost n^2 d (m + 1) / (2m) multiply-adds per state
    instead of n^2 d. With m = 1 (n <= b) this is the plain all-Grams computation.

    Feature space (``method="features"``; ``"auto"``, the default, takes it when it needs fewer
    multiply-adds): with X_p centered, K_p = X_p X_p^T, q_p = diag(K_p) and D = sum of the widths,
    tr(K~_p K~_q) = ||X_p^T X_q||_F^2 - q_p . q_q and rowsum(K~_p) = X_p (X_p^T 1) - q_p = -q_p, so
    the [D, D] product Z^T Z of the stacked centered features (its blocks q >= p: about n D^2 / 2
    multiply-adds, accumulated over row chunks) replaces the Grams (about n^2 D (m+1)/(2m) + P^2 n^2). It pays when the minibatch has
    more rows than the states have features together (narrow models, large token minibatches) and is
    used only while the [D, D] matrix fits ``tile_bytes``. Same estimate, other rounding.

    ``max_rows`` (a different thing: it changes the estimate) splits a larger minibatch into
    consecutive sub-minibatches of at most ``max_rows`` rows (a tail of < 4 rows is folded into the
    previous one), each counted as its own minibatch; record ``max_rows`` with the result.

    ``gram_dtype`` = torch.float32 computes the Grams and their products in float32 (fast on GPU);
    row sums and the running sums stay float64. The running sums live on the device of the latest
    update.

    Uncertainty (``keep_terms=True``, diagnostics.md section 8): every minibatch's [P, P] HSIC1 matrix
    is kept (its diagonal holds the KK and LL terms), so :meth:`stderr` can take the delete-one-
    minibatch jackknife of the ratio. That is P^2 float64 numbers per minibatch, never an activation.

    Distributed use: :meth:`merge` partial accumulators (sums add, kept terms are concatenated).
    """

    def __init__(
        self,
        num_states: int,
        *,
        max_rows: Optional[int] = None,
        gram_dtype: torch.dtype = torch.float64,
        device: Optional[torch.device | str] = None,
        tile_bytes: int = TILE_BYTES,
        block_rows: Optional[int] = None,
        method: str = "auto",
        keep_terms: bool = False,
    ):
        if num_states < 1:
            raise ValueError(f"num_states must be >= 1, got {num_states}")
        if max_rows is not None and max_rows < 4:
            raise ValueError(f"max_rows must be >= 4 (unbiased HSIC needs n >= 4), got {max_rows}")
        if gram_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"gram_dtype must be torch.float32 or torch.float64, got {gram_dtype}")
        if tile_bytes < 1:
            raise ValueError(f"tile_bytes must be >= 1, got {tile_bytes}")
        if block_rows is not None and block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.block_rows = block_rows
        self.method = method
        self.num_states = num_states
        self.max_rows = max_rows
        self.tile_bytes = tile_bytes
        self.gram_dtype = gram_dtype
        self.sums = torch.zeros(num_states, num_states, dtype=torch.float64, device=device)  # (P, P) sum_b HSIC1
        self.count = 0  # minibatches (after max_rows splitting) folded into sums
        self.keep_terms = keep_terms
        self.terms: list[torch.Tensor] = []  # (P, P) HSIC1 of each minibatch, when keep_terms

    # ---------------------------------------------------------------- update
    def update(self, states: Sequence[torch.Tensor]) -> None:
        """Add one minibatch: ``states`` is a list of P tensors [n, d_p] with the same n >= 4."""
        if len(states) != self.num_states:
            raise ValueError(f"expected {self.num_states} states, got {len(states)}")
        for p, x in enumerate(states):
            if x.dim() != 2:
                raise ValueError(f"state {p} must be [n, d], got shape {tuple(x.shape)}")
        n = states[0].shape[0]
        if any(x.shape[0] != n for x in states):
            raise ValueError(f"all states need the same number of rows, got {[x.shape[0] for x in states]}")
        if n < 4:
            raise ValueError(f"unbiased HSIC needs n >= 4 rows per minibatch, got n = {n}")
        for start, stop in row_blocks(n, self.max_rows):
            self._update_minibatch([x[start:stop] for x in states])

    def _blocks(self, n: int, P: int, device: torch.device) -> list[tuple[int, int]]:
        """m equal consecutive row blocks of at most the block size (see the class docstring)."""
        itemsize = torch.empty((), dtype=self.gram_dtype).element_size()
        b_max = max(1, math.isqrt(self.tile_bytes // (P * itemsize)))
        if self.block_rows is not None:
            b_max = min(b_max, self.block_rows)
        elif device.type == "cpu":
            b_max = min(b_max, CPU_BLOCK_ROWS)
        m = -(-n // b_max)
        b = -(-n // m)
        return [(s, min(s + b, n)) for s in range(0, n, b)]

    def _groups(self, states: Sequence[torch.Tensor], b: int) -> list[tuple[int, int]]:
        """Consecutive ranges of states with equal width, each small enough to stack b rows of."""
        itemsize = torch.empty((), dtype=self.gram_dtype).element_size()
        groups: list[tuple[int, int]] = []
        for p, x in enumerate(states):
            if groups and states[groups[-1][0]].shape[1] == x.shape[1] and (
                (p + 1 - groups[-1][0]) * b * x.shape[1] * itemsize <= ROWS_BYTES
            ):
                groups[-1] = (groups[-1][0], p + 1)
            else:
                groups.append((p, p + 1))
        return groups

    def _use_features(self, n: int, widths: list[int], blocks: list[tuple[int, int]]) -> bool:
        """Whether the feature-space route applies: asked for, or (auto) cheaper and its [D, D] fits."""
        if self.method != "auto":
            return self.method == "features"
        itemsize = torch.empty((), dtype=self.gram_dtype).element_size()
        D, P, m = sum(widths), len(widths), len(blocks)
        if D * D * itemsize > self.tile_bytes:
            return False
        grams = (n * n * D + P * P * n * n) * (m + 1) / (2 * m)  # Gram tiles + pair products
        return n * D * D / 2 < grams

    def _update_minibatch(self, states: Sequence[torch.Tensor]) -> None:
        n = states[0].shape[0]
        device = states[0].device
        P = len(states)
        blocks = self._blocks(n, P, device)
        if self._use_features(n, [x.shape[1] for x in states], blocks):
            hsic = self._hsic_features(states, device)
        else:
            hsic = self._hsic_grams(states, device, blocks)
        hsic = 0.5 * (hsic + hsic.T)  # (P, P) exact symmetry despite float rounding
        if self.sums.device != device:
            self.sums = self.sums.to(device)
        self.sums += hsic
        self.count += 1
        if self.keep_terms:
            self.terms.append(hsic)

    def _hsic_features(self, states: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        """HSIC1 of all pairs from the [D, D] covariance of the stacked centered features (n D^2)."""
        n, P, dt = states[0].shape[0], len(states), self.gram_dtype
        widths = [x.shape[1] for x in states]
        D = sum(widths)
        # means in float64 whatever dt is: rowsum(K~) = -q below relies on centered columns
        means = [x.to(device).mean(dim=0, keepdim=True, dtype=torch.float64) for x in states]  # P x (1, d_p)
        offsets = [sum(widths[:p]) for p in range(P)]
        cov = torch.zeros(D, D, dtype=dt, device=device)  # (D, D) Z^T Z, blocks (q, p) with q >= p only
        q = torch.empty(P, n, dtype=torch.float64, device=device)  # (P, n) diag(K_p)
        chunk = max(1, ROWS_BYTES // (D * 8))
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            parts = [(x[r0:r1].to(device=device, dtype=torch.float64) - mu) for x, mu in zip(states, means)]
            for p, part in enumerate(parts):
                q[p, r0:r1] = part.square().sum(dim=1)
            z = torch.cat(parts, dim=1).to(dt)  # (c, D)
            for o, w in zip(offsets, widths):  # symmetry: X_q^T X_p for q >= p, half of Z^T Z
                cov[o:, o:o + w].addmm_(z[:, o:].T, z[:, o:o + w])
            del parts, z
        owner = torch.repeat_interleave(torch.arange(P, device=device), torch.tensor(widths, device=device))
        E = torch.nn.functional.one_hot(owner, P).to(torch.float64)  # (D, P) which state owns a feature
        lower = E.T @ (cov.square_().to(torch.float64) @ E)  # (P, P) ||X_q^T X_p||_F^2 for q >= p, else 0
        del cov
        frob = lower + lower.T - torch.diag(torch.diagonal(lower))  # (P, P) ||X_p^T X_q||_F^2
        qq = q @ q.T  # (P, P) q_p . q_q
        tr_kl = frob - qq
        sum_kl = qq  # rowsum(K~_p) = -q_p for centered X_p
        totals = -q.sum(dim=1)  # (P,) sum(K~)
        return self._hsic1(tr_kl, sum_kl, totals, n)

    @staticmethod
    def _hsic1(tr_kl: torch.Tensor, sum_kl: torch.Tensor, totals: torch.Tensor, n: int) -> torch.Tensor:
        """HSIC1 for all pairs from tr(K L), sum(K L) and sum(K) (diagonals zeroed): [P, P] float64."""
        return (tr_kl + torch.outer(totals, totals) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * sum_kl) / (
            n * (n - 3)
        )

    def _hsic_grams(
        self, states: Sequence[torch.Tensor], device: torch.device, blocks: list[tuple[int, int]]
    ) -> torch.Tensor:
        """HSIC1 of all pairs from [P, b, b] Gram tiles K_IJ, I <= J (see the class docstring)."""
        n, P, dt = states[0].shape[0], len(states), self.gram_dtype
        means = [x.to(device).mean(dim=0, keepdim=True, dtype=dt) for x in states]  # P x (1, d_p), no full copy
        groups = self._groups(states, blocks[0][1])
        group_means = [torch.stack(means[g0:g1]) for g0, g1 in groups]  # (g, 1, d) per group

        def centered(g0: int, g1: int, mu: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
            # one buffer, filled and centered in place: a stack, its cast and the difference would be three
            # (DiT-XL/2, 4 images: 0.16 instead of 0.06 GiB per group, twice over for the off-diagonal tiles)
            rows = torch.empty(g1 - g0, r1 - r0, mu.shape[-1], dtype=dt, device=device)  # (g, b, d)
            for row, x in zip(rows, states[g0:g1]):
                row.copy_(x[r0:r1])
            return rows.sub_(mu)  # (g, b, d)

        tr_kl = torch.zeros(P, P, dtype=torch.float64, device=device)  # (P, P) tr(K L)
        rowsums = torch.zeros(P, n, dtype=torch.float64, device=device)  # (P, n) rowsum(K)
        for bi, (i0, i1) in enumerate(blocks):
            for j0, j1 in blocks[bi:]:
                tile = torch.empty(P, i1 - i0, j1 - j0, dtype=dt, device=device)  # (P, b_I, b_J) = K_IJ
                for (g0, g1), mu in zip(groups, group_means):  # centered rows: transient, a group at a time
                    a = centered(g0, g1, mu, i0, i1)  # (g, b_I, d)
                    b = a if j0 == i0 else centered(g0, g1, mu, j0, j1)  # (g, b_J, d)
                    torch.bmm(a, b.transpose(1, 2), out=tile[g0:g1])
                    del a, b
                if j0 == i0:
                    tile.diagonal(dim1=1, dim2=2).zero_()  # diagonal blocks hold the Gram diagonal
                flat = tile.view(P, -1)  # (P, b_I*b_J)
                tr_kl += (flat @ flat.T).to(torch.float64) * (1.0 if j0 == i0 else 2.0)
                rowsums[:, i0:i1] += tile.sum(dim=2, dtype=torch.float64)
                if j0 != i0:
                    rowsums[:, j0:j1] += tile.sum(dim=1, dtype=torch.float64)  # K_JI = K_IJ^T
                del tile, flat
        sum_kl = rowsums @ rowsums.T  # (P, P) sum(K L)
        totals = rowsums.sum(dim=1)  # (P,) sum(K)
        return self._hsic1(tr_kl, sum_kl, totals, n)

    # ---------------------------------------------------------------- results
    def matrix(self) -> torch.Tensor:
        """The [P, P] float64 CKA matrix S_KL / sqrt(S_KK S_LL); unclamped, NaN where undefined."""
        if self.count == 0:
            raise ValueError("no minibatch has been added yet")
        diag = torch.diagonal(self.sums)  # (P,)
        return self.sums / torch.sqrt(torch.outer(diag, diag))  # (P, P)

    def adjacent(self) -> torch.Tensor:
        """The [P-1] series CKA(z_{k-1}, z_k), k = 1..P-1."""
        return torch.diagonal(self.matrix(), offset=1)  # (P-1,)

    def stderr(self) -> torch.Tensor:
        """[P, P] delete-one-minibatch jackknife standard error of the CKA matrix (diagnostics.md §8).

        With M minibatches and theta_(b) the CKA from the HSIC sums without minibatch b,
        se = sqrt((M - 1) / M * sum_b (theta_(b) - mean_b theta_(b))^2). NaN with fewer than 2
        minibatches, and on the diagonal: CKA(z, z) = 1 by definition, it is not estimated.
        """
        if not self.keep_terms:
            raise ValueError("the accumulator was made without keep_terms=True; the jackknife needs each term")
        P, M = self.num_states, len(self.terms)
        se = torch.full((P, P), float("nan"), dtype=torch.float64)
        if M < 2:
            return se
        H = torch.stack([t.to(self.sums.device) for t in self.terms])  # (M, P, P)
        left = self.sums.unsqueeze(0) - H  # (M, P, P) sums without minibatch b
        diag = torch.diagonal(left, dim1=1, dim2=2)  # (M, P)
        theta = left / torch.sqrt(diag.unsqueeze(2) * diag.unsqueeze(1))  # (M, P, P)
        dev = theta - theta.mean(dim=0, keepdim=True)  # (M, P, P)
        se = torch.sqrt((M - 1) / M * dev.square().sum(dim=0)).cpu()  # (P, P)
        se.fill_diagonal_(float("nan"))
        return se

    # ---------------------------------------------------------------- merging
    def state(self) -> dict:
        """The running sums: {"sums": [P, P] float64 (a copy), "count": int, "terms": [M, P, P] or None}."""
        terms = torch.stack(self.terms).cpu() if self.keep_terms and self.terms else None
        return {"sums": self.sums.clone(), "count": self.count, "terms": terms}

    def load_state(self, state: dict) -> None:
        """Replace the running sums (and kept terms) with a :meth:`state` dict."""
        sums = state["sums"]
        if sums.shape != (self.num_states, self.num_states):
            raise ValueError(f"sums must be [{self.num_states}, {self.num_states}], got {tuple(sums.shape)}")
        self.sums = sums.to(dtype=torch.float64).clone()
        self.count = int(state["count"])
        terms = state.get("terms")
        self.terms = list(terms.to(self.sums.device).unbind(0)) if terms is not None else []

    def merge(self, other: "CKAAccumulator") -> None:
        """Add another accumulator's sums (e.g. from another process) into this one; kept terms join."""
        if other.num_states != self.num_states:
            raise ValueError(f"cannot merge {other.num_states} states into {self.num_states}")
        self.sums += other.sums.to(self.sums.device)
        self.count += other.count
        self.terms += [t.to(self.sums.device) for t in other.terms]


def unbiased_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Unbiased linear CKA of two [n, d] matrices with the same rows, as one minibatch (n >= 4)."""
    acc = CKAAccumulator(2)
    acc.update([X, Y])
    return acc.matrix()[0, 1].item()

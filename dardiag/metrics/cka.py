"""Unbiased linear CKA with the minibatch scheme (diagnostics.md section 4).

Definition: Nguyen, Raghu & Kornblith (2021), "Do Wide and Deep Networks Learn the Same Things?",
arXiv 2010.15327, with the unbiased HSIC estimator of Song et al. (2012). For each minibatch b with
linear Gram matrices K_b, L_b whose diagonals are set to 0,

    HSIC1(K, L) = [ tr(K L) + sum(K) sum(L) / ((n-1)(n-2)) - 2/(n-2) * sum(K L) ] / (n (n-3)),

the sums S_KL = sum_b HSIC1(K_b, L_b), S_KK, S_LL are accumulated in float64 and only at the end
CKA = S_KL / sqrt(S_KK S_LL). Negative values are legitimate and never clamped.

Dimension letters: N images, T tokens, D channels; n rows (examples) of one minibatch, d features,
P probed states (D+1 for z_0..z_D).
"""

import math
from typing import Optional, Sequence

import torch

__all__ = ["hsic1", "CKAAccumulator", "cka_rows", "unbiased_cka"]

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


def _chunks(n: int, max_rows: Optional[int]) -> list[tuple[int, int]]:
    """Consecutive [start, stop) row ranges of at most max_rows rows; a tail of < 4 rows joins the previous."""
    if max_rows is None or n <= max_rows:
        return [(0, n)]
    starts = list(range(0, n, max_rows))
    bounds = [(s, min(s + max_rows, n)) for s in starts]
    if bounds[-1][1] - bounds[-1][0] < 4:
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
    the model's activations only as n). So the n rows are cut into m equal blocks of at most b rows, with b
    the largest size whose [P, b, b] tile fits ``tile_bytes`` (default 256 MiB: b = 1075 rows for 29
    states in float64, 1605 for 13), and only the blocks K_IJ with I <= J are formed, all P states
    at once as one tile. By symmetry tr(K L) = sum_I <K_II, L_II> + 2 sum_{I<J} <K_IJ, L_IJ> (one
    [P, b*b] @ [b*b, P] matmul per tile), and K_IJ gives the row sums of block I (sum over columns)
    and of block J (sum over rows). Memory is one tile plus the centered rows of a group of states
    (at most 64 MiB), whatever n is; the Grams cost n^2 d (m + 1) / (2m) multiply-adds per state
    instead of n^2 d. With m = 1 (n <= b) this is the plain all-Grams computation.

    ``max_rows`` (a different thing: it changes the estimate) splits a larger minibatch into
    consecutive sub-minibatches of at most ``max_rows`` rows (a tail of < 4 rows is folded into the
    previous one), each counted as its own minibatch; record ``max_rows`` with the result.

    ``gram_dtype`` = torch.float32 computes the Grams and their products in float32 (fast on GPU);
    row sums and the running sums stay float64. The running sums live on the device of the latest
    update.

    Distributed use: ``all_reduce`` ``sums`` (and add the counts) or :meth:`merge` partial
    accumulators; CKA only needs the summed HSIC1 matrix.
    """

    def __init__(
        self,
        num_states: int,
        *,
        max_rows: Optional[int] = None,
        gram_dtype: torch.dtype = torch.float64,
        device: Optional[torch.device | str] = None,
        tile_bytes: int = TILE_BYTES,
    ):
        if num_states < 1:
            raise ValueError(f"num_states must be >= 1, got {num_states}")
        if max_rows is not None and max_rows < 4:
            raise ValueError(f"max_rows must be >= 4 (unbiased HSIC needs n >= 4), got {max_rows}")
        if gram_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"gram_dtype must be torch.float32 or torch.float64, got {gram_dtype}")
        if tile_bytes < 1:
            raise ValueError(f"tile_bytes must be >= 1, got {tile_bytes}")
        self.num_states = num_states
        self.max_rows = max_rows
        self.tile_bytes = tile_bytes
        self.gram_dtype = gram_dtype
        self.sums = torch.zeros(num_states, num_states, dtype=torch.float64, device=device)  # (P, P) sum_b HSIC1
        self.count = 0  # minibatches (after max_rows splitting) folded into sums

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
        for start, stop in _chunks(n, self.max_rows):
            self._update_minibatch([x[start:stop] for x in states])

    def _blocks(self, n: int, P: int) -> list[tuple[int, int]]:
        """m equal consecutive row blocks, m the fewest whose [P, b, b] tile fits ``tile_bytes``."""
        itemsize = torch.empty((), dtype=self.gram_dtype).element_size()
        b_max = max(1, math.isqrt(self.tile_bytes // (P * itemsize)))
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

    def _update_minibatch(self, states: Sequence[torch.Tensor]) -> None:
        n = states[0].shape[0]
        device = states[0].device
        P = len(states)
        dt = self.gram_dtype
        means = [x.to(device).mean(dim=0, keepdim=True, dtype=dt) for x in states]  # P x (1, d_p), no full copy
        blocks = self._blocks(n, P)
        groups = self._groups(states, blocks[0][1])
        group_means = [torch.stack(means[g0:g1]) for g0, g1 in groups]  # (g, 1, d) per group

        def centered(g0: int, g1: int, mu: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
            rows = torch.stack([x[r0:r1] for x in states[g0:g1]])  # (g, b, d)
            return rows.to(device=device, dtype=dt) - mu  # (g, b, d)

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
        hsic = (tr_kl + torch.outer(totals, totals) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * sum_kl) / (
            n * (n - 3)
        )  # (P, P)
        hsic = 0.5 * (hsic + hsic.T)  # (P, P) exact symmetry despite float rounding
        if self.sums.device != device:
            self.sums = self.sums.to(device)
        self.sums += hsic
        self.count += 1

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

    # ---------------------------------------------------------------- merging
    def state(self) -> dict:
        """The running sums: {"sums": [P, P] float64 tensor (a copy), "count": int}."""
        return {"sums": self.sums.clone(), "count": self.count}

    def load_state(self, state: dict) -> None:
        """Replace the running sums with a :meth:`state` dict."""
        sums = state["sums"]
        if sums.shape != (self.num_states, self.num_states):
            raise ValueError(f"sums must be [{self.num_states}, {self.num_states}], got {tuple(sums.shape)}")
        self.sums = sums.to(dtype=torch.float64).clone()
        self.count = int(state["count"])

    def merge(self, other: "CKAAccumulator") -> None:
        """Add another accumulator's sums (e.g. from another process) into this one."""
        if other.num_states != self.num_states:
            raise ValueError(f"cannot merge {other.num_states} states into {self.num_states}")
        self.sums += other.sums.to(self.sums.device)
        self.count += other.count


def unbiased_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Unbiased linear CKA of two [n, d] matrices with the same rows, as one minibatch (n >= 4)."""
    acc = CKAAccumulator(2)
    acc.update([X, Y])
    return acc.matrix()[0, 1].item()

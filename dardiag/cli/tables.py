"""Printed tables that fit 80 columns and say what their symbols mean (issue 22).

A table wider than the width is never cut: its value columns are split into several tables that each
repeat the key columns (model, noise level), and a name too long for its column folds onto a second
line; numbers never wrap. What ``±``, ``-``, ``z`` or ``k~j`` mean is printed under each table.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from dardiag.analysis.rows import latest_checkpoint
from dardiag.analysis.summary import symptom_summary

WIDTH = 80  # the widest a table is printed, whatever the terminal (logs, papers, 80-column terminals)
NAME_WIDTH = 24  # longer model names fold onto more lines
MISSING = "-"


def pm(value, se) -> str:
    """``1.61 ± 0.02``: the error to 1 significant digit, the value to the same decimal place."""
    if value is None or pd.isna(value):
        return MISSING
    if not np.isfinite(value):
        return str(value)
    if se is None or pd.isna(se) or se <= 0 or not np.isfinite(se):
        return f"{value:.3g}"
    digits = max(0, -int(math.floor(math.log10(se))))
    if digits > 6:  # an error below 1e-6: six places of the value, the error as a power of ten
        return f"{value:.6f} ± {se:.0e}"
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def width_of(console: Console) -> int:
    return min(console.width, WIDTH)


def _table(title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]], keys: int,
           left: Sequence[str] = ()) -> Table:
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for i, h in enumerate(headers):
        if i < keys:
            t.add_column(h, overflow="fold", max_width=NAME_WIDTH)
        else:
            t.add_column(h, justify="left" if h in left else "right", no_wrap=True)
    for r in rows:
        t.add_row(*r)
    return t


def fitted_tables(console: Console, title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]],
                  keys: int = 1, left: Sequence[str] = ()) -> list[Table]:
    """``rows`` (strings) as one table, or, when wider than :data:`WIDTH`, several that split the value
    columns between them and each repeat the first ``keys`` columns. ``left``: headers of value
    columns aligned left (text rather than numbers)."""
    width = width_of(console)
    cols = list(range(keys, len(headers)))
    groups: list[list[int]] = []
    current: list[int] = []
    for c in cols:
        trial = current + [c]
        idx = list(range(keys)) + trial
        t = _table(None, [headers[i] for i in idx], [[r[i] for i in idx] for r in rows], keys, left)
        if current and Measurement.get(console, console.options, t).maximum > width:
            groups.append(current)
            current = [c]
        else:
            current = trial
    if current or not groups:
        groups.append(current)
    out = []
    for g, group in enumerate(groups):
        idx = list(range(keys)) + group
        part = f" ({g + 1}/{len(groups)})" if len(groups) > 1 else ""
        out.append(_table(f"{title}{part}" if title else None, [headers[i] for i in idx],
                          [[r[i] for i in idx] for r in rows], keys, left))
    return out


def transposed(headers: Sequence[str], rows: Sequence[Sequence[str]], keys: int, corner: str) -> tuple[list, list]:
    """(headers, rows) with rows and value columns swapped: one column per row, headed by its key
    cells (each after its key's name, but the first: ``residual`` / ``noise 1``)."""
    def head(r):
        return "\n".join([r[0]] + [f"{headers[i].replace(chr(10), ' ')} {r[i]}" for i in range(1, keys)])

    new_headers = [corner] + [head(r) for r in rows]
    new_rows = [[headers[c].replace("\n", " ")] + [r[c] for r in rows] for c in range(keys, len(headers))]
    return new_headers, new_rows


def best_tables(console: Console, title: str | None, headers: Sequence[str], rows: Sequence[Sequence[str]],
                keys: int, corner: str) -> list[Table]:
    """The table as given or transposed, whichever needs fewer parts to fit (as given on a tie)."""
    straight = fitted_tables(console, title, headers, rows, keys)
    if len(straight) == 1:
        return straight
    h, r = transposed(headers, rows, keys, corner)
    turned = fitted_tables(console, title, h, r, keys=1)
    return turned if len(turned) < len(straight) else straight


def print_tables(console: Console, tables: list[Table], key: str | None = None) -> None:
    """Each table under its title (a line of its own, wrapped at the width: a narrow table would fold
    its title over several lines), then the key."""
    for t in tables:
        if t.title:
            console.print(Text(str(t.title), style="italic"), width=width_of(console))
            t.title = None
        console.print(t)
    if key:
        console.print(Text(key, style="dim"), width=width_of(console))


def print_first_lines(console: Console, warnings: Sequence[str] = (), notices: Sequence[str] = ()) -> None:
    """What the reader must see before any number: the sanity notices, then how runs differ."""
    for n in notices:
        console.print(Text(f"notice: {n}", style="bold yellow"), width=width_of(console))
    for w in warnings:
        console.print(Text(f"warning: {w}", style="yellow"), width=width_of(console))


# ============================================================================ symptoms

SYMPTOM_COLUMNS = (("noise_level", "noise"), ("act_growth", "act\ngrowth"), ("grad_decay", "grad\ndecay"),
                   ("mean_cos_prev", "adj.\ncos"), ("mean_adjacent_cka", "adj.\nCKA"),
                   ("last_channel_top_share", "top-1%\nch."), ("loss", "loss"))
SYMPTOM_KEY = ("growth = act_rms(z_D) / act_rms(z_1); decay = grad_rms(z_1) / grad_rms(z_D); adj. cos and CKA: "
               "mean over adjacent blocks; top-1% ch.: share of the last block's energy in its top 1% channels; "
               "± 1 standard error (ratios and means of blocks: conservative); noise 1 = pure noise; "
               "-: not defined (a zero or missing value in the ratio, e.g. grad_rms = 0 at the last block of an "
               "untrained model) or not measured")


def print_symptom_table(console: Console, df: pd.DataFrame, title: str) -> None:
    s = symptom_summary(df)
    if s.empty:
        console.print("no per-level metrics in this table")
        return
    cols = [(k, h) for k, h in SYMPTOM_COLUMNS if k in s.columns]
    rows = []
    for _, r in s.iterrows():
        cells = [str(r["model"])]
        for k, _ in cols:
            v = r[k]
            cells.append(f"{v:.2g}" if k == "noise_level" else pm(v, r.get(k + "_se")))
        rows.append(cells)
    tables = best_tables(console, title, ["model"] + [h for _, h in cols], rows, keys=2, corner="")
    print_tables(console, tables, SYMPTOM_KEY)
    if "inputs" in s.columns:
        for kind in s["inputs"].dropna().unique():
            console.print(Text(f"inputs: {kind}", style="dim"), width=width_of(console))


# ============================================================================ probe

PROBE_SHOWN = 10  # block states listed: the first ones, a spread, and the last
PROBE_KEY = ("x_t: the raw noisy input; z_k: the state entering block k+1 (z_0 = the embedding); held-out R^2 "
             "of a ridge fit of the noise level, ± the spread over pair-disjoint folds; -: not probed")


def _shown_blocks(blocks: list[int], n: int = PROBE_SHOWN) -> list[int]:
    if len(blocks) <= n:
        return blocks
    head = blocks[: n // 2]
    rest = blocks[n // 2:]
    idx = np.unique(np.round(np.linspace(0, len(rest) - 1, n - len(head))).astype(int))
    return head + [rest[i] for i in idx]


def print_probe_table(console: Console, df: pd.DataFrame) -> None:
    """Probe R^2, one column per model, one row per state (x_t, then blocks)."""
    d = latest_checkpoint(df[df["metric"] == "probe_r2"])
    if d.empty or "site" not in d.columns:
        return
    models = [str(m) for m in pd.unique(d["model"])]
    z = d[d["site"] == "z"]
    blocks = sorted({int(b) for b in z["block"].dropna()})
    shown = _shown_blocks(blocks)
    se = d["stderr"].astype(float) if "stderr" in d.columns else pd.Series(np.nan, index=d.index)
    cell = {}
    for (m, site, b), v, e in zip(zip(d["model"], d["site"], d["block"]), d["value"].astype(float), se):
        cell[str(m), "x_t" if site == "x_t" else f"z_{int(b)}" if pd.notna(b) else None] = pm(v, e)
    where = ["x_t"] + [f"z_{b}" for b in shown]
    rows = [[w] + [cell.get((m, w), MISSING) for m in models] for w in where]
    key = PROBE_KEY + (f"; {len(shown)} of {len(blocks)} blocks shown" if len(shown) < len(blocks) else "")
    print_tables(console, fitted_tables(console, "Timestep probe: held-out R^2 of a ridge fit of the noise level",
                                        ["state"] + models, rows, keys=1), key)


# ============================================================================ comparison

COMPARISON_KEY = ("cells: the (noise level, block) pairs both models have (CKA: adjacent blocks, CKA(z_k-1, z_k); "
                  "loss: levels); beyond 2 s.e.: |difference| > 2 sqrt(se^2 + se_baseline^2); z = difference / "
                  "that combined s.e.; xr: ratio model / baseline; k~j: block k of the model paired with block j of "
                  "the baseline (equal relative depth k/D); a~b: noise levels paired as nearest; B x grad_rms: "
                  "compared times the batch size; n.s.: no cell differs beyond 2 s.e. (the largest shown); -: no "
                  "standard error to compare with")


def _level(a: float, b: float) -> str:
    return f"{a:.2g}" if abs(a - b) <= 1e-9 else f"{a:.2g}~{b:.2g}"


def _cell_text(c: dict) -> str:
    where = f"noise {_level(c['noise_level'], c['noise_level_baseline'])}"
    if "block" in c:
        k, j = c["block"], c["block_baseline"]
        where += f", block {k}" if k == j else f", block {k}~{j}"
    ratio = f"x{c['ratio']:.3g}" if np.isfinite(c["ratio"]) else "x-"
    z = (f"z {c['z']:+.0f}" if abs(c["z"]) >= 10 else f"z {c['z']:+.2g}") if np.isfinite(c["z"]) else "z -"
    return f"{ratio}, {z}: {where}"


def _largest_text(cells: list[dict]) -> str:
    """The significant ones of the largest cells; when none is, the largest alone, marked n.s."""
    sig = [c for c in cells if c["significant"]]
    if sig:
        return "\n".join(_cell_text(c) for c in sig)
    return f"{_cell_text(cells[0])} (n.s.)" if cells else MISSING


def print_comparison_table(console: Console, res: pd.DataFrame, *, first_lines: bool = True) -> None:
    """The rows of :func:`dardiag.analysis.summary.compare_runs`: one table per model against the baseline."""
    if first_lines:
        print_first_lines(console, res.attrs.get("warnings", ()), res.attrs.get("notices", ()))
    if res.empty:  # the first lines said why
        return
    for model, g in res.groupby("model", sort=False):
        rows = []
        for _, r in g.iterrows():
            metric = ("B x " if r["scaled_by_batch"] else "") + str(r["metric"])
            beyond = f"{int(r['beyond'])} of {int(r['cells_with_se'])}" if r["cells_with_se"] else MISSING
            med = f"{r['median_abs_z']:.1f}" if pd.notna(r["median_abs_z"]) else MISSING
            largest = _largest_text(r["largest"])
            rows.append([metric, beyond, med, largest])
        title = f"{model} vs {g['baseline'].iloc[0]} (baseline): where they differ beyond 2 combined s.e."
        headers = ["metric", "beyond\n2 s.e.", "median\n|z|", "largest differences"]
        print_tables(console, fitted_tables(console, title, headers, rows, keys=1, left=headers[-1:]))
    console.print(Text(COMPARISON_KEY, style="dim"), width=width_of(console))

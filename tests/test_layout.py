"""The shape of the package, kept: no import cycles (imports inside functions count), layering rules,
function-local imports only where they defer something heavy, and the README's metric table in step
with the registry."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from dardiag.store.registry import METRICS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dardiag"


def modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path, module: str, mods: dict) -> list[tuple[str, bool]]:
    """(imported dardiag module, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            src = node.module or ""
            if node.level:
                base = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                src = base + ("." + src if src else "")
            targets = [f"{src}.{a.name}" for a in node.names] + [src]
        else:
            continue
        for t in targets:
            r = resolve(t, mods) if t.split(".")[0] == "dardiag" else None
            if r and r != module and not (is_pkg and r.startswith(module + ".")):
                out.append((r, id(node) in local))
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t, _ in imports(p, m, mods)} for m, p in mods.items()}


def test_no_import_cycles_counting_imports_inside_functions():
    g = graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert cycles == []


def test_layers_pure_maths_and_the_table_never_reach_up():
    g = graph()
    for m, deps in g.items():
        top = m.split(".")[1] if "." in m else ""
        if top in ("metrics", "hooks", "store"):
            assert not any(d.startswith("dardiag.models") for d in deps), (m, deps)
        if top in ("metrics", "hooks", "store", "subject", "families", "errors", "atomic"):
            assert not any(d.startswith(("dardiag.engine", "dardiag.cli", "dardiag.train", "dardiag.adapters"))
                           for d in deps), (m, deps)
    # the Subject type is a leaf: its producers import it, never the reverse
    assert not any(d.startswith(("dardiag.adapters", "dardiag.engine", "dardiag.checkpoints"))
                   for d in g["dardiag.subject"])
    assert not any(d.startswith("dardiag.train") for m, deps in g.items() if m.startswith("dardiag.engine")
                   for d in deps)


def test_the_analyses_read_only_the_table():
    """dardiag.analysis is pure pandas over the long-form table: it reads runs and the store, nothing that
    measures (engine, hooks, models, adapters) and nothing that shows (plots, cli)."""
    g = graph()
    for m, deps in g.items():
        if m.startswith("dardiag.analysis"):
            bad = [d for d in deps if not d.startswith(("dardiag.analysis", "dardiag.runs", "dardiag.store",
                                                        "dardiag.errors"))]
            assert bad == [], (m, bad)


def test_the_engine_sees_only_subjects():
    """Opening paths (checkpoints, model folders, latents files) happens above the engine: it imports
    neither the adapters nor the checkpoint readers, nor the models or the data files."""
    g = graph()
    for m, deps in g.items():
        if m.startswith("dardiag.engine"):
            bad = [d for d in deps if d.startswith(("dardiag.adapters", "dardiag.checkpoints", "dardiag.models",
                                                    "dardiag.data", "dardiag.sampler", "dardiag.api"))]
            assert bad == [], (m, bad)


def test_every_file_read_of_a_checkpoint_lives_in_checkpoints():
    """torch.load / safetensors / json reads of model files: only in dardiag.checkpoints (the engine's own
    scratch files, the run directory's parts, a cache schedule's JSON and the generate command's kept batches
    are dardiag's own, not checkpoints; adapters.failures reads diffusers' own source, not a model)."""
    offenders = []
    for m, p in modules().items():
        if m.startswith(("dardiag.checkpoints", "dardiag.engine", "dardiag.runs", "dardiag.train",
                         "dardiag.data", "dardiag.latents", "dardiag.cli", "dardiag.savings.schedule",
                         "dardiag.pipelines.generate", "dardiag.adapters.failures")):
            continue
        text = p.read_text()
        if re.search(r"torch\.load\(|safe_open\(|load_file\(|from_pretrained\(|from_single_file\(|\.read_text\(", text):
            offenders.append(m)
    assert offenders == []


def test_function_local_imports_only_defer_heavy_things():
    """Inside functions: the diffusers adapter (an optional extra), and the CLI's commands (so that
    ``dardiag --help`` answers without importing torch). Never to dodge a cycle."""
    mods = modules()
    allowed_targets = {"dardiag.adapters.diffusers"}
    bad = []
    for m, p in mods.items():
        if m.startswith("dardiag.cli") or m == "dardiag":
            continue
        bad += [(m, t) for t, local in imports(p, m, mods) if local and t not in allowed_targets]
    assert bad == []


def test_the_profile_and_the_demo_need_no_optional_extra():
    """diffusers, transformers, peft and cache-dit are optional extras: `pip install -e . && dardiag demo`
    on a fresh machine has none of them, so nothing a DiT profile imports may import them."""
    code = ("import sys, dardiag, dardiag.api, dardiag.cli.cmd_demo, dardiag.cli.cmd_profile, dardiag.engine.sweep, "
            "dardiag.train; print([m for m in ('diffusers', 'transformers', 'peft', 'cache_dit') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_store_runs_and_plots_do_not_import_torch():
    code = ("import sys, dardiag.store, dardiag.runs, dardiag.plots, dardiag.summary, dardiag.analysis.comparability; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_readme_metric_table_matches_the_registry():
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- metrics:begin -->"):text.index("<!-- metrics:end -->")]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"^\| `([a-z0-9_]+)` \| (.+?) \| (.+?) \| (\w+) \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(4))
    assert list(rows) == list(METRICS)
    for name, (meaning, stderr) in rows.items():
        assert meaning == METRICS[name].meaning, name
        assert stderr == METRICS[name].stderr, name


def test_every_registered_metric_is_labelled_and_indexed_by_table_columns():
    from dardiag.store import SCHEMA

    for name, m in METRICS.items():
        assert m.label and m.meaning and m.name == name
        assert set(m.keys) <= {"site", "block", "other_block", "sublayer", "source", "noise_level", "sampler_step"}
        assert m.values is None or m.values in SCHEMA.names


def test_every_all_names_what_its_module_holds():
    """``from dardiag.x import *`` must not raise: every name in an ``__all__`` is defined or imported there."""
    bad = []
    for m, p in modules().items():
        tree = ast.parse(p.read_text())
        listed, held = None, set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                held.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                held.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        held.add(t.id)
                        if t.id == "__all__":
                            listed = ast.literal_eval(node.value)
        if listed is not None:
            bad += [(m, name) for name in listed if name not in held]
    assert bad == []

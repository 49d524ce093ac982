"""dardiag: diagnose the residual stream of Diffusion Transformers (and DAR routing).

The public API, imported lazily so that ``import dardiag`` stays cheap and torch-free for plotting:

    dardiag.profile(models, out=..., inputs=..., **settings)   # open the models, then the sweep (dardiag.engine)
    dardiag.read_profile(out)                                   # the table back (dardiag.runs)
    dardiag.load_model(path)                                    # a checkpoint (dardiag.checkpoints)
    dardiag.bundled_checkpoints(), dardiag.held_out_digits()    # the bundled digit models and data
    dardiag.ProfileConfig, dardiag.Analyses, dardiag.default_grid, dardiag.LoadOptions

Package map: ``models`` (DiT, residual and DAR routing), ``checkpoints`` (reading files), ``adapters``
(models -> Subjects), ``hooks`` (named sites, recording), ``metrics`` (pure maths), ``engine`` (config,
inputs, sweep, collector, distributed), ``runs`` (run directories: lifecycle, lock), ``store`` (table
schema, metric registry, parquet), ``analysis`` (pure pandas: summaries, comparability, sanity notices;
``summary`` is its public face), ``plots``, ``train``, ``cli``.
"""

import importlib

__version__ = "0.1.0"

_API = {
    "load_model": "dardiag.checkpoints",
    "read_profile": "dardiag.runs",
    "profile": "dardiag.api",
    "ProfileConfig": "dardiag.engine.config",
    "Analyses": "dardiag.engine.config",
    "LoadOptions": "dardiag.adapters.options",
    "default_grid": "dardiag.engine.config",
    "bundled_checkpoints": "dardiag.bundled",
    "held_out_digits": "dardiag.bundled",
}
_SUBMODULES = ("summary", "analysis", "metrics", "plots", "store", "engine", "checkpoints", "models", "hooks", "adapters",
               "runs", "families", "train", "data", "subject", "bundled", "errors")


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in _SUBMODULES:  # `dardiag.summary.symptom_summary(...)` after a bare `import dardiag`
        return importlib.import_module(f"dardiag.{name}")
    raise AttributeError(f"module 'dardiag' has no attribute {name!r}")

"""dardiag: diagnose the residual stream of Diffusion Transformers (and DAR routing)."""

__version__ = "0.1.0"

_SUBMODULES = ("summary", "metrics", "plots", "store", "sweep", "checkpoints", "models", "probe", "adapters",
               "subjects", "families", "train", "distributed")


def __getattr__(name):  # lazy: `import dardiag` stays cheap and torch-free for plotting users
    if name == "load_model":
        from dardiag.checkpoints import load_model

        return load_model
    if name == "read_profile":
        from dardiag.store import read_profile

        return read_profile
    if name == "profile":
        from dardiag.sweep import profile

        return profile
    if name in ("bundled_checkpoints", "held_out_digits"):
        from dardiag import bundled

        return getattr(bundled, name)
    if name in _SUBMODULES:  # `dardiag.summary.symptom_summary(...)` after a bare `import dardiag`
        import importlib

        return importlib.import_module(f"dardiag.{name}")
    raise AttributeError(f"module 'dardiag' has no attribute {name!r}")

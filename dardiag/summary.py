"""``dardiag.summary``, the public path of :mod:`dardiag.analysis.summary` (the README and the notebooks
import from here)."""

from dardiag.analysis.summary import (  # noqa: F401
    SIGNIFICANT,
    compare_models,
    compare_runs,
    default_baseline,
    latest_checkpoint,
    ratio_with_se,
    symptom_summary,
)

__all__ = ["compare_models", "compare_runs", "symptom_summary", "ratio_with_se", "default_baseline",
           "latest_checkpoint", "SIGNIFICANT"]

"""Run directories: one lifecycle (start, continue, --force with put-back, finish, abandon) and one
lock for profile and training runs; profile runs and ``read_profile``. Names: ``runs.layout``."""

from dardiag.runs.layout import FIGURES_DIRNAME, REPLACED, RUN_FILE, WORK_DIRNAME
from dardiag.runs.lock import claim
from dardiag.runs.profile_run import PROFILE, RunDir, read_profile

__all__ = ["RunDir", "read_profile", "claim", "PROFILE", "RUN_FILE", "FIGURES_DIRNAME", "WORK_DIRNAME", "REPLACED"]

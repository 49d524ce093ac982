"""The names of everything a run directory holds, declared once for both kinds of run.

Profile runs (``dardiag profile``, ``demo``, ``train --profile-every``'s ``OUT/profile``)::

    OUT/_run.json            run metadata, status "running" | "complete", completed units
    OUT/part-<unit>.parquet  one shard per completed unit of work, all in dardiag.store.SCHEMA
    OUT/_figures/            rendered figures (the "_" keeps pyarrow from reading them as data)
    OUT/_calibration/        ``dardiag calibrate``'s configurations (METHOD-BRANCH.json)
    OUT/_inputs/             generated inputs, ``generated-m<k>.pt`` per model (x0, conditioning, meta:
                             the ``dardiag generate`` format), so a resumed or re-plotted run uses them
    OUT/_work/               the sweep's scratch files (kept on resume, set aside by --force, deleted
                             when the run completes):
                             probe features per level, ``partial-<unit>.pt`` of a level stopped
                             between two minibatches, generated inputs

Training runs (``dardiag train``)::

    OUT/ckpt_{step:07d}.pt   dardiag checkpoint (model, EMA, optimizer, training config) every K steps
    OUT/last.pt              the newest of them; a rerun continues from it
    OUT/loss.csv             step, loss, lr, seconds (wall clock since this process started)
    OUT/train_config.json    the TrainConfig, for people (the checkpoints carry their own copy)
    OUT/profile/             ``--profile-every`` rows: a profile run directory

Both kinds::

    OUT/.dardiag.lock        only while a command works in OUT: who holds it (pid, host, since)
    OUT/_replaced/           only while a --force run is unfinished: the run it replaces, put back if
                             the new run fails, deleted when it completes
    OUT/._replaced.tmp       the staging folder of _replaced (one rename makes it appear whole)

pyarrow skips names starting with ``_`` or ``.``, so ``pandas.read_parquet(OUT)`` reads exactly the
parts of a profile run. Temporary files start with ``.`` and are renamed into place once fsynced.
Everything else in OUT is the user's and is never moved or deleted.
"""

from __future__ import annotations

import re


def _one_of(*parts: str | re.Pattern) -> re.Pattern:
    """A pattern matching any of ``parts``: literal names (escaped) or whole-name patterns."""
    alts = [p.pattern.removeprefix("^").removesuffix("$") if isinstance(p, re.Pattern) else re.escape(p)
            for p in parts]
    return re.compile("^(" + "|".join(f"(?:{a})" for a in alts) + ")$")


LOCK = ".dardiag.lock"
REPLACED = "_replaced"
STAGING = f".{REPLACED}.tmp"

# ---------------------------------------------------------------- profile runs
RUN_FILE = "_run.json"
FIGURES_DIRNAME = "_figures"
WORK_DIRNAME = "_work"
INPUTS_DIRNAME = "_inputs"
CALIBRATION_DIRNAME = "_calibration"  # dardiag calibrate's configurations, one JSON per method and branch
PARTIAL_PREFIX = "partial-"  # OUT/_work/partial-<unit>.pt: a level stopped between minibatches
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
PROFILE_RESULTS = re.compile(r"^part-.+\.parquet$")
PROFILE_TEMP = re.compile(r"^(\.part-.+|\._run\.json\..+)\.tmp$")
PROFILE_OWN = _one_of(RUN_FILE, FIGURES_DIRNAME, WORK_DIRNAME, INPUTS_DIRNAME, CALIBRATION_DIRNAME, PROFILE_RESULTS,
                      PROFILE_TEMP)


def inputs_name(model_index: int) -> str:
    """OUT/_inputs/<this>: the generated inputs of the run's model ``model_index``."""
    return f"generated-m{model_index:02d}.pt"

# ---------------------------------------------------------------- training runs
LAST = "last.pt"
LOSS_LOG = "loss.csv"
CONFIG_JSON = "train_config.json"
PROFILE_DIR = "profile"
CKPT = re.compile(r"^ckpt_\d{7}\.pt$")
# atomic_write leaves temp files named ".{name}.<random>.tmp" beside the target
TRAIN_TEMP = re.compile(r"^\.(last\.pt|ckpt_\d{7}\.pt|loss\.csv|train_config\.json)\..+$")
TRAIN_OWN = _one_of(LAST, LOSS_LOG, CONFIG_JSON, PROFILE_DIR, CKPT, TRAIN_TEMP)


def ckpt_name(step: int) -> str:
    return f"ckpt_{step:07d}.pt"

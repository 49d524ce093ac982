"""``train --init CKPT``: fine-tune from a checkpoint; the architecture comes from the file.

``init_config`` reads the file once and fills the TrainConfig's model fields from it, so the stored
config says what was trained and a resumed run compares like any other; a flag that contradicts the
file is refused (one line), never applied. ``--heads``, ``--family`` and ``--input-size`` also tell
``load_model`` what a bare file cannot say, as in ``dardiag profile``. ``load_init`` loads the
weights for the trainer and checks that the file is still the one the run started from.
"""

from __future__ import annotations

from pathlib import Path

from dardiag.checkpoints import ModelInfo, load_model
from dardiag.errors import DardiagError
from dardiag.models.config import preset as preset_config
from dardiag.models.dit import DiT
from dardiag.train import lora
from dardiag.train.config import TrainConfig, flag

# TrainConfig field -> how to read it off a loaded model's DiTConfig
FROM_MODEL = {
    "depth": lambda c: c.depth, "hidden_size": lambda c: c.hidden_size, "num_heads": lambda c: c.num_heads,
    "patch_size": lambda c: c.patch_size, "input_size": lambda c: c.input_size, "routing": lambda c: c.routing,
    "query": lambda c: c.query, "chunk_size": lambda c: c.chunk_size,
}
HINTS = {"num_heads": "num_heads", "family": "family", "input_size": "input_size"}  # passed to load_model


def _refuse(field: str, value, have, path) -> DardiagError:
    fix = " (convert it first: dardiag to-dar)" if field == "routing" and value == "dar" else ""
    return DardiagError(f"{flag(field)} {value} contradicts the --init checkpoint {path}, which has {have}{fix}; "
                        "the architecture comes from the file: drop the flag")


def init_config(init: str | Path, *, given: dict, preset: str | None = None, **settings) -> TrainConfig:
    """A TrainConfig for fine-tuning ``init``: ``given`` holds only the model flags the user passed
    (TrainConfig field names); ``settings`` the rest (out, steps, lr, lora, ...)."""
    path = Path(init)
    if not path.exists():
        raise DardiagError(f"--init {path}: no such checkpoint")
    hints = {HINTS[k]: v for k, v in given.items() if k in HINTS}
    model, info = load_model(path, **hints, finite=True)
    if settings.get("lora"):
        lora.check_rank(model, settings["lora"])
    cfg = info.config
    fields = {k: read(cfg) for k, read in FROM_MODEL.items()}
    if cfg.routing == "residual":  # query and chunk size mean nothing there: keep TrainConfig's defaults
        fields.pop("query"), fields.pop("chunk_size")
    for k, v in given.items():
        if k in fields and v != fields[k]:
            raise _refuse(k, v, f"{k.replace('_', ' ')} {fields[k]}", path)
        if k in ("query", "chunk_size") and cfg.routing == "residual":
            raise DardiagError(f"{flag(k)} is a DAR setting; the --init checkpoint {path} is a residual model "
                               "(convert it first: dardiag to-dar)")
    if preset is not None:
        p = preset_config(preset)
        have = (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size)
        if (p.depth, p.hidden_size, p.num_heads, p.patch_size) != have:
            raise DardiagError(f"--preset {preset} contradicts the --init checkpoint {path} (depth {have[0]}, width "
                               f"{have[1]}, {have[2]} heads, patch {have[3]}); drop the flag")
    dropout = given.get("class_dropout", cfg.class_dropout_prob)
    if (dropout > 0) != (cfg.class_dropout_prob > 0):
        raise DardiagError(f"--class-dropout {dropout} contradicts the --init checkpoint {path}, whose label table "
                           f"{'has' if cfg.class_dropout_prob > 0 else 'has no'} null-class row; drop the flag")
    family = given.get("family", info.family)
    del model
    return TrainConfig(**settings, **fields, class_dropout=dropout, family=family, init=str(path),
                       init_sha256=info.sha256)


def load_init(config: TrainConfig, device) -> tuple[DiT, ModelInfo]:
    """The ``--init`` weights, as the run's model (train mode, label dropout of the run)."""
    model, info = load_model(config.init, family=config.family, num_heads=config.num_heads,
                             input_size=config.input_size, device=device)
    if config.init_sha256 is not None and info.sha256 != config.init_sha256:
        raise DardiagError(f"--init {config.init} is not the file this run started from (its content changed); "
                           "put the original back, or use another --out")
    got = {k: read(info.config) for k, read in FROM_MODEL.items()}
    mine = {k: getattr(config, k) for k in got}
    if info.config.routing == "residual":
        got.pop("query"), got.pop("chunk_size"), mine.pop("query"), mine.pop("chunk_size")
    if got != mine:  # a TrainConfig built by hand, not by init_config
        bad = sorted(k for k in got if got[k] != mine[k])
        raise _refuse(bad[0], mine[bad[0]], f"{bad[0].replace('_', ' ')} {got[bad[0]]}", config.init)
    if (config.class_dropout > 0) != (info.config.class_dropout_prob > 0):
        raise DardiagError(f"--class-dropout {config.class_dropout} contradicts the --init checkpoint {config.init}, "
                           "whose label table has a different number of rows; drop the flag")
    model.config = model.config.replace(class_dropout_prob=config.class_dropout)
    model.y_embedder.dropout_prob = config.class_dropout
    return model.train(), info

"""Residual checkpoints as DAR models that start where the residual model is (``dardiag to-dar``).

``to_dar`` (``to_dar.py``) turns a loaded residual DiT into a DAR one that shares its weights and
starts uniform; ``start_gap`` (``gap.py``) measures how far the two are apart on a fixed batch;
``convert_file`` (``file.py``) is the command: read, convert, measure, write.
"""

from dardiag.convert.file import ConvertResult, convert_file
from dardiag.convert.gap import StartGap, fixed_batch, start_gap
from dardiag.convert.to_dar import dar_config, to_dar

__all__ = ["to_dar", "dar_config", "start_gap", "fixed_batch", "StartGap", "convert_file", "ConvertResult"]

"""Rewrite the README's table of diffusers classes from dardiag's class table (run after adding a class)."""

import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))  # this checkout's dardiag, not an installed one (a worktree's table differs)

from dardiag.adapters.classes.coverage import rewrite  # noqa: E402

readme = root / "README.md"
readme.write_text(rewrite(readme.read_text()))

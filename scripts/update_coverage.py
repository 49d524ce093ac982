"""Rewrite the README's table of diffusers classes from dardiag's class table (run after adding a class)."""

from pathlib import Path

from dardiag.adapters.classes.coverage import rewrite

readme = Path(__file__).resolve().parents[1] / "README.md"
readme.write_text(rewrite(readme.read_text()))

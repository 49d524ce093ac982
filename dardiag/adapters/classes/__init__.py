"""The table of diffusers transformer classes dardiag profiles: one ``ClassEntry`` per class, grouped
by kind (image single-stream, joint text-image, video, more video, video with a second pass), plus the classes refused by name.

``lookup(name)`` is the only way in: an entry, or a one-line refusal. Adding a class is one entry in
the file of its kind and its tiny config in tests/diffusers_tiny.py (the coverage test lists what is
missing).
"""

from __future__ import annotations

from dardiag.adapters.classes import image, joint, video, video_cache, video_more
from dardiag.adapters.classes.refused import REFUSED, refusal
from dardiag.adapters.classes.spec import ClassEntry, Refused, Stack, Stream

TABLE: dict[str, ClassEntry] = {e.name: e for group in (image, joint, video, video_more, video_cache) for e in group.ENTRIES}

__all__ = ["TABLE", "REFUSED", "ClassEntry", "Refused", "Stack", "Stream", "refusal"]

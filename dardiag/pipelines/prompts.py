"""The prompts a pipeline is asked: a user's file, or a small varied built-in list (said so wherever used).

Sample j of a run (0-based) is prompt j mod P of the list, in file order, so a run may draw more samples
than it has prompts (each with its own seed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dardiag.data import read_prompts
from dardiag.errors import DardiagError

# varied on purpose: subjects, scenes, styles, text, counts; short enough for any text encoder
BUILTIN = (
    "a photograph of a red fox sitting in fresh snow, morning light",
    "an oil painting of a lighthouse on a cliff during a storm",
    "a close-up of a bowl of ramen with a soft-boiled egg, studio lighting",
    "a watercolor map of an imaginary island with mountains and rivers",
    "a street in Tokyo at night with neon signs reflected in puddles",
    "a cat wearing a tiny knitted hat, looking at the camera",
    "an astronaut riding a horse on the moon, detailed digital art",
    "a minimalist poster with the words 'HELLO WORLD' in bold letters",
    "three apples and a pear on a wooden table, still life",
    "a dense tropical forest with a waterfall and mist",
    "a portrait of an elderly fisherman with a weathered face, black and white",
    "a futuristic city skyline at sunset with flying cars",
    "a child's crayon drawing of a house, a sun and a dog",
    "a macro photo of a dragonfly on a green leaf with dew drops",
    "an isometric illustration of a cozy bedroom with plants",
    "a sailing boat on a calm lake reflecting autumn trees",
)


@dataclass(frozen=True)
class Prompts:
    """What a pipeline is asked per sample: text prompts, or class labels for a class-conditional pipeline
    (a file of integers; the built-in choice is then every class in turn)."""

    texts: tuple[str, ...]
    source: str  # "built-in list (16 prompts)" or "file p.txt (12 prompts, sha256 ...)"
    builtin: bool = False

    def __len__(self) -> int:
        return len(self.texts)

    def of(self, ids) -> list[str]:
        """The prompts of samples ``ids`` (sample j: prompt j mod P)."""
        return [self.texts[int(j) % len(self.texts)] for j in ids]

    def labels(self, ids, num_classes: int) -> list[int]:
        """Class labels of samples ``ids`` for a class-conditional pipeline: the built-in choice is class j
        mod K; a file holds one class index per line."""
        if self.builtin:
            return [int(j) % max(num_classes, 1) for j in ids]
        out = []
        for text in self.of(ids):
            try:
                label = int(text)
            except ValueError:
                raise DardiagError(f"this pipeline takes class labels: the prompt file must hold one class index "
                                   f"per line (0..{num_classes - 1}), not {text!r}") from None
            if not 0 <= label < num_classes:
                raise DardiagError(f"class label {label} is outside 0..{num_classes - 1}")
            out.append(label)
        return out

    @classmethod
    def read(cls, path: str | Path | None) -> "Prompts":
        """A prompt file (one per line, # comments), or the built-in list when ``path`` is None."""
        if path is None:
            return cls(BUILTIN, f"built-in list ({len(BUILTIN)} varied prompts)", builtin=True)
        texts = tuple(read_prompts(path))
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        return cls(texts, f"file {Path(path).name} ({len(texts)} prompts, sha256 {digest})")

    @classmethod
    def of_list(cls, texts) -> "Prompts":
        texts = tuple(str(t) for t in texts)
        if not texts or not all(t.strip() for t in texts):
            raise DardiagError("the prompt list is empty or holds an empty prompt; pass at least one prompt")
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
        return cls(texts, f"list of {len(texts)} prompts (sha256 {digest})")

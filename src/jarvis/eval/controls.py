"""Controls that tell a model that looks at the image from one that does not (issue 12, "A default that learns").

- ``blank_image``: the blind evaluation's input. Every question's image becomes a solid image of the vision tower's
  mean colour, ``int(mean·255)`` per channel (the fill ``pad`` already uses, jarvis.data.images), at the original
  size, so the same pad/resize path runs and the padded square is one colour. A model scoring as well blind as
  with images answers from the text alone.
- ``answer_distribution``: the share of the most common answer of a run on one benchmark (answers stripped and
  lowercased). Before issue 12 every arm of the tiny default answered "Yes" to every POPE question and "A" to every
  multiple-choice one, and nothing said so; ``ANSWER_FLAG_SHARE`` is where a run is flagged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from PIL import Image

# Issue 12: one answer making up at least 90 % of a run's answers on a benchmark is a degenerate run (a constant
# answer), whatever its score says; the report flags it.
ANSWER_FLAG_SHARE = 0.90


def blank_image(image: Image.Image, mean: Sequence[float]) -> Image.Image:
    """A solid RGB image of ``image``'s size in the colour ``int(m·255)`` of each channel mean ``m`` in [0, 1]."""
    if len(mean) != 3:
        raise ValueError(f"blank_image: need 3 channel means, got {list(mean)}")
    fill = tuple(int(m * 255) for m in mean)  # the rule of ImageTransform's pad fill: one colour after padding
    return Image.new("RGB", image.size, fill)  # type: ignore[arg-type]


def normalise_answer(answer: str) -> str:
    return answer.strip().lower()


def answer_distribution(answers: Sequence[str]) -> dict[str, Any]:
    """``top_answer`` (normalised), its ``top_share`` of the ``n`` answers, the number of ``distinct`` answers and
    ``flagged`` (share >= ANSWER_FLAG_SHARE). Ties go to the answer seen first."""
    if not answers:
        raise ValueError("answer_distribution: no answers")
    counts = Counter(normalise_answer(a) for a in answers)
    top, count = counts.most_common(1)[0]
    share = count / len(answers)
    return {"top_answer": top, "top_share": share, "n": len(answers), "distinct": len(counts),
            "flagged": is_flagged(share)}


def is_flagged(share: float) -> bool:
    return share >= ANSWER_FLAG_SHARE

"""Benchmark question records and the readers of the real file formats (JSONL, HF parquet, image cells).

Shared by the loaders of ``jarvis.eval.benchmarks`` and ``jarvis.eval.benchmarks_ext``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class Question:
    """One benchmark question, ready for prompting (``qs``) and for writing its answer line."""

    benchmark: str
    question_id: int | str
    image: Path | Image.Image
    text: str  # the question as the harness puts it before the extension (choices included where they are)
    extension: str  # the per-benchmark question suffix (spec §1, §2)
    max_new_tokens: int
    gt_answer: str | tuple[str, ...]  # a tuple for the open-VQA benchmarks with several references
    category: str | None = None
    options: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # source, img_name, pair_id, ...

    @property
    def qs(self) -> str:
        """``<question text>\\n<question_extension>`` (spec §1); "<image>\\n" and the template come later."""
        # RealWorldQA and V*Bench append no extension (their questions carry the instruction); no trailing "\n".
        return f"{self.text}\n{self.extension}" if self.extension else self.text

    def load_image(self) -> Image.Image:
        """The image as RGB PIL, opening the file when the question holds a path (16-bit, alpha: ``to_rgb``)."""
        from jarvis.data.images import check_size, load_rgb, to_rgb

        if isinstance(self.image, Image.Image):
            check_size(self.image.size)
            return to_rgb(self.image)
        return load_rgb(self.image)


# --------------------------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file missing: {path}")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def parquet_rows(files: list[Path], what: str) -> Iterator[dict]:
    import pandas as pd  # deferred: only the parquet benchmarks need it

    if not files:
        raise FileNotFoundError(f"no parquet files for {what}")
    for f in files:
        yield from pd.read_parquet(f).to_dict(orient="records")


def pil_image(cell: Any, what: str) -> Image.Image:
    """An HF ``Image`` feature cell ({'bytes': ..., 'path': ...}) as PIL."""
    if isinstance(cell, dict) and cell.get("bytes") is not None:
        return Image.open(io.BytesIO(cell["bytes"]))
    raise ValueError(f"{what}: image cell without bytes ({type(cell).__name__})")

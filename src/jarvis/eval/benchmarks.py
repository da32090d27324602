"""Benchmark loaders and answer lines in the Cambrian answers format.

For each benchmark: a loader yielding ``Question`` records from the real data layout (benchmarks-spec.md §2 gives
the ids, splits and files) -- which the tiny synthetic world writes in the same formats -- and ``answer_row``,
which turns (question, model answer) into one answers-file line with the fields the reference's
``<b>_eval.py`` writes (spec §2), plus the explicit ids the fixed scorers pair and split by (fix #6, #12).

Prompt building (spec §1): ``qs = text + "\\n" + extension``; the caller prepends ``"<image>\\n"`` and applies the
chat template. Layouts expected under ``root``:

| benchmark | files |
|---|---|
| ade, coco, cvbench_2d | ``test_2d.jsonl`` + ``img/2D/...`` (nyu-visionx/CV-Bench; fix #11: the public copy) |
| omni, cvbench_3d | ``test_3d.jsonl`` + ``img/3D/...``, row order kept (questionId = line index) |
| cvbench | both of the above |
| mmvp | ``Questions.csv`` + ``MMVP Images/{Index}.jpg`` |
| blink | ``<Config>/val-*.parquet`` for the six single-image configs |
| mme | ``data/test-*.parquet`` (lmms-lab/MME) |
| mmstar | ``*.parquet`` anywhere under root (Lin-Chen/MMStar, split val) |
| pope | ``data/test-*.parquet`` (lmms-lab/POPE) |
| gqa | ``testdev_balanced_{instructions,images}/testdev-*.parquet`` (lmms-lab/GQA) |
| realworldqa, vstar, mmbench_en, seed, scienceqa, ai2d, textvqa, chartqa, ocrbench | see ``benchmarks_ext`` |
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jarvis.eval import benchmarks_ext
from jarvis.eval.records import Question
from jarvis.eval.records import parquet_rows as _parquet_rows
from jarvis.eval.records import pil_image as _pil
from jarvis.eval.records import read_jsonl as _read_jsonl

LETTER_EXT = "Answer with the option's letter from the given choices directly."
ONLY_LETTER_EXT = "Please answer directly with only the letter of the correct option and nothing else."
SHORT_EXT = "Answer the question using a single word or phrase."

BLINK_CONFIGS = (
    "Counting",
    "IQ_Test",
    "Object_Localization",
    "Relative_Depth",
    "Relative_Reflectance",
    "Spatial_Relation",
)
# CV-Bench's public ``task`` values -> the category names tabulate.py expects (spec §2.1, fix #11).
CVBENCH_CATEGORY = {
    "Relation": "Relative location",
    "Count": "Count",
    "Depth": "Depth",
    "Distance": "Distance",
}
CV2D_SOURCES = {"ade": ("ADE20K", "SynthFlat"), "coco": ("COCO", "SynthClutter")}
OMNI_SOURCES = ("Omni3D", "Synth3D")


# --------------------------------------------------------------------------------------------------------------
# CV-Bench (spec §2.1-§2.3, §4) and MMVP (§2.4)
# --------------------------------------------------------------------------------------------------------------


def _cvbench_question(bench: str, row: dict, qid: int, root: Path) -> Question:
    rel = row.get("filename") or row.get("image")
    if not isinstance(rel, str):
        raise ValueError(f"{bench}: CV-Bench row {qid} has no image filename")
    task = row["task"]
    if task not in CVBENCH_CATEGORY:
        raise ValueError(f"{bench}: unknown CV-Bench task {task!r}")
    return Question(
        bench,
        qid,
        root / rel,
        row["prompt"],
        LETTER_EXT,
        512,
        row["answer"],
        CVBENCH_CATEGORY[task],
        tuple(str(c) for c in row["choices"]),
        {"source": row["source"], "img_name": rel, "type": row.get("type")},
    )


def load_cvbench(root: Path, bench: str) -> Iterator[Question]:
    """CV-Bench questions; ``bench`` in ade, coco, omni, cvbench_2d, cvbench_3d, cvbench."""
    if bench in ("ade", "coco", "cvbench_2d", "cvbench"):
        keep = CV2D_SOURCES.get(bench)
        for i, row in enumerate(_read_jsonl(root / "test_2d.jsonl")):
            if keep is None or row["source"] in keep:
                yield _cvbench_question(bench, row, int(row.get("idx", i)), root)
    if bench in ("omni", "cvbench_3d", "cvbench"):
        # The 3D questionId is the line index of test_3d.jsonl, and the row order is kept (spec §2.2).
        for i, row in enumerate(_read_jsonl(root / "test_3d.jsonl")):
            yield _cvbench_question(bench, row, i, root)


def mmvp_options(options: str) -> list[str]:
    """Option texts of an MMVP ``Options`` cell, "(a) Open (b) Closed" -> ["Open", "Closed"] (spec §2.4)."""
    parts = [p.split(")", 1)[1].strip() for p in options.split("(")[1:] if ")" in p]
    if len(parts) != 2:
        raise ValueError(f"mmvp: cannot split options {options!r} into two '(a) .. (b) ..' texts")
    return parts


def load_mmvp(root: Path) -> Iterator[Question]:
    """MMVP: ``Questions.csv`` rows; question i uses ``MMVP Images/{Index}.jpg``; pairs are rows (2k, 2k+1)."""
    path = root / "Questions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"mmvp: missing {path}")
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if rows and rows[0] and rows[0][0].strip() in ("Index", "lndex"):  # the real header is misspelt "lndex"
        rows = rows[1:]
    for row_index, (index, question, options, correct) in enumerate(r[:4] for r in rows if r):
        texts = mmvp_options(options)
        text = f"{question} Options:\nA. {texts[0]}\nB. {texts[1]}"
        yield Question(
            "mmvp",
            row_index,
            root / "MMVP Images" / f"{index.strip()}.jpg",
            text,
            LETTER_EXT,
            512,
            correct.strip().lower(),
            None,
            tuple(texts),
            {"pair_id": row_index // 2},
        )


# --------------------------------------------------------------------------------------------------------------
# parquet benchmarks: BLINK (§2.5), MME (§2.6), MMStar (§2.7), POPE (§2.8), GQA (§2.9)
# --------------------------------------------------------------------------------------------------------------


def load_blink(root: Path) -> Iterator[Question]:
    """BLINK val, the six single-image configs, ``image_1`` only; question_id = index within the category."""
    for config in BLINK_CONFIGS:
        files = sorted((root / config).glob("val-*.parquet"))
        for i, row in enumerate(_parquet_rows(files, f"blink/{config}")):
            yield Question(
                "blink",
                i,
                _pil(row["image_1"], "blink"),
                row["prompt"],
                ONLY_LETTER_EXT,
                32,
                row["answer"],
                config,
                tuple(str(c) for c in row["choices"]),
            )


def load_mme(root: Path) -> Iterator[Question]:
    """MME test; ``question_id`` is the image path, shared by the image's two questions (the fixed pair key)."""
    for row in _parquet_rows(sorted((root / "data").glob("test-*.parquet")), "mme"):
        yield Question(
            "mme",
            row["question_id"],
            _pil(row["image"], "mme"),
            row["question"],
            SHORT_EXT,
            32,
            row["answer"],
            row["category"],
            (),
            {"pair_id": row["question_id"]},
        )


def load_mmstar(root: Path) -> Iterator[Question]:
    for i, row in enumerate(_parquet_rows(sorted(root.rglob("*.parquet")), "mmstar")):
        yield Question(
            "mmstar",
            int(row.get("index", i)),
            _pil(row["image"], "mmstar"),
            row["question"],
            ONLY_LETTER_EXT,
            128,
            row["answer"],
            row.get("category"),
        )


def load_pope(root: Path) -> Iterator[Question]:
    for row in _parquet_rows(sorted((root / "data").glob("test-*.parquet")), "pope"):
        yield Question(
            "pope",
            row["question_id"],
            _pil(row["image"], "pope"),
            row["question"],
            SHORT_EXT,
            128,
            row["answer"],
            row["category"],
        )


def load_gqa(root: Path) -> Iterator[Question]:
    """GQA testdev-balanced: instructions joined to images on ``imageId``."""
    images = {
        r["id"]: r["image"]
        for r in _parquet_rows(
            sorted((root / "testdev_balanced_images").glob("testdev-*.parquet")), "gqa images"
        )
    }
    for row in _parquet_rows(
        sorted((root / "testdev_balanced_instructions").glob("testdev-*.parquet")), "gqa"
    ):
        if row["imageId"] not in images:
            raise ValueError(f"gqa: question {row['id']} refers to missing image {row['imageId']!r}")
        types = row.get("types")
        cat = types.get("structural") if isinstance(types, dict) else None
        yield Question(
            "gqa",
            row["id"],
            _pil(images[row["imageId"]], "gqa"),
            row["question"],
            SHORT_EXT,
            128,
            row["answer"],
            cat,
        )


_LOADERS: dict[str, Callable[[Path], Iterator[Question]]] = {
    **{
        b: (lambda root, b=b: load_cvbench(root, b))
        for b in ("ade", "coco", "omni", "cvbench_2d", "cvbench_3d", "cvbench")
    },
    "mmvp": load_mmvp,
    "blink": load_blink,
    "mme": load_mme,
    "mmstar": load_mmstar,
    "pope": load_pope,
    "gqa": load_gqa,
    **benchmarks_ext.LOADERS,  # RealWorldQA, V*Bench, MMBench-EN, SEED, ScienceQA-IMG, AI2D, TextVQA, ChartQA, OCRBench
}
BENCHMARKS: tuple[str, ...] = tuple(_LOADERS)


def load_questions(benchmark: str, root: str | Path, limit: int | None = None) -> Iterator[Question]:
    """Questions of ``benchmark`` from its data directory ``root``, in the harness's order."""
    if benchmark not in _LOADERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; known: {BENCHMARKS}")
    for n, q in enumerate(_LOADERS[benchmark](Path(root))):
        if limit is not None and n >= limit:
            return
        yield q


def answer_row(q: Question, answer: str, model_id: str) -> dict[str, Any]:
    """One answers-file line in the Cambrian format (spec §2 "Answer line"), plus our explicit ids.

    Extras over the reference: ``source`` (CV-Bench split, fix #11), ``pair_id`` (MMVP, MME; fix #6, #12), and
    POPE's full prompt where the reference stored only its first character (fix #10).
    """
    if q.benchmark in benchmarks_ext.LOADERS:
        return benchmarks_ext.answer_row(q, answer, model_id)
    b, base = q.benchmark, {"prompt": q.qs, "answer": answer, "gt_answer": q.gt_answer, "model_id": model_id}
    if b in ("ade", "coco", "omni", "cvbench_2d", "cvbench_3d", "cvbench"):
        row = {
            "questionId": q.question_id,
            **base,
            "category": q.category,
            "options": list(q.options),
            "source": q.extra["source"],
        }
        if q.extra["source"] not in OMNI_SOURCES:  # the omni line has no image field (spec §2.2)
            row["image"] = q.extra["img_name"]
        return row
    row = {"question_id": q.question_id, **base}
    if b == "mmvp":
        return {**row, "text_options": list(q.options), "pair_id": q.extra["pair_id"]}
    if b == "blink":
        return {**row, "category": q.category, "choices": list(q.options)}
    if b == "mme":
        return {**row, "category": q.category, "pair_id": q.extra["pair_id"]}
    if b in ("mmstar", "pope", "gqa"):
        return {**row, "category": q.category}
    raise ValueError(f"answer_row: unknown benchmark {b!r}")

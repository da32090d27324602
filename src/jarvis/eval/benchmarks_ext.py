"""Loaders and answer lines for RealWorldQA, V*Bench, MMBench-EN, SEED-Bench, ScienceQA-IMG, AI2D, TextVQA,
ChartQA and OCRBench, as the reference's ``cambrian/eval/eval/<b>/<b>_eval.py`` (aimagelab/JARVIS 17426c1) reads
them (benchmarks-spec §2.9).

Each loader reads the hub repository's files as ``datasets.load_dataset`` would find them after a download, and
builds ``qs`` exactly as the reference script: same text, same order, same question extension, same
``max_new_tokens`` (``jarvis.eval.decoding``). The answer line carries the reference's fields, plus ``options``
(and MMBench's ``circular_id``) that only the fixed scorers use.

| benchmark | hub data (split) | files under the benchmark root |
|---|---|---|
| realworldqa | lmms-lab/RealWorldQA (test) | ``data/test-*.parquet`` |
| vstar | craigwu/vstar_bench (test) | ``test_questions.jsonl`` + ``<category>/<image>`` (the layout public readers of that repo use) |
| mmbench_en | lmms-lab/MMBench_EN (dev) | ``data/dev-*.parquet`` |
| seed | lmms-lab/SEED-Bench (test) | ``data/test-*.parquet`` |
| scienceqa | derek-thomas/ScienceQA (test) | ``data/test-*.parquet`` |
| ai2d | lmms-lab/ai2d (test) | ``data/test-*.parquet`` |
| textvqa | lmms-lab/textvqa (validation) | ``data/validation-*.parquet`` |
| chartqa | lmms-lab/ChartQA (test) | ``data/test-*.parquet`` |
| ocrbench | echo840/OCRBench (test) | ``data/test-*.parquet`` |

Shards are looked for in ``data/`` first (the hub layout), then anywhere under the root.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from jarvis.eval.decoding import MAX_NEW_TOKENS
from jarvis.eval.records import Question, parquet_rows, pil_image, read_jsonl

LETTER_EXT = "Answer with the option's letter from the given choices directly."
ONLY_LETTER_EXT = "Please answer directly with only the letter of the correct option and nothing else."
SHORT_EXT = "Answer the question using a single word or phrase."
NUMBER_EXT = "Answer the question using a single number or phrase."  # chartqa_eval.py:145
OCR_EXT = "Give the short answer directly."  # ocrbench_eval.py:175

# SEED-Bench's image dimensions, question_type_id -> name (seed_test.py:8-17).
SEED_TAGS = {
    1: "Scene Understanding",
    2: "Instance Identity",
    3: "Instance Attribute",
    4: "Instance Location",
    5: "Instance Counting",
    6: "Spatial Relation",
    7: "Instance Interaction",
    8: "Visual Reasoning",
    9: "Text Recognition",
}

_DOT_OPTION = re.compile(r"^([A-F])\.\s*(.*\S)\s*$", re.MULTILINE)  # "A. left" lines (RealWorldQA)
_PAREN_OPTION = re.compile(r"^\(([A-F])\)\s*(.*\S)\s*$", re.MULTILINE)  # "(A) red" lines (V*Bench)


def _split_files(root: Path, split: str, what: str) -> list[Path]:
    files = sorted((root / "data").glob(f"{split}-*.parquet")) or sorted(root.rglob(f"{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"{what}: no {split}-*.parquet under {root} (expected data/{split}-*.parquet)"
        )
    return files


def _rows(root: Path, split: str, what: str) -> Iterator[dict]:
    return parquet_rows(_split_files(root, split, what), what)


def _options_in(text: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Option texts listed in a question as consecutive letters from A; () when the question lists none."""
    found = pattern.findall(text)
    letters = [m[0] for m in found]
    if not found or letters != [chr(ord("A") + i) for i in range(len(found))]:
        return ()
    return tuple(m[1] for m in found)


def _absent(value: Any) -> bool:
    """MMBench's missing hint/option: the string "nan" in the hub copy (the reference tests ``!= "nan"``).

    A null or float NaN is treated the same; the reference would crash on those (``None + "\\n"``).
    """
    return value is None or value == "nan" or (isinstance(value, float) and math.isnan(value))


def _strings(value: Any, what: str) -> tuple[str, ...]:
    """A list-of-strings cell (parquet gives a numpy array) as a tuple; anything else fails loudly."""
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"{what}: expected a list of strings, got {type(value).__name__} {value!r}")
    return tuple(str(v) for v in value)


def _row(q: Question) -> dict[str, Any]:
    return dict(q.extra.get("row", {}))


# --------------------------------------------------------------------------------------------------------------
# the Vision group: RealWorldQA and V*Bench
# --------------------------------------------------------------------------------------------------------------


def load_realworldqa(root: Path) -> Iterator[Question]:
    """RealWorldQA: the question as is, no extension (realworldqa_eval.py:47-51 never uses it); 512 tokens."""
    for i, row in enumerate(_rows(root, "test", "realworldqa")):
        text = str(row["question"])
        yield Question(
            "realworldqa",
            i,
            pil_image(row["image"], "realworldqa"),
            text,
            "",
            MAX_NEW_TOKENS["realworldqa"],
            str(row["answer"]),
            None,
            _options_in(text, _DOT_OPTION),
        )


def load_vstar(root: Path) -> Iterator[Question]:
    """V*Bench: ``text`` as is (it ends with the letter instruction), image ``root/<image>``; 32 tokens.

    ``question_id`` is the row index, as vstar_eval.py:127-153 writes it, not the file's own id.
    """
    for i, row in enumerate(read_jsonl(root / "test_questions.jsonl")):
        text = str(row["text"])
        yield Question(
            "vstar",
            i,
            root / str(row["image"]),
            text,
            "",
            MAX_NEW_TOKENS["vstar"],
            str(row["label"]),
            str(row.get("category", "")),
            _options_in(text, _PAREN_OPTION),
        )


# --------------------------------------------------------------------------------------------------------------
# the General group: MMBench-EN (circular) and SEED-Bench
# --------------------------------------------------------------------------------------------------------------


def _image_digest(image: Image.Image, size: tuple[int, int] | None = None) -> str:
    im = image.convert("RGB")
    if size is not None:
        im = im.resize(size)
    return hashlib.sha256(im.tobytes()).hexdigest()


def load_mmbench_en(root: Path) -> Iterator[Question]:
    """MMBench-EN dev with its circular copies (each question repeated with its options rotated).

    ``qs`` as mmbench_en_eval.py:43-51: hint line, question + " Options:", one line per present option.
    ``source_id`` is the reference's circular key (line 156): question, image hash and source; its image hash is
    mmh3 of the 256x256 resize, ours a sha256 prefix of the same pixels (same groups barring a hash collision).
    ``circular_id`` (fixed mode) also keys on the hint and the option set, which the reference's key ignores, so
    two different questions with the same wording on one image are no longer merged.
    """
    for row in _rows(root, "dev", "mmbench_en"):
        image = pil_image(row["image"], "mmbench_en")
        question = str(row["question"])
        text = question + " Options:" if _absent(row.get("hint")) else f"{row['hint']}\n{question} Options:"
        options = tuple(str(row[k]) for k in "ABCD" if not _absent(row.get(k)))
        text += "".join(f"\n{chr(ord('A') + i)}. {o}" for i, o in enumerate(options))
        source_id = f"{question} {_image_digest(image, (256, 256))[:8]} {row['source']}"
        key = [
            question,
            None if _absent(row.get("hint")) else str(row["hint"]),
            sorted(options),
            str(row["source"]),
            _image_digest(image),
        ]
        line = {
            "index": int(row["index"]),
            "question": question,
            **{k: (None if _absent(row.get(k)) else str(row[k])) for k in "ABCD"},
            "source_id": source_id,
            "category": str(row["category"]),
            "circular_id": hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16],
        }
        yield Question(
            "mmbench_en",
            int(row["index"]),
            image,
            text,
            LETTER_EXT,
            MAX_NEW_TOKENS["mmbench_en"],
            str(row["answer"]),
            str(row["category"]),
            options,
            {"row": line},
        )


def load_seed(root: Path) -> Iterator[Question]:
    """SEED-Bench image questions: rows with more than one image (video frames) are skipped as seed_eval.py:123;
    ``question_id`` is the row index in the whole split; category = ``question_type_id`` (1-9)."""
    for i, row in enumerate(_rows(root, "test", "seed")):
        images = row["image"]
        if images is None or len(images) == 0:
            raise ValueError(f"seed: row {i} has no image")
        if len(images) > 1:
            continue
        cat = int(row["question_type_id"])
        if cat not in SEED_TAGS:
            # seed_test.py:74 would raise KeyError on it; fail here, naming it.
            raise ValueError(
                f"seed: row {i} has question_type_id {cat}, not an image dimension {sorted(SEED_TAGS)}"
            )
        options = tuple(str(row[f"choice_{k}"]) for k in "abcd")
        text = (
            str(row["question"])
            + " Options:"
            + "".join(f"\n{chr(65 + j)}. {o}" for j, o in enumerate(options))
        )
        yield Question(
            "seed",
            i,
            pil_image(images[0], "seed"),
            text,
            LETTER_EXT,
            MAX_NEW_TOKENS["seed"],
            str(row["answer"]),
            str(cat),
            options,
            {"row": {"category": cat}},
        )


# --------------------------------------------------------------------------------------------------------------
# the Knowledge group: ScienceQA-IMG and AI2D
# --------------------------------------------------------------------------------------------------------------


def load_scienceqa(root: Path) -> Iterator[Question]:
    """ScienceQA test, questions with an image only (ScienceQA-IMG: the reported ``multimodal_acc``).

    The reference also writes the text-only questions, with an empty answer and no generation
    (scienceqa_eval.py:151-152); they never enter ``multimodal_acc``, so they are not loaded here.
    ``qs`` as scienceqa_eval.py:46-55: hint + " " + question when the hint is not empty, then "\\nA. ..." lines.
    """
    for i, row in enumerate(_rows(root, "test", "scienceqa")):
        if row.get("image") is None:
            continue
        choices = _strings(row["choices"], f"scienceqa row {i} choices")
        hint = row.get("hint") or ""
        text = f"{hint} {row['question']}" if hint != "" else str(row["question"])
        text += "".join(f"\n{chr(65 + j)}. {c}" for j, c in enumerate(choices))
        answer = int(row["answer"])
        line = {"has_img": True, "text_answer": choices[answer], "type": True, "category": str(row["grade"])}
        yield Question(
            "scienceqa",
            i,
            pil_image(row["image"], "scienceqa"),
            text,
            ONLY_LETTER_EXT,
            MAX_NEW_TOKENS["scienceqa"],
            chr(65 + answer),
            str(row["grade"]),
            choices,
            {"row": line},
        )


def load_ai2d(root: Path) -> Iterator[Question]:
    """AI2D test: question then "\\nA. ..." per option (ai2d_eval.py:45-52); the gt is the option index "0".."3"."""
    for i, row in enumerate(_rows(root, "test", "ai2d")):
        options = _strings(row["options"], f"ai2d row {i} options")
        if len(options) > 4:
            raise ValueError(f"ai2d: row {i} has {len(options)} options; the reference labels only A-D")
        text = str(row["question"]) + "".join(f"\n{chr(65 + j)}. {o}" for j, o in enumerate(options))
        gt = str(row["answer"])
        yield Question(
            "ai2d",
            i,
            pil_image(row["image"], "ai2d"),
            text,
            LETTER_EXT,
            MAX_NEW_TOKENS["ai2d"],
            gt,
            None,
            options,
            {"row": {"text_answer": options[int(gt)]}},
        )


# --------------------------------------------------------------------------------------------------------------
# the OCR group: TextVQA, ChartQA, OCRBench
# --------------------------------------------------------------------------------------------------------------


def load_textvqa(root: Path) -> Iterator[Question]:
    """TextVQA validation with the reference OCR tokens in the prompt (textvqa_eval.py:37-45)."""
    for i, row in enumerate(_rows(root, "validation", "textvqa")):
        tokens = _strings(row["ocr_tokens"], f"textvqa row {i} ocr_tokens")
        text = str(row["question"]) + "\nReference OCR tokens:" + ",".join(f" {t}" for t in tokens)
        yield Question(
            "textvqa",
            i,
            pil_image(row["image"], "textvqa"),
            text,
            SHORT_EXT,
            MAX_NEW_TOKENS["textvqa"],
            _strings(row["answers"], f"textvqa row {i} answers"),
        )


def load_chartqa(root: Path) -> Iterator[Question]:
    """ChartQA test (human and augmented), category = ``type`` (chartqa_eval.py:41-50, 112)."""
    for i, row in enumerate(_rows(root, "test", "chartqa")):
        yield Question(
            "chartqa",
            i,
            pil_image(row["image"], "chartqa"),
            str(row["question"]),
            NUMBER_EXT,
            MAX_NEW_TOKENS["chartqa"],
            str(row["answer"]),
            str(row["type"]),
        )


def load_ocrbench(root: Path) -> Iterator[Question]:
    """OCRBench test; the gt is the list of accepted answers, category = ``question_type`` (ocrbench_eval.py)."""
    for i, row in enumerate(_rows(root, "test", "ocrbench")):
        yield Question(
            "ocrbench",
            i,
            pil_image(row["image"], "ocrbench"),
            str(row["question"]),
            OCR_EXT,
            MAX_NEW_TOKENS["ocrbench"],
            _strings(row["answer"], f"ocrbench row {i} answer"),
            str(row["question_type"]),
        )


LOADERS: dict[str, Callable[[Path], Iterator[Question]]] = {
    "realworldqa": load_realworldqa,
    "vstar": load_vstar,
    "mmbench_en": load_mmbench_en,
    "seed": load_seed,
    "scienceqa": load_scienceqa,
    "ai2d": load_ai2d,
    "textvqa": load_textvqa,
    "chartqa": load_chartqa,
    "ocrbench": load_ocrbench,
}


def answer_row(q: Question, answer: str, model_id: str) -> dict[str, Any]:
    """The answers-file line the reference's ``<b>_eval.py`` writes for these benchmarks, plus ``options``."""
    gt = list(q.gt_answer) if isinstance(q.gt_answer, tuple) else q.gt_answer
    if q.benchmark == "mmbench_en":
        # mmbench_en_eval.py:157-167: "prediction" instead of "answer", the options A-D, the circular key.
        row = _row(q)
        return {
            "index": row.pop("index"),
            "question": row.pop("question"),
            "prediction": answer,
            "gt_answer": gt,
            **row,
            "model_id": model_id,
            "prompt": q.qs,
            "options": list(q.options),
        }
    line: dict[str, Any] = {
        "question_id": q.question_id,
        "prompt": q.qs,
        "answer": answer,
        "gt_answer": gt,
        "model_id": model_id,
    }
    if q.category is not None and q.benchmark in ("vstar", "chartqa", "ocrbench"):
        line["category"] = q.category
    line.update(_row(q))
    if q.options:
        line["options"] = list(q.options)
    return line

"""The nine benchmarks beyond the Cambrian eight, written from the synthetic world in their hub files' layouts.

For the rehearsal (jarvis.rehearsal): each directory holds what ``jarvis download`` copies from the benchmark's
dataset repo and what jarvis.eval.benchmarks_ext reads (docs/benchmarks.md lists the files):
RealWorldQA, V*Bench, MMBench-EN (with its circular copies), SEED-Bench, ScienceQA-IMG (+ one text-only row, which
the loader leaves out, as the reference does), AI2D, TextVQA, ChartQA and OCRBench. The questions are about a
synthetic scene: the colour of a shape that occurs once, how many objects there are, the leftmost object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jarvis.data import synthetic as S
from jarvis.eval.synthetic_bench import _png, _to_parquet
from jarvis.io import atomic_dir
from jarvis.seeding import numpy_generator

EXT_BENCHMARKS = ("realworldqa", "vstar", "mmbench_en", "seed", "scienceqa", "ai2d", "textvqa", "chartqa", "ocrbench")


def _item(rng: np.random.Generator, i: int, size: int) -> tuple[dict[str, Any], str, list[str], int, str]:
    """(image cell, question, four options, index of the right one, the answer as a word) about one scene."""
    while True:
        scene = S.sample_scene(rng, "flat")
        shapes = [o.shape for o in scene.objects]
        single = [o for o in scene.objects if shapes.count(o.shape) == 1]
        if single and len(scene.objects) >= 2:
            break
    kind = i % 3
    if kind == 0:
        o = single[int(rng.integers(len(single)))]
        truth, question = o.color, f"What colour is the {o.shape}?"
        pool = [c for c in S.COLORS if c != truth]
    elif kind == 1:
        truth, question = str(len(scene.objects)), "How many objects are in the image?"
        pool = [str(n) for n in range(1, 9) if str(n) != truth]
    else:
        truth, question = min(scene.objects, key=lambda o: o.u).name, "Which object is the leftmost?"
        pool = [o.name for o in scene.objects if o.name != truth] + [f"{c} star" for c in S.COLORS]
        pool = list(dict.fromkeys(p for p in pool if p != truth))
    options = [truth, *(pool[int(k)] for k in rng.choice(len(pool), 3, replace=False))]
    order = rng.permutation(4)
    options = [options[int(k)] for k in order]
    return _png(S.render(scene, size)), question, options, options.index(truth), truth


def _items(name: str, n: int, size: int, seed: int) -> list[tuple[dict[str, Any], str, list[str], int, str]]:
    return [_item(numpy_generator(seed, "ext_bench", name, i), i, size) for i in range(n)]


def _lettered(options: list[str]) -> str:
    return "\n".join(f"{chr(65 + k)}. {o}" for k, o in enumerate(options))


def _write_realworldqa(out: Path, n: int, size: int, seed: int) -> int:
    rows = [{"image": img, "question": f"{q}\n{_lettered(opts)}\nPlease answer directly with only the letter.",
             "answer": chr(65 + k)} for img, q, opts, k, _ in _items("realworldqa", n, size, seed)]
    _to_parquet(out / "data" / "test-00000-of-00001.parquet", rows)
    return len(rows)


def _write_vstar(out: Path, n: int, size: int, seed: int) -> int:
    lines = []
    for i, (img, q, opts, k, _) in enumerate(_items("vstar", n, size, seed)):
        category = "direct_attributes" if i % 2 == 0 else "relative_position"
        path = out / category / f"sa_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(img["bytes"])
        text = q + "\n" + "\n".join(f"({chr(65 + j)}) {o}" for j, o in enumerate(opts)) + S.LETTER_SUFFIX
        lines.append({"image": f"{category}/sa_{i}.png", "text": text, "category": category, "question_id": i,
                      "label": chr(65 + k)})
    (out / "test_questions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return len(lines)


def _write_mmbench(out: Path, n: int, size: int, seed: int) -> int:
    rows = []
    for i, (img, q, opts, k, _) in enumerate(_items("mmbench_en", n, size, seed)):
        for shift in range(4):  # circular evaluation: every rotation of the options, index + 1e6 * shift
            rot = opts[shift:] + opts[:shift]
            rows.append({"index": i + 1_000_000 * shift, "question": q, "hint": "nan", **dict(zip("ABCD", rot, strict=True)),
                         "answer": chr(65 + rot.index(opts[k])), "category": "attribute_recognition", "image": img,
                         "source": "jarvis-synthetic", "l2-category": "fine-grained", "comment": "nan", "split": "dev"})
    _to_parquet(out / "data" / "dev-00000-of-00001.parquet", rows)
    return len(rows)


def _write_seed(out: Path, n: int, size: int, seed: int) -> int:
    rows = [{"question": q, **{f"choice_{c}": o for c, o in zip("abcd", opts, strict=True)}, "answer": chr(65 + k),
             "data_type": "image", "image": [img], "question_type_id": 1 + i % 9, "data_id": f"{i}.png"}
            for i, (img, q, opts, k, _) in enumerate(_items("seed", n, size, seed))]
    _to_parquet(out / "data" / "test-00000-of-00001.parquet", rows)
    return len(rows)


def _write_scienceqa(out: Path, n: int, size: int, seed: int) -> int:
    base = {"grade": "grade4", "subject": "natural science"}
    rows = [{**base, "image": img, "question": q, "hint": "Look at the picture.", "choices": opts, "answer": k}
            for img, q, opts, k, _ in _items("scienceqa", n, size, seed)]
    rows.append({**base, "image": None, "question": "Which is a colour?", "hint": "", "choices": ["red", "cube"],
                 "answer": 0})  # text-only: not ScienceQA-IMG, left out by the loader
    _to_parquet(out / "data" / "test-00000-of-00001.parquet", rows)
    return len(rows) - 1


def _write_ai2d(out: Path, n: int, size: int, seed: int) -> int:
    rows = [{"question": q, "options": opts, "answer": str(k), "image": img}
            for img, q, opts, k, _ in _items("ai2d", n, size, seed)]
    _to_parquet(out / "data" / "test-00000-of-00001.parquet", rows)
    return len(rows)


def _write_textvqa(out: Path, n: int, size: int, seed: int) -> int:
    rows = [{"question": q, "image": img, "answers": [word] * 10, "ocr_tokens": [], "question_id": i,
             "image_id": f"synth{i}"} for i, (img, q, _o, _k, word) in enumerate(_items("textvqa", n, size, seed))]
    _to_parquet(out / "data" / "validation-00000-of-00001.parquet", rows)
    return len(rows)


def _write_chartqa(out: Path, n: int, size: int, seed: int) -> int:
    rows = [{"type": "human_test", "question": q, "answer": word, "image": img}
            for img, q, _o, _k, word in _items("chartqa", n, size, seed)]
    _to_parquet(out / "data" / "test-00000-of-00001.parquet", rows)
    return len(rows)


def _write_ocrbench(out: Path, n: int, size: int, seed: int) -> int:
    rows = [{"dataset": "jarvis-synthetic", "question": q, "question_type": "Scene Text-centric VQA",
             "answer": [word], "image": img} for img, q, _o, _k, word in _items("ocrbench", n, size, seed)]
    _to_parquet(out / "data" / "test-00000-of-00001.parquet", rows)
    return len(rows)


_WRITERS: dict[str, Callable[[Path, int, int, int], int]] = {
    "realworldqa": _write_realworldqa, "vstar": _write_vstar, "mmbench_en": _write_mmbench, "seed": _write_seed,
    "scienceqa": _write_scienceqa, "ai2d": _write_ai2d, "textvqa": _write_textvqa, "chartqa": _write_chartqa,
    "ocrbench": _write_ocrbench,
}  # fmt: skip


def generate_ext_benchmarks(out_dir: str | Path, n_per_benchmark: int, image_size: int, seed: int) -> dict[str, int]:
    """Write ``out_dir/<benchmark>`` for each of EXT_BENCHMARKS (each renamed into place whole); returns the questions
    written per benchmark (MMBench-EN counts its circular copies)."""
    if n_per_benchmark < 1:
        raise ValueError(f"need n_per_benchmark >= 1, got {n_per_benchmark}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in EXT_BENCHMARKS:
        with atomic_dir(out / name) as tmp:
            counts[name] = _WRITERS[name](tmp, n_per_benchmark, image_size, seed)
    return counts

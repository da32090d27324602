"""Tiny-world general benchmarks: BLINK, MME, MMStar, POPE and GQA analogues in their real file formats.

Scenes and renders come from ``jarvis.data.synthetic`` (benchmarks-spec.md §6); CV-Bench and MMVP files are
written there by ``generate_world``. Here each benchmark gets questions in the style of the real one, written in the
layout ``jarvis.eval.benchmarks`` reads (HF parquet with ``{'bytes', 'path'}`` image cells), so the real loaders
and scorers run unchanged. The questions are synthetic stand-ins (BLINK's IQ_Test becomes "which shape occurs most
often", for instance); they test plumbing and colour/shape/position perception, not the real benchmarks' content.

Determinism: item i of benchmark b draws from ``numpy_generator(seed, "general_bench", b, i)``. Each benchmark
directory is built in a temp directory and renamed into place.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from jarvis.data import synthetic as S
from jarvis.eval.benchmarks import BLINK_CONFIGS
from jarvis.io import atomic_dir
from jarvis.seeding import numpy_generator

YES_NO = " Please answer yes or no."  # MME questions carry it already (benchmarks-spec §2.6)
LETTERS = "ABCDEF"


def _png(img: Image.Image) -> dict[str, Any]:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _unique(scene: S.Scene) -> list[int]:
    names = [o.name for o in scene.objects]
    return [i for i, n in enumerate(names) if names.count(n) == 1]


def _absent_name(rng: np.random.Generator, scene: S.Scene, shape: str | None = None) -> str:
    present = {o.name for o in scene.objects}
    cands = [f"{c} {s}" for s in (S.SHAPES if shape is None else (shape,)) for c in S.COLORS]
    cands = [n for n in cands if n not in present]
    return str(cands[int(rng.integers(len(cands)))])


def _a(name: str) -> str:
    """The name with its indefinite article: "an orange cube", "a red ball"."""
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _luma(color: str) -> float:
    r, g, b = S.COLORS[color]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _choices_prompt(question: str, choices: list[str]) -> str:
    """BLINK's prompt layout: the question, then "Select from the following choices." and "(A) ..." lines."""
    return (
        question
        + "\nSelect from the following choices.\n"
        + "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    )


def _shuffle(rng: np.random.Generator, choices: list[str], answer: str) -> tuple[list[str], int]:
    order = [choices[i] for i in rng.permutation(len(choices))]
    return order, order.index(answer)


def _count_choices(rng: np.random.Generator, truth: int) -> list[str]:
    others = [k for k in range(0, 8) if k != truth]
    picks = [others[i] for i in rng.choice(len(others), 3, replace=False)]
    return [str(k) for k in [truth, *picks]]


# --------------------------------------------------------------------------------------------- BLINK
def _blink_item(
    cfg: str, rng: np.random.Generator, size: int
) -> tuple[Image.Image, str, list[str], str] | None:
    """(image, question, choices, correct choice) for one BLINK-style config, or None to redraw the scene."""
    source = {"Relative_Depth": "3d", "Counting": "clutter", "Object_Localization": "clutter"}.get(
        cfg, "flat"
    )
    scene = S.sample_scene(rng, source)  # type: ignore[arg-type]
    objs, uniq = scene.objects, _unique(scene)
    if cfg == "Counting":
        shape = objs[int(rng.integers(len(objs)))].shape
        n = sum(o.shape == shape for o in objs)
        return S.render(scene, size), f"How many {shape}s are in the image?", _count_choices(rng, n), str(n)
    if cfg == "IQ_Test":
        counts = {s: sum(o.shape == s for o in objs) for s in S.SHAPES}
        best = max(counts.values())
        if list(counts.values()).count(best) != 1:
            return None
        top = max(counts, key=lambda s: counts[s])
        return (
            S.render(scene, size),
            "Which shape occurs most often in the image?",
            list(S.SHAPES[:4]) if top in S.SHAPES[:4] else [*S.SHAPES[:3], top],
            top,
        )
    if len(uniq) < 2:
        return None
    a, b = (int(i) for i in rng.choice(uniq, 2, replace=False))
    oa, ob = objs[a], objs[b]
    if cfg == "Relative_Depth":
        if abs(oa.z - ob.z) < 0.5:
            return None
        img = S.render(scene, size, boxes=((a, "red"), (b, "blue")))
        q = "Which object is closer to the camera, the one in the red box or the one in the blue box?"
        return img, q, ["the red box", "the blue box"], "the red box" if oa.z < ob.z else "the blue box"
    if cfg == "Spatial_Relation":
        if abs(oa.u - ob.u) < 0.15:
            return None
        q = f"Is the {oa.name} to the left of the {ob.name}?"
        return S.render(scene, size), q, ["yes", "no"], "yes" if oa.u < ob.u else "no"
    if cfg == "Relative_Reflectance":
        if abs(_luma(oa.color) - _luma(ob.color)) < 30:
            return None
        q = f"Which object has the lighter surface colour, the {oa.name} or the {ob.name}?"
        return (
            S.render(scene, size),
            q,
            [oa.name, ob.name],
            oa.name if _luma(oa.color) > _luma(ob.color) else ob.name,
        )
    # Object_Localization: one box is the object's, the other is shifted by about its own size.
    img = S.render(scene, size)
    x0, y0, x1, y1 = (c * size for c in oa.bbox)
    dx, dy = (float(v) * oa.s * size for v in rng.choice([-1.0, 1.0], 2) * rng.uniform(0.6, 1.0, 2))
    true_first = bool(rng.random() < 0.5)
    d = ImageDraw.Draw(img)
    boxes = [(x0, y0, x1, y1), (x0 + dx, y0 + dy, x1 + dx, y1 + dy)]
    if not true_first:
        boxes.reverse()
    for box, col in zip(boxes, ("red", "blue"), strict=True):
        d.rectangle(box, outline=S.BOX_COLORS[col])
    q = f"Which box more accurately localizes the {oa.name}, the red box or the blue box?"
    return img, q, ["red box", "blue box"], "red box" if true_first else "blue box"


def _write_blink(out: Path, n: int, size: int, seed: int) -> int:
    written = 0
    for ci, cfg in enumerate(BLINK_CONFIGS):
        rows = []
        for i in range(n // len(BLINK_CONFIGS) + (ci < n % len(BLINK_CONFIGS))):
            item = None
            for attempt in range(200):
                item = _blink_item(
                    cfg, numpy_generator(seed, "general_bench", "blink", cfg, i, attempt), size
                )
                if item is not None:
                    break
            if item is None:
                raise RuntimeError(f"blink/{cfg}: no valid scene in 200 draws for item {i}")
            img, question, choices, correct = item
            rng = numpy_generator(seed, "general_bench", "blink", cfg, i, "order")
            choices, k = _shuffle(rng, choices, correct)
            rows.append(
                {
                    "idx": f"val_{cfg}_{i + 1}",
                    "question": question,
                    "sub_task": cfg.replace("_", " "),
                    "image_1": _png(img),
                    "image_2": None,
                    "image_3": None,
                    "image_4": None,
                    "choices": choices,
                    "answer": f"({LETTERS[k]})",
                    "prompt": _choices_prompt(question, choices),
                    "explanation": "",
                }
            )
        _to_parquet(out / cfg / "val-00000-of-00001.parquet", rows)
        written += len(rows)
    return written


# --------------------------------------------------------------------------------------------- MME
def _mme_pair(cat: str, rng: np.random.Generator) -> tuple[S.Scene, list[tuple[str, str]]] | None:
    """One image and its (question, answer) pair: one "Yes" and one "No" question, as in MME."""
    scene = S.sample_scene(rng, "flat")
    objs, uniq = scene.objects, _unique(scene)
    if cat == "existence":
        o = objs[int(rng.integers(len(objs)))]
        qa = [
            (f"Is there {_a(o.name)} in this image?", "Yes"),
            (f"Is there {_a(_absent_name(rng, scene))} in this image?", "No"),
        ]
    elif cat == "count":
        shape = objs[int(rng.integers(len(objs)))].shape
        n = sum(o.shape == shape for o in objs)
        wrong = n + 1 if n == 1 or rng.random() < 0.5 else n - 1
        qa = [
            (f"Are there {n} {shape}s in this image?", "Yes"),
            (f"Are there {wrong} {shape}s in this image?", "No"),
        ]
    elif cat == "position":
        if len(uniq) < 2:
            return None
        a, b = (objs[int(i)] for i in rng.choice(uniq, 2, replace=False))
        if abs(a.u - b.u) < 0.15:
            return None
        side, other = ("left", "right") if a.u < b.u else ("right", "left")
        qa = [
            (f"Is the {a.name} on the {side} of the {b.name}?", "Yes"),
            (f"Is the {a.name} on the {other} of the {b.name}?", "No"),
        ]
    else:  # color
        shapes = [o.shape for o in objs]
        single = [o for o in objs if shapes.count(o.shape) == 1]
        if not single:
            return None
        o = single[int(rng.integers(len(single)))]
        wrong = [c for c in S.COLORS if c != o.color][int(rng.integers(len(S.COLORS) - 1))]
        qa = [
            (f"Is the {o.shape} in the image {o.color}?", "Yes"),
            (f"Is the {o.shape} in the image {wrong}?", "No"),
        ]
    if rng.random() < 0.5:
        qa.reverse()
    return scene, [(q + YES_NO, a) for q, a in qa]


def _write_mme(out: Path, n: int, size: int, seed: int) -> int:
    cats = ("existence", "count", "position", "color")
    rows = []
    for i in range((n + 1) // 2):
        cat = cats[i % len(cats)]
        for attempt in range(200):
            item = _mme_pair(cat, numpy_generator(seed, "general_bench", "mme", i, attempt))
            if item is not None:
                break
        else:
            raise RuntimeError(f"mme/{cat}: no valid scene in 200 draws for image {i}")
        scene, qa = item
        image = _png(S.render(scene, size))
        for q, a in qa:
            rows.append(
                {
                    "question_id": f"{cat}/{i:04d}.png",
                    "image": image,
                    "question": q,
                    "answer": a,
                    "category": cat,
                }
            )
    _to_parquet(out / "data" / "test-00000-of-00001.parquet", rows)
    return len(rows)


# --------------------------------------------------------------------------------------------- MMStar
def _mmstar_item(i: int, rng: np.random.Generator) -> tuple[S.Scene, str, str, str, str] | None:
    scene = S.sample_scene(rng, "flat")
    objs, uniq = scene.objects, _unique(scene)
    kind = i % 3
    if kind == 0:  # coarse perception: which object is present
        truth = objs[int(rng.integers(len(objs)))].name
        names = [truth] + [
            _absent_name(numpy_generator(int(rng.integers(2**31)), k), scene) for k in range(3)
        ]
        if len(set(names)) != 4:
            return None
        q, cat, l2 = (
            "Which of these objects appears in the image?",
            "coarse perception",
            "image scene and topic",
        )
    elif kind == 1:  # fine-grained perception: colour of a shape that occurs once
        shapes = [o.shape for o in objs]
        single = [o for o in objs if shapes.count(o.shape) == 1]
        if not single:
            return None
        o = single[int(rng.integers(len(single)))]
        truth = o.color
        others = [c for c in S.COLORS if c != truth]
        names = [truth] + [others[k] for k in rng.choice(len(others), 3, replace=False)]
        q, cat, l2 = f"What colour is the {o.shape}?", "fine-grained perception", "attribute recognition"
    else:  # instance reasoning: the leftmost object
        if len(uniq) < 4:
            return None
        pick = [objs[int(k)] for k in rng.choice(uniq, 4, replace=False)]
        truth = min(pick, key=lambda o: o.u).name
        names = [o.name for o in pick]
        q, cat, l2 = (
            "Which object is the leftmost in the image?",
            "instance reasoning",
            "object spatial relationship",
        )
    order, k = _shuffle(rng, names, truth)
    opts = ", ".join(f"{LETTERS[j]}: {t}" for j, t in enumerate(order))
    return scene, f"{q}\nOptions: {opts}", LETTERS[k], cat, l2


def _write_mmstar(out: Path, n: int, size: int, seed: int) -> int:
    rows = []
    for i in range(n):
        for attempt in range(200):
            item = _mmstar_item(i, numpy_generator(seed, "general_bench", "mmstar", i, attempt))
            if item is not None:
                break
        else:
            raise RuntimeError(f"mmstar: no valid scene in 200 draws for item {i}")
        scene, q, a, cat, l2 = item
        rows.append(
            {
                "index": i,
                "question": q,
                "image": _png(S.render(scene, size)),
                "answer": a,
                "category": cat,
                "l2_category": l2,
                "meta_info": {"source": "jarvis-synthetic", "split": "val"},
            }
        )
    _to_parquet(out / "mmstar.parquet", rows)
    return len(rows)


# --------------------------------------------------------------------------------------------- POPE
def _write_pope(out: Path, n: int, size: int, seed: int) -> int:
    """POPE's three negative samplings: random (any absent object), popular (absent objects from a fixed frequent
    list) and adversarial (absent objects sharing a present object's shape)."""
    cats = ("adversarial", "popular", "random")
    popular = [f"{c} {s}" for s, c in zip(S.SHAPES, list(S.COLORS)[: len(S.SHAPES)], strict=True)]
    rows = []
    for i in range(n):
        rng = numpy_generator(seed, "general_bench", "pope", i)
        cat = cats[i % 3]
        scene = S.sample_scene(rng, "clutter")
        present = {o.name for o in scene.objects}
        if i % 2 == 0:
            name, answer = sorted(present)[int(rng.integers(len(present)))], "yes"
        else:
            answer = "no"
            if cat == "popular" and [p for p in popular if p not in present]:
                free = [p for p in popular if p not in present]
                name = free[int(rng.integers(len(free)))]
            elif cat == "adversarial":
                name = _absent_name(
                    rng, scene, shape=scene.objects[int(rng.integers(len(scene.objects)))].shape
                )
            else:
                name = _absent_name(rng, scene)
        rows.append(
            {
                "id": str(i),
                "question_id": str(i + 1),
                "question": f"Is there {_a(name)} in the image?",
                "answer": answer,
                "image_source": f"synthetic_{i:06d}",
                "image": _png(S.render(scene, size)),
                "category": cat,
            }
        )
    _to_parquet(out / "data" / "test-00000-of-00001.parquet", rows)
    return len(rows)


# --------------------------------------------------------------------------------------------- GQA
def _gqa_questions(scene: S.Scene, rng: np.random.Generator) -> list[tuple[str, str, str, str, str]]:
    """(question, answer, full answer, structural, semantic) candidates for one scene."""
    objs, uniq = scene.objects, _unique(scene)
    out = []
    shapes, colors = [o.shape for o in objs], [o.color for o in objs]
    for o in objs:
        if shapes.count(o.shape) == 1:
            out.append(
                (f"What color is the {o.shape}?", o.color, f"The {o.shape} is {o.color}.", "query", "attr")
            )
        if colors.count(o.color) == 1:
            out.append(
                (f"What shape is the {o.color} object?", o.shape, f"It is a {o.shape}.", "query", "obj")
            )
    if len(uniq) >= 2:
        a, b = (objs[int(i)] for i in rng.choice(uniq, 2, replace=False))
        if abs(a.u - b.u) >= 0.15:
            side = "left" if a.u < b.u else "right"
            out.append(
                (
                    f"Is the {a.name} to the left or to the right of the {b.name}?",
                    side,
                    f"The {a.name} is to the {side} of the {b.name}.",
                    "choose",
                    "rel",
                )
            )
    absent = _absent_name(rng, scene)
    out.append(
        (
            f"Are there both {_a(objs[0].name)} and {_a(absent)} in the image?",
            "no",
            f"No, there is {_a(objs[0].name)} but no {absent}.",
            "logical",
            "obj",
        )
    )
    return out


def _write_gqa(out: Path, n: int, size: int, seed: int) -> int:
    images, instr = [], []
    i = 0
    while len(instr) < n:
        rng = numpy_generator(seed, "general_bench", "gqa", i)
        scene = S.sample_scene(rng, "flat")
        cands = _gqa_questions(scene, rng)
        image_id = f"n{i:06d}"
        images.append({"id": image_id, "image": _png(S.render(scene, size))})
        for k in rng.permutation(len(cands))[: min(2, n - len(instr))]:
            q, a, full, structural, semantic = cands[int(k)]
            instr.append(
                {
                    "id": f"{i:06d}{len(instr) % 2}",
                    "imageId": image_id,
                    "question": q,
                    "answer": a,
                    "fullAnswer": full,
                    "isBalanced": True,
                    "types": {"structural": structural, "semantic": semantic, "detailed": semantic},
                }
            )
        i += 1
    _to_parquet(out / "testdev_balanced_images" / "testdev-00000-of-00001.parquet", images)
    _to_parquet(out / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet", instr)
    return len(instr)


# --------------------------------------------------------------------------------------------- driver
def _to_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


_WRITERS: dict[str, Callable[[Path, int, int, int], int]] = {
    "blink": _write_blink,
    "mme": _write_mme,
    "mmstar": _write_mmstar,
    "pope": _write_pope,
    "gqa": _write_gqa,
}


def generate_general_benchmarks(
    out_dir: str | Path, n_per_benchmark: int, image_size: int, seed: int
) -> dict[str, int]:
    """Write ``out_dir/{blink,mme,mmstar,pope,gqa}`` in the real layouts; returns questions written per benchmark.

    Each benchmark directory is built next to its destination and renamed into place, so a crash never leaves a
    half-written benchmark behind. MME rounds ``n_per_benchmark`` up to whole image pairs.
    """
    if n_per_benchmark < 1 or image_size < 16:
        raise ValueError(
            f"need n_per_benchmark >= 1 and image_size >= 16, got {n_per_benchmark}, {image_size}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name, writer in _WRITERS.items():
        with atomic_dir(out / name) as tmp:
            counts[name] = writer(tmp, n_per_benchmark, image_size, seed)
    return counts

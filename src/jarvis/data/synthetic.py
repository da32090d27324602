"""A procedural vision-centric world for CPU runs (benchmarks-spec §6).

Scenes of simple shapes are rendered with a pinhole camera over a ground plane (``3d``) or frontally on a plain
(``flat``) or textured (``clutter``) background. From them we write, in the real file formats:

- stage 1: ``pretrain/blip_laion_cc_sbu_558k.json`` (benchmarks-spec §5.1) with BLIP-style captions that by default
  carry **no** spatial words (``caption_spatial_rate`` knob);
- stage 2: ``instruct/llava_v1_5_mix665k.json`` (§5.2): 1–4 turns, VQA with the single-word suffix, CV-Bench-style
  MCQs with bare-letter answers, detailed descriptions, ~8 % text-only entries (no ``image`` key, integer ids);
- CV-Bench analogue (§4): ``cvbench/test_2d.jsonl`` (sources ``ADE20K`` = SynthFlat, ``COCO`` = SynthClutter) and
  ``cvbench/test_3d.jsonl`` (``Omni3D`` = Synth3D), images under ``cvbench/img/...``, so the real combined formula
  (benchmarks-spec §2.3) applies unchanged;
- MMVP analogue (§2.4): ``mmvp/Questions.csv`` + ``mmvp/MMVP Images/{i}.jpg``, pairs differing by one edit that
  flips the answer.

Determinism: every item's randomness comes from ``numpy_generator(seed, split, kind, index)``; train and test use the
disjoint namespaces ``"train"`` and ``"test"``. The world is built in a temp directory and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from jarvis.io import atomic_dir
from jarvis.seeding import numpy_generator

Source = Literal["flat", "clutter", "3d"]
SHAPES = ("cube", "ball", "cone", "cylinder", "star")
COLORS = {
    "red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 80, 215),
    "yellow": (235, 205, 40), "purple": (140, 60, 180), "orange": (240, 140, 30),
}  # fmt: skip
BOX_COLORS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 200, 0)}
# CV-Bench `source` values the scorers key on (benchmarks-spec §2.1–2.3).
SOURCE_NAME = {"flat": "ADE20K", "clutter": "COCO", "3d": "Omni3D"}
SOURCE_DATASET = {"flat": "SynthFlat", "clutter": "SynthClutter", "3d": "Synth3D"}
FOCAL = 0.4  # focal length as a fraction of the image width (§6 "Camera")
HORIZON = 1.0 / 3.0  # horizon row as a fraction of the height
CAM_HEIGHT = 1.0
INSTRUCTIONS = (  # LLaVA paper Table 11 (benchmarks-spec §5.1)
    "Describe the image concisely.", "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.", "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.", "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.", "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.", "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)  # fmt: skip
SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
LETTER_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven")
BACKGROUND_PHRASE = {
    "flat": "on a plain background",
    "clutter": "on a cluttered background",
    "3d": "on a checkered floor",
}


@dataclass(frozen=True)
class SceneObject:
    """One object: world placement (``x`` lateral, ``z`` depth, ``size``) and its projection in [0, 1] image units
    (``u`` centre column, ``v`` base row, ``s`` extent). Flat/clutter scenes have no camera: ``z`` only orders drawing."""

    shape: str
    color: str
    x: float
    z: float
    size: float
    u: float
    v: float
    s: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) in [0, 1] image units."""
        return (self.u - self.s / 2, self.v - self.s, self.u + self.s / 2, self.v)


@dataclass(frozen=True)
class Scene:
    source: str
    objects: tuple[SceneObject, ...]
    background_seed: int


# --------------------------------------------------------------------------------------------- sampling
def project(shape: str, color: str, x: float, z: float, size: float) -> SceneObject:
    """Pinhole projection for the ``3d`` source: base row ``horizon + f·h/z``, extent ``f·size/z`` (§6 Renderer)."""
    return SceneObject(
        shape, color, x, z, size, 0.5 + FOCAL * x / z, HORIZON + FOCAL * CAM_HEIGHT / z, FOCAL * size / z
    )


def _draw_kind(rng: np.random.Generator, prev: list[SceneObject]) -> tuple[str, str]:
    # Repeat a previous shape (and sometimes colour) often enough that counts above one are common.
    if prev and rng.random() < 0.4:
        other = prev[int(rng.integers(len(prev)))]
        color = other.color if rng.random() < 0.5 else str(rng.choice(list(COLORS)))
        return other.shape, color
    return str(rng.choice(SHAPES)), str(rng.choice(list(COLORS)))


def _overlap_1d(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def sample_scene(rng: np.random.Generator, source: Source, n_objects: int | None = None) -> Scene:
    """Sample 2–6 objects (``3d``: depth 1.2–5, size 0.6–0.9, minimum ground separation; ``flat``: no overlap;
    ``clutter``: partial occlusion allowed)."""
    if source not in SOURCE_NAME:
        raise ValueError(f"unknown scene source {source!r}; expected one of {sorted(SOURCE_NAME)}")
    n = int(rng.integers(2, 7)) if n_objects is None else n_objects
    objs: list[SceneObject] = []
    for _ in range(n):
        shape, color = _draw_kind(rng, objs)
        for _attempt in range(60):
            o = _place(rng, source, shape, color)
            if all(_compatible(source, o, p) for p in objs):
                objs.append(o)
                break
    return Scene(source, tuple(objs), int(rng.integers(2**31)))


def _place(rng: np.random.Generator, source: str, shape: str, color: str) -> SceneObject:
    if source == "3d":
        z, size = float(rng.uniform(1.2, 5.0)), float(rng.uniform(0.6, 0.9))
        half = 0.8 * z / (2 * FOCAL)  # keep the centre inside ±0.4 of the image width
        return project(shape, color, float(rng.uniform(-half, half)), z, size)
    s = float(rng.uniform(0.12, 0.22))
    u, v = float(rng.uniform(s / 2 + 0.02, 1 - s / 2 - 0.02)), float(rng.uniform(s + 0.02, 0.98))
    return SceneObject(shape, color, u, 2.0 - v, s, u, v, s)  # lower in the frame = nearer = drawn later


def _compatible(source: str, a: SceneObject, b: SceneObject) -> bool:
    if source == "3d":
        return float(np.hypot(a.x - b.x, a.z - b.z)) > (a.size + b.size) / 2 + 0.1
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    inter = _overlap_1d(ax0, ax1, bx0, bx1) * _overlap_1d(ay0, ay1, by0, by1)
    if source == "flat":
        return (
            _overlap_1d(ax0 - 0.02, ax1 + 0.02, bx0, bx1) * _overlap_1d(ay0 - 0.02, ay1 + 0.02, by0, by1) == 0
        )
    return inter < 0.35 * min(a.s, b.s) ** 2  # clutter: partial occlusion only


# --------------------------------------------------------------------------------------------- rendering
def _background(scene: Scene, size: int) -> np.ndarray:
    rng = numpy_generator("background", scene.background_seed)
    if scene.source == "flat":
        return np.broadcast_to(rng.integers(200, 246, 3).astype(np.uint8), (size, size, 3)).copy()
    if scene.source == "clutter":
        coarse = rng.integers(90, 220, (6, 6, 3)).astype(np.uint8)
        img = np.asarray(
            Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR), dtype=np.int16
        )
        img = img + rng.integers(-25, 26, (size, size, 3))
        return np.clip(img, 0, 255).astype(np.uint8)
    # 3d: sky above the horizon, a foreshortened checker ground plane below it.
    rows = (np.arange(size) + 0.5) / size
    cols = (np.arange(size) + 0.5) / size
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (175, 205, 235)
    below = rows > HORIZON + 1e-3
    z = FOCAL * CAM_HEIGHT / (rows[below] - HORIZON)  # depth of each ground row
    x = (cols[None, :] - 0.5) * z[:, None] / FOCAL
    checker = (np.floor(x / 0.5) + np.floor(z[:, None] / 0.5)).astype(np.int64) % 2
    img[below] = np.where(checker[..., None] == 1, np.array([150, 150, 150]), np.array([95, 95, 95])).astype(
        np.uint8
    )
    return img


def _shade(rgb: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * k))) for c in rgb)  # type: ignore[return-value]


def _draw_object(d: ImageDraw.ImageDraw, o: SceneObject, size: int, shadow: bool) -> None:
    x0, y0, x1, y1 = (c * size for c in o.bbox)
    s = o.s * size
    base = COLORS[o.color]
    dark = _shade(base, 0.55)
    if shadow:
        d.ellipse((x0 - 0.1 * s, y1 - 0.12 * s, x1 + 0.1 * s, y1 + 0.12 * s), fill=(50, 50, 50))
    if o.shape == "cube":
        k = 0.25 * s
        d.rectangle((x0, y0 + k, x1 - k, y1), fill=base, outline=dark)
        d.polygon(
            [(x0, y0 + k), (x0 + k, y0), (x1, y0), (x1 - k, y0 + k)], fill=_shade(base, 1.3), outline=dark
        )
        d.polygon(
            [(x1 - k, y0 + k), (x1, y0), (x1, y1 - k), (x1 - k, y1)], fill=_shade(base, 0.75), outline=dark
        )
    elif o.shape == "ball":
        d.ellipse((x0, y0, x1, y1), fill=base, outline=dark)
        d.ellipse((x0 + 0.2 * s, y0 + 0.15 * s, x0 + 0.45 * s, y0 + 0.35 * s), fill=_shade(base, 1.4))
    elif o.shape == "cone":
        d.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=base, outline=dark)
    elif o.shape == "cylinder":
        e = 0.12 * s
        d.ellipse((x0, y1 - 2 * e, x1, y1), fill=_shade(base, 0.8), outline=dark)
        d.rectangle((x0, y0 + e, x1, y1 - e), fill=base)
        d.ellipse((x0, y0, x1, y0 + 2 * e), fill=_shade(base, 1.3), outline=dark)
    else:  # star
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, s / 2
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        d.polygon(
            [(cx + rr * np.cos(a), cy - rr * np.sin(a)) for a, rr in zip(angles, radii, strict=True)],
            fill=base,
            outline=dark,
        )


def render(scene: Scene, size: int, boxes: tuple[tuple[int, str], ...] = ()) -> Image.Image:
    """Draw ``scene`` far to near (occlusion for free) on a ``size``×``size`` RGB canvas; ``boxes`` are
    ``(object index, "red"|"blue"|"green")`` annotation rectangles as in CV-Bench."""
    img = Image.fromarray(_background(scene, size))
    d = ImageDraw.Draw(img)
    for o in sorted(scene.objects, key=lambda o: -o.z):
        _draw_object(d, o, size, shadow=scene.source == "3d")
    for idx, color in boxes:
        x0, y0, x1, y1 = scene.objects[idx].bbox
        d.rectangle((x0 * size - 1, y0 * size - 1, x1 * size + 1, y1 * size + 1), outline=BOX_COLORS[color])
    return img


# --------------------------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class SceneQuestion:
    """A CV-Bench-style question generated about one scene (written out as a benchmark row; not
    jarvis.eval.benchmarks.Question, which is a row read back for prompting)."""

    task: str  # Count | Relation | Depth | Distance
    question: str
    choices: tuple[str, ...]
    answer: int  # index into choices
    boxes: tuple[tuple[int, str], ...]
    target: str | None = None


def _unique(scene: Scene) -> list[int]:
    names = [o.name for o in scene.objects]
    return [i for i, n in enumerate(names) if names.count(n) == 1]


def _pick_pair(
    rng: np.random.Generator, cands: list[tuple[int, ...]], prefer: list[bool], p: float
) -> tuple[int, ...] | None:
    """Choose a candidate, preferring (with probability ``p``) those flagged in ``prefer`` when any exist."""
    if not cands:
        return None
    want = rng.random() < p
    pool = [c for c, f in zip(cands, prefer, strict=True) if f == want] or cands
    return pool[int(rng.integers(len(pool)))]


def question_count(rng: np.random.Generator, scene: Scene) -> SceneQuestion | None:
    if rng.random() < 0.1:  # ~10 % of answers are 0: ask about a kind that is absent
        present = {(o.color, o.shape) for o in scene.objects}
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        color, shape = absent[int(rng.integers(len(absent)))]
        label = f"{color} {shape}"
    else:
        o = scene.objects[int(rng.integers(len(scene.objects)))]
        color, shape, label = (o.color, o.shape, o.name) if rng.random() < 0.5 else (None, o.shape, o.shape)
    truth = sum(1 for o in scene.objects if o.shape == shape and (color is None or o.color == color))
    k = int(rng.integers(4, 6))
    others = [n for n in range(max(0, truth - 4), truth + 5) if n != truth]  # at least 4 candidates
    picked = [truth, *(int(n) for n in rng.choice(others, size=k - 1, replace=False))]
    order = rng.permutation(k)
    choices = tuple(str(picked[j]) for j in order)
    return SceneQuestion(
        "Count", f"How many {label}s are in the image?", choices, int(np.argmax(order == 0)), (), label
    )


def question_relation(rng: np.random.Generator, scene: Scene) -> SceneQuestion | None:
    cands = []
    for a in _unique(scene):
        for b in _unique(scene):
            A, B = scene.objects[a], scene.objects[b]
            du, dv = A.u - B.u, (A.v - A.s / 2) - (B.v - B.s / 2)
            ax, bx = A.bbox, B.bbox
            if (
                a != b
                and abs(du) > abs(dv)
                and abs(du) > 0.15
                and _overlap_1d(ax[0], ax[2], bx[0], bx[2]) == 0
            ):
                cands.append((a, b, 0 if du < 0 else 1, 0))
            elif (
                a != b
                and abs(dv) >= abs(du)
                and abs(dv) > 0.15
                and _overlap_1d(ax[1], ax[3], bx[1], bx[3]) == 0
            ):
                cands.append((a, b, 0 if dv < 0 else 1, 1))
    pick = _pick_pair(rng, cands, [c[3] == 1 for c in cands], 0.5)
    if pick is None:
        return None
    a, b, ans, vertical = pick
    A, B = scene.objects[a].name, scene.objects[b].name
    q = (
        f"Considering the relative positions of the {A} (annotated by the red box) and the {B} in the image "
        f"provided, where is the {A} (annotated by the red box) located with respect to the {B}?"
    )
    choices = ("above", "below") if vertical else ("left", "right")
    return SceneQuestion("Relation", q, choices, ans, ((a, "red"),), A)


def question_depth(rng: np.random.Generator, scene: Scene) -> SceneQuestion | None:
    objs, cands, smaller = scene.objects, [], []
    for a in _unique(scene):
        for b in _unique(scene):
            A, B = objs[a], objs[b]
            if (
                a != b and A.z + A.size / 2 < B.z - B.size / 2 - 0.3
            ):  # A's farthest < B's nearest − δ (§6 Depth)
                cands.append((a, b))
                smaller.append(A.s < B.s)  # the closer object is smaller in pixels
    pick = _pick_pair(rng, cands, smaller, 0.4)
    if pick is None:
        return None
    near, far = pick
    red, blue = (near, far) if rng.random() < 0.5 else (far, near)
    q = (
        f"Which object is closer to the camera taking this photo, the {objs[red].name} (highlighted by a red box) "
        f"or the {objs[blue].name} (highlighted by a blue box)?"
    )
    return SceneQuestion(
        "Depth", q, (objs[red].name, objs[blue].name), 0 if red == near else 1, ((red, "red"), (blue, "blue"))
    )


def question_distance(rng: np.random.Generator, scene: Scene) -> SceneQuestion | None:
    objs, cands, disagree = scene.objects, [], []
    uniq = _unique(scene)
    for c in uniq:
        for a in uniq:
            for b in uniq:
                if len({a, b, c}) < 3:
                    continue
                C, A, B = objs[c], objs[a], objs[b]
                ra, rb, rc = A.size / 2, B.size / 2, C.size / 2
                da, db = np.hypot(A.x - C.x, A.z - C.z), np.hypot(B.x - C.x, B.z - C.z)
                if da + ra + rc < db - rb - rc - 0.2:  # A's farthest point beats B's nearest, with a margin
                    pa = np.hypot(A.u - C.u, (A.v - C.v))
                    pb = np.hypot(B.u - C.u, (B.v - C.v))
                    cands.append((c, a, b))
                    disagree.append(bool(pa > pb))  # pixel distance ranks them the other way
    pick = _pick_pair(rng, cands, disagree, 0.6)
    if pick is None:
        return None
    c, near, far = pick
    blue, green = (near, far) if rng.random() < 0.5 else (far, near)
    q = (
        f"Estimate the real-world distances between objects in this image. Which object is closer to the "
        f"{objs[c].name} (highlighted by a red box), the {objs[blue].name} (highlighted by a blue box) or the "
        f"{objs[green].name} (highlighted by a green box)?"
    )
    return SceneQuestion(
        "Distance",
        q,
        (objs[blue].name, objs[green].name),
        0 if blue == near else 1,
        ((c, "red"), (blue, "blue"), (green, "green")),
    )


QUESTION_MAKERS = {"Count": question_count, "Relation": question_relation, "Depth": question_depth,
                   "Distance": question_distance}  # fmt: skip


def cvbench_prompt(q: SceneQuestion) -> str:
    """``question + " Select from the following choices.\\n(A) x\\n(B) y"`` (benchmarks-spec §4)."""
    opts = "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(q.choices))
    return f"{q.question} Select from the following choices.\n{opts}"


def scene_with_question(
    rng: np.random.Generator, source: Source, task: str, tries: int = 100
) -> tuple[Scene, SceneQuestion]:
    """Resample scenes until the task's generator finds a valid question."""
    for _ in range(tries):
        scene = sample_scene(rng, source, n_objects=int(rng.integers(3, 7)) if task != "Count" else None)
        q = QUESTION_MAKERS[task](rng, scene)
        if q is not None:
            return scene, q
    raise RuntimeError(f"no valid {task} question in {tries} {source} scenes")


# --------------------------------------------------------------------------------------------- texts
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _spatial_clause(rng: np.random.Generator, scene: Scene) -> str | None:
    uniq = _unique(scene)
    if len(uniq) < 2:
        return None
    a, b = (int(i) for i in rng.choice(uniq, size=2, replace=False))
    A, B = scene.objects[a], scene.objects[b]
    if scene.source == "3d" and abs(A.z - B.z) > (A.size + B.size) / 2:
        rel = "closer to the camera than" if A.z < B.z else "farther from the camera than"
    else:
        rel = "to the left of" if A.u < B.u else "to the right of"
    return f"the {A.name} is {rel} the {B.name}"


def caption(rng: np.random.Generator, scene: Scene, spatial_rate: float = 0.0) -> str:
    """BLIP-style lowercase caption listing objects and colours in random order; spatial words only with probability
    ``spatial_rate`` (§6 "Training corpora")."""
    counts: dict[tuple[str, str], int] = {}
    for o in scene.objects:
        counts[(o.color, o.shape)] = counts.get((o.color, o.shape), 0) + 1
    keys = list(counts)
    parts = []
    for j in rng.permutation(len(keys)):
        (color, shape), n = keys[j], counts[keys[j]]
        parts.append(
            f"{_article(color)} {color} {shape}" if n == 1 else f"{NUMBER_WORDS[n]} {color} {shape}s"
        )
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    text += " " + BACKGROUND_PHRASE[scene.source]
    if rng.random() < spatial_rate:
        clause = _spatial_clause(rng, scene)
        if clause:
            text += ", " + clause
    return text


def _describe(rng: np.random.Generator, scene: Scene) -> str:
    sentences = [caption(rng, scene).capitalize() + "."]
    for _ in range(2):
        clause = _spatial_clause(rng, scene)
        if clause and clause.capitalize() + "." not in sentences:
            sentences.append(clause.capitalize() + ".")
    return " ".join(sentences)


def _mcq_turn(rng: np.random.Generator, q: SceneQuestion) -> tuple[str, str]:
    letter = chr(65 + q.answer)
    if rng.random() < 0.5:  # CV-Bench form (eval prompt of benchmarks-spec §2.1)
        return cvbench_prompt(q) + LETTER_SUFFIX, letter
    opts = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(q.choices))  # LLaVA-mix form (§5.2)
    return f"{q.question}\n{opts}{LETTER_SUFFIX}", letter


def _vqa_turn(rng: np.random.Generator, scene: Scene) -> tuple[str, str]:
    kind = int(rng.integers(3))
    objs = scene.objects
    shapes = [o.shape for o in objs]
    if kind == 1:
        unique_shapes = [o for o in objs if shapes.count(o.shape) == 1]
        if unique_shapes:
            o = unique_shapes[int(rng.integers(len(unique_shapes)))]
            return f"What color is the {o.shape}?{SHORT_SUFFIX}", o.color.capitalize()
    if kind == 2:
        shape = str(rng.choice(SHAPES))
        return f"How many {shape}s are there?{SHORT_SUFFIX}", str(shapes.count(shape))
    color, shape = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
    if rng.random() < 0.5:
        o = objs[int(rng.integers(len(objs)))]
        color, shape = o.color, o.shape
    present = any(o.color == color and o.shape == shape for o in objs)
    return (
        f"Is there {_article(color)} {color} {shape} in the image?{SHORT_SUFFIX}",
        "Yes" if present else "No",
    )


def _text_only_turn(rng: np.random.Generator) -> tuple[str, str]:
    kind = int(rng.integers(3))
    if kind == 0:
        a, b = (int(v) for v in rng.integers(0, 10, 2))
        return f"What is {a} plus {b}?{SHORT_SUFFIX}", str(a + b)
    if kind == 1:
        shape = str(rng.choice(SHAPES))
        return f"What is the plural of {shape}?{SHORT_SUFFIX}", f"{shape}s"
    mixes = (("red", "yellow", "Orange"), ("red", "blue", "Purple"), ("blue", "yellow", "Green"))
    a, b, c = mixes[int(rng.integers(len(mixes)))]
    return f"Which color do you get by mixing {a} and {b}?{SHORT_SUFFIX}", c


# --------------------------------------------------------------------------------------------- corpora
def _pretrain_entry(seed: int, i: int, spatial_rate: float) -> tuple[dict[str, Any], Scene]:
    rng = numpy_generator(seed, "train", "pretrain", i)
    scene = sample_scene(rng, SOURCES[int(rng.integers(3))])
    sid = f"{i + 1:09d}"
    instr = INSTRUCTIONS[int(rng.integers(len(INSTRUCTIONS)))]
    human = f"{instr}\n<image>" if rng.random() < 0.5 else f"<image>\n{instr}"
    entry = {"id": sid, "image": f"{sid[:5]}/{sid}.png",
             "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": caption(rng, scene, spatial_rate)}]}  # fmt: skip
    return entry, scene


SOURCES: tuple[Source, ...] = ("flat", "clutter", "3d")
_TASKS_FOR = {
    "flat": ("Count", "Relation"),
    "clutter": ("Count", "Relation"),
    "3d": ("Count", "Depth", "Distance"),
}


def _instruct_entry(
    seed: int, i: int, text_only_rate: float, mcq_used: dict[str, int], mcq_cap: int | None
) -> tuple[dict[str, Any], Scene | None, tuple[tuple[int, str], ...]]:
    rng = numpy_generator(seed, "train", "instruct", i)
    n_turns = int(rng.integers(1, 5))
    # ShareGPT analogue, exactly floor(n·rate) entries spread evenly: no image key, integer id (benchmarks-spec §5.2)
    if int((i + 1) * text_only_rate) > int(i * text_only_rate):
        turns = [_text_only_turn(rng) for _ in range(min(n_turns, 2))]
        return {"id": 10**9 + i, "conversations": _as_llava(turns)}, None, ()
    scene = sample_scene(rng, SOURCES[int(rng.integers(3))], n_objects=int(rng.integers(2, 7)))
    turns, boxes = [], ()
    for _ in range(n_turns):
        r = rng.random()
        if r < 0.3 and not boxes:
            task = str(rng.choice(_TASKS_FOR[scene.source]))
            q = QUESTION_MAKERS[task](rng, scene)
            if q is not None and (mcq_cap is None or mcq_used.get(task, 0) < mcq_cap):
                mcq_used[task] = mcq_used.get(task, 0) + 1
                boxes = q.boxes
                turns.append(_mcq_turn(rng, q))
                continue
        if r > 0.9:
            turns.append(("Describe the image in detail.", _describe(rng, scene)))
        else:
            turns.append(_vqa_turn(rng, scene))
    first = turns[0][0]
    turns[0] = ((f"<image>\n{first}" if rng.random() < 0.5 else f"{first}\n<image>"), turns[0][1])
    sid = f"{i + 1:012d}"
    return {"id": sid, "image": f"synth/images/{sid}.png", "conversations": _as_llava(turns)}, scene, boxes


def _as_llava(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [t for q, a in turns for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]


# --------------------------------------------------------------------------------------------- benchmarks
def _cvbench_rows(root: Path, seed: int, n: int, size: int) -> dict[str, int]:
    counts = {}
    for kind, tasks in (("2D", ("Count", "Relation")), ("3D", ("Depth", "Distance"))):
        rows = []
        for task in tasks:
            for k in range(n):
                rng = numpy_generator(seed, "test", "cvbench", task, k)
                source: Source = "3d" if kind == "3D" else ("flat" if k % 2 == 0 else "clutter")
                scene, q = scene_with_question(rng, source, task)
                idx = len(rows)
                filename = f"img/{kind}/{task.lower()}/{SOURCE_NAME[source].lower()}_{idx}.png"
                _save_png(render(scene, size, q.boxes), root / filename)
                rows.append({
                    "idx": idx, "type": kind, "task": task, "question": q.question, "choices": list(q.choices),
                    "answer": f"({chr(65 + q.answer)})", "prompt": cvbench_prompt(q), "filename": filename,
                    "source": SOURCE_NAME[source], "source_dataset": SOURCE_DATASET[source],
                    "source_filename": f"synth_test_{task.lower()}_{k}.png",
                    "target_class": q.target if source == "clutter" else None,
                    "target_size": _target_size(scene, q, size) if source == "clutter" else None,
                    "bbox": [[round(c * size, 2) for c in scene.objects[j].bbox] for j, _ in q.boxes] if kind == "3D" else None,
                })  # fmt: skip
                counts[task] = counts.get(task, 0) + 1
        _write_text(root / f"test_{kind.lower()}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return counts


def _target_size(scene: Scene, q: SceneQuestion, size: int) -> int:
    objs = [scene.objects[j] for j, _ in q.boxes] or [
        o for o in scene.objects if q.target and q.target in o.name
    ]
    return int(sum((o.s * size) ** 2 for o in objs))


def _mmvp_pair(rng: np.random.Generator, kind: str) -> tuple[Scene, Scene, str, tuple[str, str], int] | None:
    """One scene, one edit; returns (scene1, scene2, question, options, answer of scene1); scene2's is the other."""
    scene = sample_scene(rng, "3d", n_objects=int(rng.integers(2, 5)))
    objs, uniq = list(scene.objects), _unique(scene)
    if kind == "count":
        shape = objs[int(rng.integers(len(objs)))].shape
        n = sum(o.shape == shape for o in objs)
        for _ in range(60):
            new = _place(rng, "3d", shape, str(rng.choice(list(COLORS))))
            if all(_compatible("3d", new, p) for p in objs):
                more = replace(scene, objects=(*objs, new))
                return (scene, more, f"How many {shape}s are in the image?", (str(n), str(n + 1)), 0)
        return None
    if len(uniq) < 2:
        return None
    a, b = (int(i) for i in rng.choice(uniq, size=2, replace=False))
    A, B = objs[a], objs[b]
    if kind == "presence":
        fewer = replace(scene, objects=tuple(o for j, o in enumerate(objs) if j != a))
        return scene, fewer, f"Is there {_article(A.color)} {A.name} in the image?", ("Yes", "No"), 0
    if kind == "lateral":
        if abs(A.u - B.u) < 0.15:
            return None
        objs[a], objs[b] = (
            project(A.shape, A.color, B.x, B.z, A.size),
            project(B.shape, B.color, A.x, A.z, B.size),
        )
        q = f"Is the {A.name} to the left or to the right of the {B.name}?"
        return scene, replace(scene, objects=tuple(objs)), q, ("Left", "Right"), 0 if A.u < B.u else 1
    # depth: swap the two depths, keeping each object's image column (x scales with z)
    if abs(A.z - B.z) < (A.size + B.size) / 2 + 0.3:
        return None
    objs[a] = project(A.shape, A.color, A.x * B.z / A.z, B.z, A.size)
    objs[b] = project(B.shape, B.color, B.x * A.z / B.z, A.z, B.size)
    if not all(_compatible("3d", objs[i], objs[j]) for i in range(len(objs)) for j in range(i)):
        return None
    q = f"Which object is closer to the camera, the {A.name} or the {B.name}?"
    return scene, replace(scene, objects=tuple(objs)), q, (A.name, B.name), 0 if A.z < B.z else 1


def _mmvp(root: Path, seed: int, n_pairs: int, size: int) -> int:
    kinds = ("lateral", "depth", "count", "presence")
    rows = [["Index", "Question", "Options", "Correct Answer"]]
    for p in range(n_pairs):
        rng = numpy_generator(seed, "test", "mmvp", p)
        for _ in range(100):
            got = _mmvp_pair(rng, kinds[p % len(kinds)])
            if got is not None:
                break
        else:
            raise RuntimeError(f"MMVP pair {p}: no valid {kinds[p % len(kinds)]} edit in 100 scenes")
        s1, s2, question, options, ans1 = got
        if rng.random() < 0.5:  # which image of the pair comes first
            s1, s2, ans1 = s2, s1, 1 - ans1
        for scene, ans in ((s1, ans1), (s2, 1 - ans1)):
            index = len(rows)
            _save_jpg(render(scene, size), root / "MMVP Images" / f"{index}.jpg")
            rows.append(
                [str(index), question, f"(a) {options[0]} (b) {options[1]}", "(a)" if ans == 0 else "(b)"]
            )
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    _write_text(root / "Questions.csv", buf.getvalue())
    return n_pairs


# --------------------------------------------------------------------------------------------- files
def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")


def _save_jpg(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=95)


def generate_world(
    out_dir: str | os.PathLike[str],
    n_pretrain: int = 256,
    n_instruct: int = 256,
    n_bench_per_task: int = 24,
    image_size: int = 64,
    seed: int = 0,
    caption_spatial_rate: float = 0.0,
    n_mmvp_pairs: int = 16,
    mcq_cap_per_task: int | None = None,
    text_only_rate: float = 0.08,
) -> dict[str, Any]:
    """Write the whole synthetic world under ``out_dir`` (atomically) and return the counts (also in ``world.json``)."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        pre = []
        for i in range(n_pretrain):
            entry, scene = _pretrain_entry(seed, i, caption_spatial_rate)
            _save_png(render(scene, image_size), tmp / "pretrain" / entry["image"])
            pre.append(entry)
        _write_text(
            tmp / "pretrain" / "blip_laion_cc_sbu_558k.json", json.dumps(pre, indent=2, ensure_ascii=True)
        )
        inst, mcq_used = [], {}
        for i in range(n_instruct):
            entry, scene, boxes = _instruct_entry(seed, i, text_only_rate, mcq_used, mcq_cap_per_task)
            if scene is not None:
                _save_png(render(scene, image_size, boxes), tmp / "instruct" / entry["image"])
            inst.append(entry)
        _write_text(
            tmp / "instruct" / "llava_v1_5_mix665k.json", json.dumps(inst, indent=2, ensure_ascii=True)
        )
        counts: dict[str, Any] = {
            "pretrain": n_pretrain,
            "instruct": n_instruct,
            "instruct_text_only": sum(1 for e in inst if "image" not in e),
            "instruct_mcq": dict(sorted(mcq_used.items())),
            "cvbench": _cvbench_rows(tmp / "cvbench", seed, n_bench_per_task, image_size),
            "mmvp_pairs": _mmvp(tmp / "mmvp", seed, n_mmvp_pairs, image_size),
        }
        params = {"seed": seed, "image_size": image_size, "caption_spatial_rate": caption_spatial_rate,
                  "mcq_cap_per_task": mcq_cap_per_task, "text_only_rate": text_only_rate}  # fmt: skip
        _write_text(
            tmp / "world.json", json.dumps({"params": params, "counts": counts}, indent=2, sort_keys=True)
        )
    return counts


def corpus_texts(out_dir: str | os.PathLike[str]) -> Iterator[str]:
    """Every text a tokenizer for this world should know: conversations, benchmark prompts, template strings."""
    from jarvis.data.templates import FIXED_TEXTS  # light module; imported here to keep synthetic standalone

    root = Path(out_dir)
    for rel in ("pretrain/blip_laion_cc_sbu_558k.json", "instruct/llava_v1_5_mix665k.json"):
        for entry in json.loads((root / rel).read_text()):
            for turn in entry["conversations"]:
                yield turn["value"].replace("<image>", "")
    for kind in ("2d", "3d"):
        for line in (root / "cvbench" / f"test_{kind}.jsonl").read_text().splitlines():
            yield json.loads(line)["prompt"] + LETTER_SUFFIX
    with open(root / "mmvp" / "Questions.csv", newline="") as f:
        for row in list(csv.reader(f))[1:]:
            yield f"{row[1]} Options:\n{row[2]}{LETTER_SUFFIX}"
    yield from INSTRUCTIONS
    for texts in FIXED_TEXTS.values():
        yield from texts

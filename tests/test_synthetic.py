"""The synthetic world: byte-identical per seed, real file formats, question ground truth checked against scenes."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from jarvis.data.dataset import LlavaDataset, load_and_validate
from jarvis.data.images import ImageTransform
from jarvis.data.synthetic import (
    caption,
    corpus_texts,
    generate_world,
    question_count,
    question_depth,
    question_distance,
    question_relation,
    render,
    sample_scene,
)
from jarvis.data.tokenizer import build_tokenizer
from jarvis.seeding import numpy_generator

SMALL = dict(n_pretrain=40, n_instruct=60, n_bench_per_task=6, image_size=48, n_mmvp_pairs=4)
SPATIAL = re.compile(r"\b(left|right|above|below|closer|farther|behind|front)\b")


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("w") / "world"
    generate_world(out, seed=3, **SMALL)
    return out


def test_deterministic_per_seed(world, tmp_path) -> None:
    generate_world(tmp_path / "again", seed=3, **SMALL)
    assert digest(tmp_path / "again") == digest(world)  # byte-identical JSON, CSV and images
    generate_world(tmp_path / "other", seed=4, **SMALL)
    a = (world / "pretrain/blip_laion_cc_sbu_558k.json").read_bytes()
    assert (tmp_path / "other/pretrain/blip_laion_cc_sbu_558k.json").read_bytes() != a
    generate_world(tmp_path / "other", seed=3, **SMALL)  # regenerating over an existing world replaces it
    assert digest(tmp_path / "other") == digest(world)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]  # no temp dirs left


def test_pretrain_format(world) -> None:
    data = json.loads((world / "pretrain/blip_laion_cc_sbu_558k.json").read_text())
    assert len(data) == SMALL["n_pretrain"]
    for e in data:
        assert list(e) == ["id", "image", "conversations"] and re.fullmatch(r"\d{9}", e["id"])
        assert e["image"] == f"{e['id'][:5]}/{e['id']}.png" and (world / "pretrain" / e["image"]).is_file()
        h, g = e["conversations"]
        assert h["from"] == "human" and h["value"].count("<image>") == 1 and g["from"] == "gpt"
        assert g["value"] == g["value"].lower() and not SPATIAL.search(
            g["value"]
        )  # no spatial words by default
    _, report = load_and_validate(world / "pretrain/blip_laion_cc_sbu_558k.json", world / "pretrain", 0.0)
    assert report["dropped"] == 0


def test_spatial_caption_knob() -> None:
    rng = numpy_generator("t", 0)
    caps = [caption(rng, sample_scene(rng, "3d", n_objects=4), spatial_rate=1.0) for _ in range(20)]
    assert sum(bool(SPATIAL.search(c)) for c in caps) >= 10


def test_instruct_format_and_encoding(world) -> None:
    path = world / "instruct/llava_v1_5_mix665k.json"
    data = json.loads(path.read_text())
    text_only = [e for e in data if "image" not in e]
    assert 0 < len(text_only) < 0.2 * len(data) and all(isinstance(e["id"], int) for e in text_only)
    for e in data:
        turns = e["conversations"]
        assert 2 <= len(turns) <= 8 and [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        n_img = [t["value"].count("<image>") for t in turns]
        assert n_img == ([1] if "image" in e else [0]) + [0] * (len(turns) - 1)
    answers = [t["value"] for e in data for t in e["conversations"][1::2]]
    assert any(a in "ABCDE" and len(a) == 1 for a in answers)  # bare-letter MCQ answers
    kept, report = load_and_validate(path, world / "instruct", 0.0)
    tok = build_tokenizer(corpus_texts(world), 600, "vicuna_v1", "bpe")
    ds = LlavaDataset(kept, tok, world / "instruct", num_image_tokens=9, transform=ImageTransform(48, "pad"))
    assert len(ds) == len(data) and ds[0]["pixel_values"].shape == (3, 48, 48)


def test_cvbench_files(world) -> None:
    for kind, sources, tasks in (
        ("2d", {"ADE20K", "COCO"}, {"Count", "Relation"}),
        ("3d", {"Omni3D"}, {"Depth", "Distance"}),
    ):
        rows = [json.loads(line) for line in (world / f"cvbench/test_{kind}.jsonl").read_text().splitlines()]
        assert {r["source"] for r in rows} == sources and {r["task"] for r in rows} == tasks
        assert (
            [r["idx"] for r in rows] == list(range(len(rows))) == list(range(2 * SMALL["n_bench_per_task"]))
        )
        for r in rows:
            assert (world / "cvbench" / r["filename"]).is_file() and r["filename"].startswith(
                f"img/{kind.upper()}/"
            )
            letters = [f"({chr(65 + i)})" for i in range(len(r["choices"]))]
            assert r["answer"] in letters
            assert r["prompt"] == r["question"] + " Select from the following choices.\n" + "\n".join(
                f"{L} {c}" for L, c in zip(letters, r["choices"], strict=True))  # fmt: skip


def test_mmvp_pairs_flip_answer(world) -> None:
    with open(world / "mmvp/Questions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Index", "Question", "Options", "Correct Answer"]
    body = rows[1:]
    assert len(body) == 2 * SMALL["n_mmvp_pairs"]
    for a, b in zip(body[0::2], body[1::2], strict=True):
        assert a[1] == b[1] and a[2] == b[2] and {a[3], b[3]} == {"(a)", "(b)"}
        assert re.fullmatch(r"\(a\) [^(]+ \(b\) [^(]+", a[2])
    assert all((world / "mmvp/MMVP Images" / f"{r[0]}.jpg").is_file() for r in body)


def test_question_ground_truth_against_scenes() -> None:
    checked = {"Count": 0, "Relation": 0, "Depth": 0, "Distance": 0}
    for i in range(60):
        rng = numpy_generator("gt", i)
        scene = sample_scene(rng, "3d" if i % 2 else "flat", n_objects=5)
        q = question_count(rng, scene)
        *color, shape = q.target.split()  # "red cube" or "cube"
        color = color[0] if color else None
        assert q.question == f"How many {q.target}s are in the image?"
        truth = sum(o.shape == shape and (color is None or o.color == color) for o in scene.objects)
        assert q.choices[q.answer] == str(truth)
        checked["Count"] += 1
        if (r := question_relation(rng, scene)) is not None:
            a = scene.objects[r.boxes[0][0]]
            b = next(
                o
                for o in scene.objects
                if o.name == r.question.split(" and the ")[1].split(" in the image")[0]
            )
            gt = (
                ("left" if a.u < b.u else "right")
                if r.choices[0] == "left"
                else ("above" if a.v - a.s / 2 < b.v - b.s / 2 else "below")
            )
            assert r.choices[r.answer] == gt
            checked["Relation"] += 1
        if scene.source == "3d" and (d := question_depth(rng, scene)) is not None:
            red, blue = (scene.objects[j] for j, _ in d.boxes)
            near, far = (red, blue) if d.answer == 0 else (blue, red)
            assert near.z + near.size / 2 < far.z - far.size / 2 - 0.3
            checked["Depth"] += 1
        if scene.source == "3d" and (t := question_distance(rng, scene)) is not None:
            anchor, blue, green = (scene.objects[j] for j, _ in t.boxes)
            near, far = (blue, green) if t.answer == 0 else (green, blue)
            r = anchor.size / 2
            d_near = np.hypot(near.x - anchor.x, near.z - anchor.z) + near.size / 2 + r  # farthest points
            d_far = np.hypot(far.x - anchor.x, far.z - anchor.z) - far.size / 2 - r  # nearest points
            assert d_near < d_far - 0.2
            checked["Distance"] += 1
    assert min(checked.values()) >= 5, checked


def test_render_shape_and_determinism() -> None:
    scene = sample_scene(numpy_generator("r", 1), "clutter")
    a, b = render(scene, 32), render(scene, 32)
    assert a.size == (32, 32) and a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="source"):
        sample_scene(numpy_generator("r", 2), "space")  # type: ignore[arg-type]

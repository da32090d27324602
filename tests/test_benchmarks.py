"""Benchmark loaders on tiny files written here in the real layouts, answer lines, and loader -> scorer
round trips (an oracle answering the ground truth scores 100 in both modes)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from jarvis.eval.benchmarks import BENCHMARKS, answer_row, load_questions, mmvp_options
from jarvis.eval.scorers import score_answers


def _png(colour: str = "red") -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _cv_row(idx: int, task: str, source: str, answer: str, fname: str, typ: str) -> dict:
    return {
        "idx": idx,
        "type": typ,
        "task": task,
        "question": f"q{idx}?",
        "choices": ["left", "right"],
        "answer": answer,
        "prompt": f"q{idx}? Select from the following choices.\n(A) left\n(B) right",
        "filename": fname,
        "source": source,
    }


@pytest.fixture
def cv_root(tmp_path: Path) -> Path:
    rows2d = [
        _cv_row(0, "Count", "ADE20K", "(A)", "img/2D/count/ade20k_0.png", "2D"),
        _cv_row(1, "Relation", "COCO", "(B)", "img/2D/relation/coco_1.png", "2D"),
        _cv_row(2, "Relation", "ADE20K", "(B)", "img/2D/relation/ade20k_2.png", "2D"),
    ]
    rows3d = [
        _cv_row(7, "Depth", "Omni3D", "(A)", "img/3D/depth/omni3d_0.png", "3D"),
        _cv_row(9, "Distance", "Omni3D", "(B)", "img/3D/distance/omni3d_1.png", "3D"),
    ]
    for name, rows in (("test_2d.jsonl", rows2d), ("test_3d.jsonl", rows3d)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for r in rows2d + rows3d:
        (tmp_path / r["filename"]).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "blue").save(tmp_path / r["filename"])
    return tmp_path


def test_cvbench_loaders(cv_root: Path) -> None:
    ade = list(load_questions("ade", cv_root))
    assert [q.question_id for q in ade] == [0, 2]
    q = ade[0]
    assert q.qs == (
        "q0? Select from the following choices.\n(A) left\n(B) right\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert (q.max_new_tokens, q.gt_answer, q.category, q.options) == (512, "(A)", "Count", ("left", "right"))
    assert q.load_image().size == (8, 8)
    coco = list(load_questions("coco", cv_root))
    assert [(x.question_id, x.category) for x in coco] == [(1, "Relative location")]  # Relation is renamed
    omni = list(load_questions("omni", cv_root))
    assert [x.question_id for x in omni] == [0, 1]  # questionId = line index of test_3d.jsonl
    assert len(list(load_questions("cvbench", cv_root))) == 5
    assert len(list(load_questions("cvbench_2d", cv_root, limit=2))) == 2
    row = answer_row(ade[0], "A", "m")
    assert row == {
        "questionId": 0,
        "prompt": ade[0].qs,
        "answer": "A",
        "gt_answer": "(A)",
        "model_id": "m",
        "category": "Count",
        "options": ["left", "right"],
        "source": "ADE20K",
        "image": "img/2D/count/ade20k_0.png",
    }
    assert "image" not in answer_row(omni[0], "A", "m")


@pytest.mark.parametrize("mode", ["compat", "fixed"])
def test_cvbench_oracle_round_trip(cv_root: Path, mode: str) -> None:
    rows = [answer_row(q, q.gt_answer, "m") for q in load_questions("cvbench", cv_root)]
    s = score_answers("cvbench", rows, mode)
    assert s["overall"] == 100.0 and s["table"]["Accuracy 3D"] == 100.0


def test_mmvp_loader(tmp_path: Path) -> None:
    (tmp_path / "Questions.csv").write_text(
        "lndex,Question,Options,Correct Answer\n"
        "1,Is the door open?,(a) Open (b) Closed,(a)\n"
        "2,Is the door open?,(a) Open (b) Closed,(b)\n"
    )
    (tmp_path / "MMVP Images").mkdir()
    for i in (1, 2):
        Image.new("RGB", (4, 4)).save(tmp_path / "MMVP Images" / f"{i}.jpg")
    qs = list(load_questions("mmvp", tmp_path))
    assert qs[0].qs == (
        "Is the door open? Options:\nA. Open\nB. Closed\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert [q.gt_answer for q in qs] == ["(a)", "(b)"] and qs[1].image.name == "2.jpg"
    rows = [answer_row(q, a, "m") for q, a in zip(qs, ["A. Open", "b"], strict=True)]
    assert rows[0]["text_options"] == ["Open", "Closed"] and [r["pair_id"] for r in rows] == [0, 0]
    assert score_answers("mmvp", rows, "fixed")["overall"] == 100.0
    assert score_answers("mmvp", rows, "compat")["overall"] == 0.0  # "A. Open" fails in compat (spec §2.4)


def test_mmvp_options_split() -> None:
    assert mmvp_options("(a) Open (b) Closed") == ["Open", "Closed"]
    with pytest.raises(ValueError, match="cannot split"):
        mmvp_options("Open or Closed")


def _write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)


def test_blink_loader(tmp_path: Path) -> None:
    for cfg in (
        "Counting",
        "IQ_Test",
        "Object_Localization",
        "Relative_Depth",
        "Relative_Reflectance",
        "Spatial_Relation",
    ):
        _write_parquet(
            tmp_path / cfg / "val-00000-of-00001.parquet",
            [
                {
                    "idx": f"val_{cfg}_{i}",
                    "question": "How many?",
                    "sub_task": cfg,
                    "image_1": _png(),
                    "image_2": None,
                    "choices": ["1", "2"],
                    "answer": "(B)",
                    "prompt": "How many?\n(A) 1\n(B) 2",
                }
                for i in range(2)
            ],
        )
    qs = list(load_questions("blink", tmp_path))
    assert len(qs) == 12 and [q.question_id for q in qs[:3]] == [0, 1, 0]  # index within the category
    assert qs[0].qs.endswith(
        "\nPlease answer directly with only the letter of the correct option and nothing else."
    )
    assert qs[0].max_new_tokens == 32 and qs[0].load_image().size == (8, 8)
    rows = [answer_row(q, "B", "m") for q in qs]
    assert set(rows[0]) == {"question_id", "prompt", "answer", "gt_answer", "model_id", "category", "choices"}
    assert score_answers("blink", rows, "compat")["overall"] == 100.0


def test_mme_loader(tmp_path: Path) -> None:
    _write_parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet",
        [
            {
                "question_id": "count/0001.png",
                "image": _png(),
                "question": "Are there two cubes? Please answer yes or no.",
                "answer": a,
                "category": "count",
            }
            for a in ("Yes", "No")
        ],
    )
    qs = list(load_questions("mme", tmp_path))
    assert qs[0].qs == (
        "Are there two cubes? Please answer yes or no.\nAnswer the question using a single word or phrase."
    )
    rows = [answer_row(q, q.gt_answer, "m") for q in qs]
    assert rows[0]["pair_id"] == "count/0001.png"
    s = score_answers("mme", rows, "fixed")
    assert s["overall"] == 200.0 and s["perception"] == 200.0


def test_mmstar_pope_gqa_loaders(tmp_path: Path) -> None:
    _write_parquet(
        tmp_path / "mmstar" / "mmstar.parquet",
        [
            {
                "index": 5,
                "question": "Which? Options: A: cube, B: ball",
                "image": _png(),
                "answer": "B",
                "category": "coarse perception",
            }
        ],
    )
    q = next(load_questions("mmstar", tmp_path / "mmstar"))
    assert (q.question_id, q.max_new_tokens, q.category) == (5, 128, "coarse perception")
    assert score_answers("mmstar", [answer_row(q, "ball", "m")], "fixed")["overall"] == 100.0

    _write_parquet(
        tmp_path / "pope" / "data" / "test-00000-of-00001.parquet",
        [
            {
                "question_id": "1",
                "question": "Is there a cube in the image?",
                "answer": "yes",
                "category": "random",
                "image": _png(),
            }
        ],
    )
    q = next(load_questions("pope", tmp_path / "pope"))
    row = answer_row(q, "Yes", "m")
    assert row["prompt"] == q.qs and q.max_new_tokens == 128  # the full prompt (fix #10)
    assert score_answers("pope", [row], "compat")["overall"] == 100.0

    g = tmp_path / "gqa"
    _write_parquet(
        g / "testdev_balanced_images" / "testdev-00000-of-00001.parquet", [{"id": "n1", "image": _png()}]
    )
    _write_parquet(
        g / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet",
        [
            {
                "id": "q1",
                "imageId": "n1",
                "question": "What color is the cube?",
                "answer": "red",
                "types": {"structural": "query", "semantic": "attr", "detailed": "color"},
            },
            {
                "id": "q2",
                "imageId": "n1",
                "question": "What shape is it?",
                "answer": "cube",
                "types": {"structural": "query", "semantic": "attr", "detailed": "shape"},
            },
        ],
    )
    qs = list(load_questions("gqa", g))
    assert [(q.question_id, q.category, q.extension) for q in qs] == [
        ("q1", "query", "Answer the question using a single word or phrase."),
        ("q2", "query", "Answer the question using a single word or phrase."),
    ]
    rows = [answer_row(q, a, "m") for q, a in zip(qs, ["Red.", "a cube"], strict=True)]
    assert score_answers("gqa", rows, "compat")["overall"] == 50.0
    assert score_answers("gqa", rows, "fixed")["overall"] == 100.0


def test_missing_files_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="test_2d.jsonl"):
        list(load_questions("ade", tmp_path))
    with pytest.raises(FileNotFoundError, match="mme"):
        list(load_questions("mme", tmp_path))
    with pytest.raises(ValueError, match="unknown benchmark"):
        list(load_questions("vizwiz", tmp_path))
    assert "gqa" in BENCHMARKS


# ---------------------------------------------------------------------------------------------------------------
# tiny-world general benchmarks (jarvis.eval.synthetic_bench)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def general_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    from jarvis.eval.synthetic_bench import generate_general_benchmarks

    out = tmp_path_factory.mktemp("general")
    return out, generate_general_benchmarks(out, n_per_benchmark=13, image_size=32, seed=3)


def test_general_world_counts_and_round_trip(general_world: tuple[Path, dict[str, int]]) -> None:
    out, counts = general_world
    assert counts == {"blink": 13, "mme": 14, "mmstar": 13, "pope": 13, "gqa": 13}  # MME: whole image pairs
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    for bench, n in counts.items():
        qs = list(load_questions(bench, out / bench))
        assert len(qs) == n
        assert qs[0].load_image().size == (32, 32)
        oracle = [answer_row(q, q.gt_answer, "oracle") for q in qs]
        for mode in ("compat", "fixed"):
            s = score_answers(bench, oracle, mode)
            assert s["overall"] == (800.0 if bench == "mme" else 100.0), (bench, mode)  # 4 categories x 200
        blind = [answer_row(q, "", "blind") for q in qs]
        if bench not in ("mmstar", "pope"):  # those crash on empty answers in compat, by design
            assert score_answers(bench, blind, "compat")["overall"] == 0.0
        assert score_answers(bench, blind, "fixed")["unparseable_rate"] == 1.0


def test_general_world_formats(general_world: tuple[Path, dict[str, int]]) -> None:
    out, _ = general_world
    for q in load_questions("blink", out / "blink"):
        letters = [f"({chr(65 + i)})" for i in range(len(q.options))]
        assert q.gt_answer in letters and "\nSelect from the following choices.\n(A) " in q.text
    mme = list(load_questions("mme", out / "mme"))
    for a, b in zip(mme[::2], mme[1::2], strict=True):  # each image: the same id, one Yes and one No
        assert a.question_id == b.question_id and {a.gt_answer, b.gt_answer} == {"Yes", "No"}
        assert a.text.endswith(" Please answer yes or no.")
    for q in load_questions("mmstar", out / "mmstar"):
        assert q.gt_answer in "ABCD" and "\nOptions: A: " in q.text
    assert {q.gt_answer for q in load_questions("pope", out / "pope")} == {"yes", "no"}
    assert {q.category for q in load_questions("pope", out / "pope")} == {"adversarial", "popular", "random"}


def test_general_world_deterministic(tmp_path: Path, general_world: tuple[Path, dict[str, int]]) -> None:
    from jarvis.eval.synthetic_bench import generate_general_benchmarks

    ref, _ = general_world
    generate_general_benchmarks(tmp_path, n_per_benchmark=13, image_size=32, seed=3)
    generate_general_benchmarks(tmp_path, n_per_benchmark=13, image_size=32, seed=3)  # overwrite in place
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for f in files:
        assert (ref / f).read_bytes() == (tmp_path / f).read_bytes(), f
    other = tmp_path / "other"
    generate_general_benchmarks(other, n_per_benchmark=13, image_size=32, seed=4)
    assert (other / "mme/data/test-00000-of-00001.parquet").read_bytes() != (
        ref / "mme/data/test-00000-of-00001.parquet"
    ).read_bytes()

"""The nine extra benchmarks written from the synthetic world load with their real loaders and score an oracle at
100 (jarvis.eval.synthetic_bench_ext; the rehearsal's repos)."""

from __future__ import annotations

from pathlib import Path

from jarvis.eval.benchmarks import answer_row, load_questions
from jarvis.eval.scorers import score_answers
from jarvis.eval.synthetic_bench_ext import EXT_BENCHMARKS, generate_ext_benchmarks


def _oracle(bench: str, q) -> str:
    if bench == "ai2d":  # gt is the option index; the fixed scorer reads letters
        return chr(65 + int(q.gt_answer))
    gt = q.gt_answer
    return gt[0] if isinstance(gt, (list, tuple)) else str(gt)


def test_every_layout_loads_and_an_oracle_scores_100(tmp_path: Path) -> None:
    counts = generate_ext_benchmarks(tmp_path, n_per_benchmark=3, image_size=48, seed=0)
    assert set(counts) == set(EXT_BENCHMARKS)
    assert counts["mmbench_en"] == 12  # four circular copies of each question
    for bench in EXT_BENCHMARKS:
        qs = list(load_questions(bench, tmp_path / bench))
        assert len(qs) == counts[bench], bench  # scienceqa's text-only row is left out by the loader
        assert qs[0].load_image().size == (48, 48), bench
        rows = [answer_row(q, _oracle(bench, q), "oracle") for q in qs]
        assert score_answers(bench, rows, "fixed")["overall"] == 100.0, bench
        wrong = [answer_row(q, "zzz", "oracle") for q in qs]
        assert score_answers(bench, wrong, "fixed")["overall"] == 0.0, bench


def test_the_same_seed_writes_the_same_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate_ext_benchmarks(a, 2, 32, seed=3)
    generate_ext_benchmarks(b, 2, 32, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)

"""Report tests: numbers equal the scores files they come from; CSV/Markdown checked by hand on a tiny input;
seed CIs against a hand computation; plots are written (and were inspected by eye when this test was written)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from jarvis.report import build_report, ci95, read_loss_history


def _scores(path: Path, benchmark: str, overall: float, **extra: object) -> Path:
    path.write_text(json.dumps({"benchmark": benchmark, "overall": overall, **extra}))
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[dict, dict]:
    files: dict[tuple[str, str], Path] = {}
    # Hand-picked values: llava seeds 1, 2; jarvis seeds 1, 2; ade/coco/omni/mmvp/mme.
    table = {
        "llava__s1": (60.0, 50.0, 40.0, 20.0, 1200.0),
        "llava__s2": (62.0, 52.0, 44.0, 24.0, 1300.0),
        "jarvis__s1": (61.0, 50.0, 46.0, 26.0, 1210.0),
        "jarvis__s2": (63.0, 54.0, 52.0, 28.0, 1290.0),
    }
    for exp, (ade, coco, omni, mmvp, mme) in table.items():
        for bench, v in (("ade", ade), ("coco", coco), ("omni", omni), ("mmvp", mmvp), ("mme", mme)):
            files[(exp, bench)] = _scores(tmp_path / f"{exp}-{bench}.json", bench, v)
    losses = {}
    for k, exp in enumerate(("llava__s1", "jarvis__s1")):
        p = tmp_path / f"{exp}.jsonl"
        p.write_text(
            "".join(
                json.dumps(
                    {
                        "step": s,
                        "loss_ntp": 5.0 / (1 + s) + k,
                        **({"loss_jepa": 1.0 - 0.01 * s} if exp.startswith("jarvis") else {}),
                    }
                )
                + "\n"
                for s in range(0, 50, 5)
            )
        )
        losses[exp] = p
    return files, losses


def test_report_numbers_and_tables(tmp_path: Path, inputs: tuple[dict, dict]) -> None:
    files, losses = inputs
    out = tmp_path / "report"
    summary = build_report(files, losses, out, baselines={"jarvis": ["llava"]})
    rows = summary["rows"]
    assert set(rows) == {"jarvis", "llava"}
    # Derived CV-Bench columns, hand-computed for llava: 2D = mean((60+50)/2, (62+52)/2) = 56; 3D = 42; combined 49.
    assert rows["llava"]["cvbench_2d"]["mean"] == pytest.approx(56.0)
    assert rows["llava"]["cvbench_3d"]["mean"] == pytest.approx(42.0)
    assert rows["llava"]["cvbench"]["mean"] == pytest.approx(49.0)
    # The per-seed values are the scores files' numbers verbatim.
    assert rows["jarvis"]["mme"]["values"] == [1210.0, 1290.0]
    assert rows["jarvis"]["omni"]["values"] == [
        json.loads(files[("jarvis__s1", "omni")].read_text())["overall"],
        json.loads(files[("jarvis__s2", "omni")].read_text())["overall"],
    ]
    # 95 % CI of [20, 24]: t_{0.975,1} = 12.7062047; s = 2*sqrt(2); half-width = 12.7062 * 2.8284 / sqrt(2) = 25.4124.
    assert rows["llava"]["mmvp"]["ci95"] == pytest.approx(12.706204736174707 * 2.0, rel=1e-9)
    # vision_centric = mean(mmvp, cvbench_2d, cvbench_3d) (RealWorldQA absent): llava seed 1: (20 + 55 + 40)/3.
    assert summary["groups_used"]["vision_centric"] == ["mmvp", "cvbench_2d", "cvbench_3d"]
    assert rows["llava"]["vision_centric"]["values"][0] == pytest.approx(115 / 3)
    # Paired delta over seeds, omni: (46-40, 52-44) = (6, 8) -> mean 7, CI = 12.7062 * sqrt(2) / sqrt(2) = 12.7062.
    d = summary["deltas"]["jarvis − llava"]["omni"]
    assert d["paired"] and d["mean"] == pytest.approx(7.0) and d["ci95"] == pytest.approx(12.706204736174707)

    md = (out / "table.md").read_text()
    assert (
        "| row | cvbench_2d | cvbench_3d | cvbench | ade | coco | omni | mmvp | mme | vision_centric |" in md
    )
    assert "| llava | 56.00 ± 12.71 | 42.00 ± 25.41 | 49.00 ± 19.06 | 61.00 ± 12.71 |" in md
    # 2D per-seed diffs: 55.5 - 55 = 0.5 and 58.5 - 57 = 1.5 -> mean 1, s = 0.7071, CI = 12.7062 * 0.7071 / 1.4142.
    assert "| jarvis − llava | +1.00 ± 6.35 | +7.00 ± 12.71 |" in md
    with open(out / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    llava = next(r for r in table if r["row"] == "llava")
    assert float(llava["mme"]) == 1250.0 and llava["mme_n"] == "2"
    assert float(llava["mme_ci95"]) == pytest.approx(12.706204736174707 * 50.0)
    assert json.loads((out / "summary.json").read_text())["columns"][-1] == "general_hera"
    for png in ("scores.png", "loss_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_single_seed_rows_and_no_ci(tmp_path: Path) -> None:
    files = {
        ("a", "mmvp"): _scores(tmp_path / "a.json", "mmvp", 30.0),
        ("b", "mmvp"): _scores(tmp_path / "b.json", "mmvp", 20.0),
    }
    s = build_report(files, {}, tmp_path / "r", baselines={"a": ["b"]})
    assert math.isnan(s["rows"]["a"]["mmvp"]["ci95"])
    assert s["deltas"]["a − b"]["mmvp"]["mean"] == 10.0
    md = (tmp_path / "r" / "table.md").read_text()
    assert "| a | 30.00 | 30.00 |" in md  # mmvp, then vision_centric (mmvp only)
    assert "| a − b | +10.00 | +10.00 |" in md
    assert not (tmp_path / "r" / "loss_curves.png").exists()


def test_cvbench_file_supplies_2d_3d(tmp_path: Path) -> None:
    f = _scores(tmp_path / "c.json", "cvbench", 65.0, table={"Accuracy 2D": 70.0, "Accuracy 3D": 60.0})
    s = build_report({("x", "cvbench"): f}, {}, tmp_path / "r")
    assert (s["rows"]["x"]["cvbench_2d"]["mean"], s["rows"]["x"]["cvbench_3d"]["mean"]) == (70.0, 60.0)
    assert s["rows"]["x"]["cvbench"]["mean"] == 65.0


def test_explicit_seed_grouping(tmp_path: Path) -> None:
    files = {(e, "pope"): _scores(tmp_path / f"{e}.json", "pope", v) for e, v in (("r1", 80.0), ("r2", 84.0))}
    s = build_report(files, {}, tmp_path / "r", seed_groups={"run": ["r1", "r2"]})
    assert s["rows"]["run"]["pope"]["mean"] == 82.0 and s["rows"]["run"]["pope"]["n"] == 2


def test_bad_inputs(tmp_path: Path) -> None:
    f = _scores(tmp_path / "a.json", "mmvp", 1.0)
    with pytest.raises(ValueError, match="filed under"):
        build_report({("a", "pope"): f}, {}, tmp_path / "r")
    with pytest.raises(ValueError, match="no scores"):
        build_report({("a", "mmvp"): f}, {}, tmp_path / "r", baselines={"a": ["zzz"]})
    with pytest.raises(ValueError, match="no score files"):
        build_report({}, {}, tmp_path / "r")


def test_loss_history_csv(tmp_path: Path) -> None:
    p = tmp_path / "h.csv"
    p.write_text("step,loss_ntp,loss_jepa\n0,2.5,\n10,2.0,0.7\n")
    h = read_loss_history(p)
    assert list(h["step"]) == [0.0, 10.0] and list(h["loss_ntp"]) == [2.5, 2.0]
    assert math.isnan(h["loss_jepa"][0]) and h["loss_jepa"][1] == 0.7


def test_ci95_matches_hand_value() -> None:
    # n=3, values 1,2,3: s = 1, t_{0.975,2} = 4.302652729911275 -> 4.3027/sqrt(3).
    assert ci95([1.0, 2.0, 3.0]) == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert math.isnan(ci95([5.0]))


def test_wilson_interval_by_hand() -> None:
    from jarvis.report import run_interval, wilson

    # 12/24, z = 1.96: centre (0.5 + z²/48)/(1 + z²/24) = 0.5; half z·sqrt(0.25/24 + z²/2304)/(1 + z²/24) = 0.18573
    lo, hi = wilson(12, 24)
    assert lo == pytest.approx(31.427, abs=1e-2) and hi == pytest.approx(68.573, abs=1e-2)
    lo, hi = wilson(0, 10)  # never below 0: z²/(n + z²) = 0.27753 at the top
    assert lo == pytest.approx(0.0, abs=1e-9) and hi == pytest.approx(27.753, abs=1e-2)
    iv = run_interval({"metric": "accuracy", "overall": 50.0, "n": 24, "n_questions": 24})
    assert (iv["n_questions"], round(iv["wilson_lo"], 2)) == (24, 31.43)
    pairs = run_interval({"metric": "pair_accuracy", "overall": 50.0, "n": 24, "pairs": 12, "pairs_correct": 6})
    # 6 of 12 pairs: half = 1.96·sqrt(0.25/12 + z²/576)/(1 + z²/12) = 0.24623
    assert pairs["units"] == 12 and pairs["wilson_hi"] == pytest.approx(74.623, abs=1e-2)
    assert run_interval({"metric": "score", "overall": 1200.0, "n": 24})["wilson_lo"] != run_interval(
        {"metric": "score", "overall": 1200.0, "n": 24})["wilson_lo"]  # NaN: MME's sum is not a proportion


def test_per_run_table_and_paired_deltas(tmp_path: Path) -> None:
    files = {}
    for run, v in (("a__s0", 50.0), ("a__s1", 62.5), ("b__s0", 45.0), ("b__s1", 50.0)):
        files[(run, "pope")] = _scores(tmp_path / f"{run}.json", "pope", v, metric="accuracy", n=24,
                                       n_questions=24)
    s = build_report(files, {}, tmp_path / "r", baselines={"a": ["b"]},
                     seed_groups={"a": ["a__s0", "a__s1"], "b": ["b__s0", "b__s1"]})
    d = s["deltas"]["a − b"]["pope"]
    assert d["paired"] and d["values"] == [5.0, 12.5] and d["mean"] == 8.75
    assert d["ci95"] == pytest.approx(12.706204736 * 5.303300858899107 / 2 ** 0.5)  # t(0.975, 1)·s/√2
    md = (tmp_path / "r" / "table.md").read_text()
    assert "Per run" in md and "n=24" in md and "[31.4, 68.6]" in md  # a__s0: 12/24


def test_partial_scores_are_marked_in_the_report(tmp_path: Path) -> None:
    # Before: a score made on a subset (evaluation.limit) entered the report like a full-benchmark one.
    cov = {"answered": 5, "total": 16, "fraction": 5 / 16, "partial": True}
    files = {("a", "pope"): _scores(tmp_path / "a.json", "pope", 60.0, n=5, metric="accuracy", coverage=cov,
                                    partial=True),
             ("b", "pope"): _scores(tmp_path / "b.json", "pope", 50.0, n=16, metric="accuracy",
                                    coverage={"answered": 16, "total": 16, "fraction": 1.0, "partial": False})}
    summary = build_report(files, {}, tmp_path / "report")
    md = (tmp_path / "report" / "table.md").read_text()
    assert "PARTIAL scores" in md and "a/pope (5/16)" in md and "n=5/16 PARTIAL" in md
    assert "b/pope" not in md.split("PARTIAL scores")[1].split("\n")[0]
    assert summary["partial"] == ["a/pope"]
    assert summary["runs"]["b"]["pope"]["partial"] is False


@pytest.mark.parametrize("overall", [None, "NaN", float("nan"), float("inf"), "60"])
def test_undefined_or_non_numeric_overall_is_refused_naming_the_file(tmp_path: Path, overall: object) -> None:
    # Before: a NaN overall reached the tables as "nan"; a null one failed with a TypeError traceback.
    from jarvis.io import StageFailed

    path = tmp_path / "x.json"
    if overall == "NaN":
        path.write_text('{"benchmark": "pope", "overall": NaN}')  # what json.dumps writes for a NaN
    else:
        _scores(path, "pope", overall)  # type: ignore[arg-type]
    with pytest.raises(StageFailed, match=r"x\.json: .*(not a finite number|not strict JSON)"):
        build_report({("a", "pope"): path}, {}, tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_malformed_coverage_is_refused(tmp_path: Path) -> None:
    path = _scores(tmp_path / "x.json", "pope", 60.0, coverage={"answered": 0, "total": 16})
    with pytest.raises(ValueError, match=r"x\.json: malformed coverage"):
        build_report({("a", "pope"): path}, {}, tmp_path / "report")


def test_report_stage_refuses_missing_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import ROOT
    from jarvis.plan import load
    from jarvis.stages import report as stage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JARVIS_ROOT", str(tmp_path))
    plan = load(ROOT / "params.yaml").resolve("report")
    with pytest.raises(FileNotFoundError, match="report: missing scores files"):
        stage.run(plan)
    assert not (tmp_path / "mlruns").exists()  # refused before any MLflow run opened


def _controlled(path: Path, bench: str, overall: float, top: str, top_count: int, types: dict) -> Path:
    """A scores file as the evaluate stage writes it: with question types and a 16-answer distribution."""
    dist = {"top_answer": top, "top_share": top_count / 16, "n": 16, "distinct": 2, "flagged": top_count >= 15}
    return _scores(path, bench, overall, question_types=types, answer_distribution=dist)


def _types(presence: tuple[int, int], colour: tuple[int, int] | None = None) -> dict:
    out = {"presence": {"correct": presence[0], "total": presence[1], "accuracy": 100 * presence[0] / presence[1],
                        "chance": 50.0}}
    if colour:
        out["colour (open)"] = {"correct": colour[0], "total": colour[1], "accuracy": 100 * colour[0] / colour[1],
                                "chance": None}
    return out


def test_blind_rows_question_types_and_answer_flags(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Issue 12: a run answering "yes" to 15 of 16 POPE questions is flagged; 14 of 16 (87.5 %) is not.
    files = {
        ("llava__s1", "pope"): _controlled(tmp_path / "a.json", "pope", 75.0, "yes", 15, _types((12, 16))),
        ("llava__s2", "pope"): _controlled(tmp_path / "b.json", "pope", 62.5, "yes", 14, _types((10, 16))),
        ("llava__s1", "gqa"): _controlled(tmp_path / "c.json", "gqa", 40.0, "red", 4, _types((3, 4), (1, 4))),
        ("llava__s2", "gqa"): _controlled(tmp_path / "d.json", "gqa", 30.0, "red", 4, _types((2, 4), (2, 4))),
        ("llava (blind)__s1", "pope"): _controlled(tmp_path / "e.json", "pope", 50.0, "yes", 16, _types((8, 16))),
        ("llava (blind)__s2", "pope"): _controlled(tmp_path / "f.json", "pope", 56.25, "no", 9, _types((9, 16))),
    }
    out = tmp_path / "report"
    with caplog.at_level("WARNING", logger="jarvis.report_controls"):
        summary = build_report(files, {}, out)
    rows = summary["rows"]
    assert summary["blind_rows"] == ["llava (blind)"] and rows["llava (blind)"]["pope"]["values"] == [50.0, 56.25]
    # blind pope: mean 53.125; s = 4.41942; CI = 12.7062047 * 4.41942 / sqrt(2) = 39.7069
    assert rows["llava (blind)"]["pope"]["ci95"] == pytest.approx(12.706204736174707 * 3.125, rel=1e-9)
    assert summary["deltas"] == {}  # no baselines given: a blind row is never a delta by itself

    # question types pooled over benchmarks, then seeds: llava presence s1 (12+3)/20 = 75 %, s2 (10+2)/20 = 60 %
    qt = summary["question_types"]
    assert qt["columns"] == ["presence", "colour (open)"]
    assert qt["rows"]["llava"]["presence"]["values"] == [75.0, 60.0]
    assert qt["rows"]["llava"]["presence"]["ci95"] == pytest.approx(12.706204736174707 * 7.5, rel=1e-9)
    assert qt["rows"]["llava"]["colour (open)"]["values"] == [25.0, 50.0]
    assert "colour (open)" not in qt["rows"]["llava (blind)"]  # gqa not run blind here
    assert qt["chance"] == {"presence": 50.0, "colour (open)": None}

    flags = summary["answer_flags"]
    assert flags == [{"run": "llava (blind)__s1", "arm": "llava (blind)", "seed": "1", "benchmark": "pope",
                      "answer": "yes", "share": 1.0, "n": 16},
                     {"run": "llava__s1", "arm": "llava", "seed": "1", "benchmark": "pope", "answer": "yes",
                      "share": 0.9375, "n": 16}]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("llava seed 1 pope: 'yes' is 93.8% of 16 answers" in w for w in warnings), warnings
    assert not any("seed 2" in w for w in warnings)

    md = (out / "table.md").read_text()
    assert "| llava | 68.75 ± 79.41 ⚠ | 35.00 ± 63.53 | 68.75 ± 79.41 |" in md  # a flagged run's pooled cell
    assert "| llava (blind) | 53.12 ± 39.71 ⚠ | — | 53.12 ± 39.71 |" in md
    assert "- ⚠ llava seed 1, pope: 'yes' is 93.8 % of 16 answers" in md and "llava seed 2, pope" not in md
    assert "| llava__s1 | 75.00 n=0 ⚠ | 40.00 n=0 |" in md and "| llava__s2 | 62.50 n=0 | 30.00 n=0 |" in md
    assert "### Question types" in md and "| chance | 50.00 | — |" in md and "(open)` types" in md
    with open(out / "table.csv", newline="") as fh:
        assert [r["row"] for r in csv.DictReader(fh)] == ["llava (blind)", "llava"]


def test_no_flags_says_so(tmp_path: Path) -> None:
    files = {("a__s1", "pope"): _controlled(tmp_path / "a.json", "pope", 50.0, "yes", 14, _types((8, 16)))}
    summary = build_report(files, {}, tmp_path / "report")
    md = (tmp_path / "report" / "table.md").read_text()
    assert summary["answer_flags"] == [] and md.count("⚠") == 1  # the Flags section's legend only
    assert "None of the 1 (run, benchmark) answer sets is flagged." in md


def test_blind_rows_are_logged_under_blind_in_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow refuses "(" in a metric key: "llava (blind)" means go to blind/llava/<column>.
    import mlflow

    from jarvis.stages.report import _log_to_mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    cell = {"mean": 60.0, "ci95": float("nan"), "n": 1, "values": [60.0]}
    summary = {"columns": ["pope"], "rows": {"llava": {"pope": cell}, "llava (blind)": {"pope": {**cell, "mean": 50.0}}}}
    with mlflow.start_run() as run:
        _log_to_mlflow(summary)
    metrics = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert metrics == {"llava/pope": 60.0, "blind/llava/pope": 50.0}

"""benchmarks/bench_oracle.py runs end to end at a few steps; no accuracy is asserted (it is a measurement)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_oracle  # noqa: E402


def test_a_short_curve_has_every_type_trained_and_blind(tmp_path: Path) -> None:
    out = tmp_path / "curve.json"
    types = sorted(bench_oracle.MAKERS)
    bench_oracle.main(["--steps", "2", "--every", "2", "--n-train", "12", "--n-test", "12", "--image-size", "32",
                       "--object-scale", "1.7", "--types", ",".join(types), "--json", str(out)])
    summary = json.loads(out.read_text())
    (point,) = summary["curve"]
    assert point["step"] == 2
    for t in types:
        assert 0 <= point[t] <= 100 and 0 <= point[f"{t} blind"] <= 100
        assert 0 < summary["chance"][t] < 100


def test_unknown_type_is_named() -> None:
    with pytest.raises(SystemExit):
        bench_oracle.main(["--types", "count,nope"])

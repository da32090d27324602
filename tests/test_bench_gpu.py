"""benchmarks/bench_gpu.py runs its whole code path on CPU at tiny shapes (``--tiny``); no timing is asserted."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_gpu  # noqa: E402


def test_tiny_code_path(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    argv = ["--tiny", "--steps", "1", "--warmup", "1", "--peak-tflops", "1", "--json", str(out)]
    summary = bench_gpu.main(
        [*argv, "--variants", "st1_llava", "st1_jarvis", "st1_jarvis_cached", "st2_llava"]
    )
    assert out.is_file() and set(summary["variants"]) == {
        "st1_llava",
        "st1_jarvis",
        "st1_jarvis_cached",
        "st2_llava",
    }
    for r in summary["variants"].values():
        assert r["median_s"] > 0 and r["model_tflop"] > 0 and math.isfinite(r["mfu"])
    jarvis, llava = summary["variants"]["st1_jarvis"], summary["variants"]["st1_llava"]
    assert (
        jarvis["llm_seq_run"] < jarvis["llm_seq_full"] == llava["llm_seq_full"]
    )  # unattended tokens dropped
    assert "st1_jarvis/st1_llava" in summary["ratios"]


def test_step_flops_count_the_lm_backward_passes() -> None:
    """Stage 2 trains the LM (forward + two backward matmuls), stage 1 only propagates through it (two)."""
    shapes = bench_gpu.TINY
    model = bench_gpu.build(
        shapes, jepa=False, device=bench_gpu.torch.device("cpu"), dtype=bench_gpu.torch.float32
    )
    frozen = bench_gpu.step_flops(shapes, model, seq=48.0, n_labels=0, live=False, lm_trains=False)
    trained = bench_gpu.step_flops(shapes, model, seq=48.0, n_labels=0, live=False, lm_trains=True)
    heads = 3 * 2 * sum(p.numel() for p in model.projector.parameters()) * shapes.batch * 36
    assert math.isclose((trained - heads) / (frozen - heads), 1.5)

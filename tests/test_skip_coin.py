"""JEPA skip coin (paper-spec §7): seeded by (seed, stage, step, micro-step), identical on every rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jarvis.masking import draw_skip

REPO = Path(__file__).resolve().parents[1]


def test_deterministic_and_extremes() -> None:
    draws = [draw_skip(42, "pretrain", s, m, 0.2) for s in range(200) for m in range(2)]
    assert draws == [draw_skip(42, "pretrain", s, m, 0.2) for s in range(200) for m in range(2)]
    assert 0.1 < sum(draws) / len(draws) < 0.3  # frequency ~ skip_prob
    assert draws != [draw_skip(43, "pretrain", s, m, 0.2) for s in range(200) for m in range(2)]
    assert not any(draw_skip(42, "pretrain", s, 0, 0.0) for s in range(100))
    assert all(draw_skip(42, "pretrain", s, 0, 1.0) for s in range(100))
    with pytest.raises(ValueError, match="skip_prob"):
        draw_skip(42, "pretrain", 0, 0, 1.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from jarvis.masking import draw_skip

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(1000 + rank)  # diverged global RNGs must not matter
    torch.rand(rank + 1)
    mine = torch.tensor([int(draw_skip(42, "pretrain", s, m, 0.3)) for s in range(64) for m in range(2)])
    gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    if rank == 0:
        with open(sys.argv[1], "w") as fh:
            json.dump([g.tolist() for g in gathered], fh)
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_skip_coin_identical_on_two_ranks(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "draws.json"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [
        str(torchrun),
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(script),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = json.loads(out.read_text())
    assert rank0 == rank1
    assert 0 < sum(rank0) < len(rank0)  # a real coin, not a constant

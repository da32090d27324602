"""Process launch for training stages: the same `jarvis pretrain` command runs 1 process, N local processes
(re-exec under torchrun) or one torchrun per node under `srun` on SLURM (stack-facts §8-9)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _first_slurm_host() -> str:
    out = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                         check=True, capture_output=True, text=True).stdout.split()
    return out[0]


def maybe_relaunch(nproc: int, nodes: int) -> None:
    """Re-exec this command under torchrun when the stage wants more than one process and none is running yet."""
    if "LOCAL_RANK" in os.environ or (nproc == 1 and nodes == 1):
        return
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, f"--nproc-per-node={nproc}"]
    if nodes > 1:
        if "SLURM_JOB_NODELIST" not in os.environ:
            raise RuntimeError(f"this stage asks for {nodes} nodes: run it under SLURM (srun), one task per node")
        cmd += [f"--nnodes={nodes}", f"--node-rank={os.environ.get('SLURM_NODEID', '0')}",
                "--rdzv-backend=c10d", f"--rdzv-endpoint={_first_slurm_host()}:29500",
                f"--rdzv-id={os.environ.get('SLURM_JOB_ID', 'jarvis')}"]
    else:
        cmd += ["--standalone"] if "SLURM_JOB_ID" not in os.environ else [
            "--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    cmd += ["-m", "jarvis", *sys.argv[1:]]
    os.execv(cmd[0], cmd)


def hard_exit(code: int) -> None:
    """Leave a finished distributed process with ``os._exit`` after flushing.

    DeepSpeed/gloo leave C++ threads behind; their static destructors at interpreter exit intermittently abort
    with "terminate called without an active exception" (SIGABRT) even after barrier + destroy_process_group
    (stack-facts §3 saw 2 of 7 runs; we saw it on ZeRO-3 here), and torchrun then reports the whole run failed.
    Everything this process had to write is written and closed by the time this is called.
    """
    import logging

    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)

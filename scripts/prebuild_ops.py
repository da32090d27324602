"""Compile DeepSpeed's CPU communication op once, at set-up (``make setup``), not in the first training stages.

On a machine without a GPU, DeepSpeed's CPU accelerator JIT-compiles its shared-memory comm op (``deepspeed_shm_comm``)
the first time a process initialises its communication backend: about 35 s of C++ compilation, which the default's
first two training stages paid side by side on a fresh machine. Built here into ``TORCH_EXTENSIONS_DIR`` (the
Makefile's, ``.cache/torch_extensions``), every later process loads it. On a GPU machine there is nothing to build.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    # The stages run with the venv's bin first on PATH (make run, the tests, an activated venv), so torch builds with
    # the venv's `ninja` (pip's ninja 1.13); a build by another ninja on PATH (Debian's 1.11 writes an older
    # .ninja_log) was redone from scratch by the first stage that loaded the op.
    bindir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        print(f"prebuild_ops: accelerator {accelerator.device_name()}: nothing to build")
        return 0
    builder = accelerator.create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        print("prebuild_ops: this DeepSpeed has no compatible CPU comm op: nothing to build")
        return 0
    start = time.perf_counter()
    builder.load(verbose=False)
    print(f"prebuild_ops: {builder.absolute_name()} ready ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# One prepared GPU check (device tool): real-shape stage-1/2 steps (bench_gpu.py), then the tiny and medium configs.
# The device image has its own torch; transformers 5.24 and its hub client are carried as wheels in .wheels/
# (`pip download --no-deps transformers==5.24.0 huggingface_hub==2.4.0 tokenizers==0.23.3 httpx2 httpcore2 annotated_doc`).
set -euo pipefail
site=$(mktemp -d)
python3 -m pip install -q --no-deps --target "$site" .wheels/*.whl
export PYTHONPATH="$site:$PWD/src"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
out=${OUT:-/tmp}
# Real shapes scaled to one GPU (issue 13): timings, then a short run counting host syncs (CUDA sync debug mode).
python3 benchmarks/bench_gpu.py --steps 10 --warmup 3 --json "$out/gpu_real_shapes.json"
python3 benchmarks/bench_gpu.py --steps 2 --warmup 1 --sync-debug --variants st1_jarvis st1_jarvis_cached st2_llava \
  --json "$out/gpu_sync_check.json"
# The same steps with FlexAttention block masks instead of the dense mask (issue 13: JEPA/LLaVA <= 1.05 cached);
# the first test checks flex == dense losses and gradients on the GPU.
rc=0; python3 -m pytest -q -p no:cacheprovider tests/test_flex_attention.py > "$out/flex_equivalence.txt" 2>&1 || rc=$?
echo "flex == dense test: exit $rc (log: flex_equivalence.txt)"; tail -3 "$out/flex_equivalence.txt"
python3 benchmarks/bench_gpu.py --steps 10 --warmup 3 --attention flex --json "$out/gpu_real_shapes_flex.json"
python3 benchmarks/bench_step.py --config medium --device cuda --steps 20 --warmup 3 --json "$out/medium_cuda.json"
python3 benchmarks/bench_step.py --config tiny --device cuda --steps 20 --warmup 3 --json "$out/tiny_cuda.json"

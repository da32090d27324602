"""The rehearsal: the paper configuration end to end, `snakemake --profile slurm all` on the local SLURM cluster.

The rehearsal world (jarvis.rehearsal) holds the paper's repos under their real ids in an offline hub cache
(`HF_HOME`, `HF_HUB_OFFLINE=1`): a float16 Llama in pickled shards with a SentencePiece tokenizer, a full CLIPModel
in one pickle, DINOv2 in safetensors, LCS-558K's JSON and images.zip, the 665K JSON with text-only entries, each
benchmark's real files; the 665K mix's six image archives are served over HTTP on 127.0.0.1 at the URLs of
`datasets.rehearsal15`. The run selects the three rehearsal arms (the paper rows' exact settings; only sizes and the
network differ) and every benchmark the world has, with 2 processes per training stage. Its own tier:
`make test-rehearsal` (marker `rehearsal`), which `.ci/run` runs after `make test`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from pipeline_utils import dvc_stale, make_project, run
from test_slurm_local import _require_cluster

pytestmark = [pytest.mark.rehearsal, pytest.mark.slurm, pytest.mark.slow, pytest.mark.pipeline]

ARMS = ["rehearsal_llava", "rehearsal_llava_bidir", "rehearsal_jarvis"]
BENCHMARKS = ["cvbench_2d", "cvbench_3d", "mmvp", "blink", "mme", "mmstar", "pope", "gqa",
              "realworldqa", "vstar", "mmbench_en", "seed", "scienceqa", "ai2d", "textvqa", "chartqa", "ocrbench"]
SOURCES = ["coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K", "vg/VG_100K_2"]


def test_rehearsal_snakemake_profile_slurm_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jarvis import rehearsal

    _require_cluster()
    project = tmp_path / "proj"
    project.mkdir()
    make_project(project)
    t0 = time.perf_counter()
    world = tmp_path / "world"
    run(project, "python", "-m", "jarvis.rehearsal", "world", "--out", str(world))
    record = json.loads((world / "world.json").read_text())
    monkeypatch.setenv("HF_HOME", str(world / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["run"].update(study="jarvis-rehearsal", experiments=ARMS, seeds=[0], benchmarks=BENCHMARKS)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    urls = [a["url"] for a in raw["datasets"]["rehearsal15"]["instruct"]["url_archives"].values()]
    ports = {int(re.match(r"http://127\.0\.0\.1:(\d+)/", u).group(1)) for u in urls}
    assert ports == {rehearsal.PORT}, urls
    # the archives' checksums in params.yaml are the generated ones (a real run pins the published ones)
    for name, archive in raw["datasets"]["rehearsal15"]["instruct"]["url_archives"].items():
        assert archive["checksum"] == record["archives"][name]["checksum"], name
    run(project, "jarvis", "dag", "render")
    run(project, "bash", str(ROOT / "scripts" / "link-profile.sh"))
    try:
        server = rehearsal.serving(world)  # the port of datasets.rehearsal15's URLs
        server.__enter__()
    except OSError as err:
        pytest.fail(f"cannot serve the rehearsal archives on 127.0.0.1:{rehearsal.PORT}: {err}")
    t1 = time.perf_counter()
    try:
        res = run(project, "timeout", "-k", "30", "1500", "snakemake", "--profile", "slurm", "all",
                  "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
                  check=False, timeout=1600)
    finally:
        server.__exit__(None, None, None)
    wall = time.perf_counter() - t1
    log = res.stdout + res.stderr + "".join(f.read_text() for f in (project / ".snakemake" / "log").glob("*.log"))
    assert res.returncode == 0, log[-8000:]

    # every stage ran as its own SLURM job
    stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    jobs = set(re.findall(r"SLURM jobid (\d+)", log))
    assert len(jobs) == len(stages), (len(jobs), stages)
    assert dvc_stale(project) == set()

    # the report holds every arm and benchmark
    summary = json.loads((project / "reports" / "summary.json").read_text())
    table = (project / "reports" / "table.md").read_text()
    for arm in ARMS:
        assert arm in table, arm
        scores = json.loads((project / f"runs/{arm}/s0/eval/scores.json").read_text())
        for bench in BENCHMARKS:
            assert (project / f"runs/{arm}/s0/eval/{bench}/scores.json").is_file(), (arm, bench)
            assert bench in json.dumps(scores), (arm, bench)
    for bench in BENCHMARKS:
        assert bench in json.dumps(summary), bench

    # hub.lock.yaml pins every repo to the commit the cache's refs/main named
    lock = yaml.safe_load((project / "hub.lock.yaml").read_text())
    pinned = {f"{kind}:{repo}": revs["main"] for kind, repos in lock.items() if kind in ("model", "dataset")
              for repo, revs in repos.items()}
    assert pinned == record["commits"]

    # pickled weights converted once, recorded in the component's manifest; DINOv2's safetensors taken as they are
    llm = json.loads((project / "models/llm/vicuna7b/download.json").read_text())
    assert llm["converted"]["from"] == ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    assert llm["converted"]["loader"] == "torch.load(weights_only=True)"
    clip = json.loads((project / "models/tower/clip_l336/download.json").read_text())
    assert clip["converted"]["from"] == ["pytorch_model.bin"] and clip["grid"] == [24, 24]
    dino = json.loads((project / "models/tower/dinov2_l/download.json").read_text())
    assert dino["converted"] is None and dino["grid"] == [24, 24]  # fed the 336-px crop

    # stage 2 read all five sources (six folders) and the text-only entries
    instruct = project / "data/rehearsal15/instruct"
    entries = json.loads((instruct / "llava_v1_5_mix665k.json").read_text())
    folders = Counter(next(s for s in SOURCES if e["image"].startswith(s + "/")) for e in entries if "image" in e)
    assert set(folders) == set(SOURCES)
    n_text = sum(1 for e in entries if "image" not in e)
    assert n_text > 0 and all((instruct / e["image"]).is_file() for e in entries if "image" in e)
    for arm in ARMS:
        for stage in ("pretrain", "finetune"):
            m = json.loads((project / f"runs/{arm}/s0/{stage}/metrics.json").read_text())
            assert m["world_size"] == 2 and m["distributed_wrapper"] == "DeepSpeedEngine", (arm, stage)
        ft = json.loads((project / f"runs/{arm}/s0/finetune/metrics.json").read_text())
        assert ft["train_samples"] == len(entries), (arm, ft["train_samples"], len(entries))
        assert ft["data/validation/dropped"] == 0
        ft_log = (project / f"logs/finetune-{arm}-s0.log").read_text()
        assert "train sampler: modality-length grouped" in ft_log, arm  # the reference's stage-2 sampler
    kinds = Counter(s.split("-")[0] for s in stages)
    print(f"\nrehearsal: world {t1 - t0:.1f} s, snakemake --profile slurm all {wall:.1f} s, {len(jobs)} SLURM jobs: "
          + ", ".join(f"{k} x{n}" for k, n in kinds.items()) + f"; 665K images by folder {dict(folders)}, "
          f"{n_text} text-only; TORCH_EXTENSIONS_DIR={os.environ.get('TORCH_EXTENSIONS_DIR')}")

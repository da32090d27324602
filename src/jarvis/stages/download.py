"""Stage `download`: put one building block (data set, LLM, vision tower) on local disk.

Real mode (``init: hub`` / ``kind: hub``): ``huggingface_hub.snapshot_download`` at the pinned revision into a
resumable partial directory, verification, then one atomic rename, so training nodes never need the network.
Tiny mode (``init: scratch`` / ``kind: synthetic``), through the same interface: generate the synthetic world, train
the tokenizer with its chat template, build the tiny LM / tower from its config and save it in HF/timm format.
"""

from __future__ import annotations

import logging
import time
import zipfile
from pathlib import Path
from typing import Any

from jarvis.config import HubRef, LLMSpec, SyntheticData, TowerSpec
from jarvis.io import atomic_dir, read_json, replace_dir, write_json_atomic
from jarvis.model.recipe import tower_selection, tower_spec
from jarvis.plan import DownloadSpec, StagePlan

log = logging.getLogger(__name__)
MANIFEST = "download.json"


# ------------------------------------------------------------------ hub
def _snapshot(repo_id: str, revision: str, repo_type: str, out: Path, **kwargs: Any) -> Path:
    """Resumable snapshot into ``<out>.partial`` (kept across failures), renamed to ``out`` once verified."""
    from huggingface_hub import snapshot_download

    from jarvis.progress import Progress

    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(repo_id=repo_id, revision=revision, repo_type=repo_type, local_dir=partial,
                          tqdm_class=Progress, **kwargs)  # the overall bar; readable in log files
    except Exception as err:  # the hub client's errors are many; name the artifact and keep the partial dir
        raise RuntimeError(f"download of {repo_type} {repo_id}@{revision} failed: {err}") from err
    return partial


def _finish(partial: Path, out: Path) -> None:
    """The verified partial directory becomes ``out`` in one rename (jarvis.io, like every artifact)."""
    replace_dir(partial, out)


def _extract(archive: Path, dest: Path) -> int:
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} listed in params.yaml is missing from the snapshot")
    with zipfile.ZipFile(archive) as zf:
        bad = zf.testzip()
        if bad is not None:
            raise ValueError(f"{archive}: corrupt member {bad}")
        for name in zf.namelist():  # refuse members that would land outside dest (zip-slip)
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"{archive}: member {name!r} escapes the extraction root")
        zf.extractall(dest)
        return len(zf.namelist())


def _hub_model(hub: HubRef, out: Path, what: str) -> tuple[dict[str, Any], Path]:
    partial = _snapshot(hub.repo_id, hub.revision, "model", out,
                        allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"])
    if not (partial / "config.json").is_file():
        raise FileNotFoundError(f"{what} {hub.repo_id}@{hub.revision}: no config.json in the snapshot")
    if not any(partial.glob("*.safetensors")):
        raise FileNotFoundError(f"{what} {hub.repo_id}@{hub.revision}: no safetensors weights (pickles are refused)")
    return {"repo_id": hub.repo_id, "revision": hub.revision, "files": len(list(partial.rglob("*")))}, partial


# ------------------------------------------------------------------ components
def download_data(d: DownloadSpec) -> dict[str, Any]:
    spec = d.entry
    out = d.out
    if isinstance(spec, SyntheticData):
        from jarvis.data.synthetic import generate_world
        from jarvis.eval.synthetic_bench import generate_general_benchmarks

        with atomic_dir(out) as tmp:
            counts = generate_world(tmp, n_pretrain=spec.n_pretrain, n_instruct=spec.n_instruct,
                                    n_bench_per_task=spec.n_bench_per_task, image_size=spec.image_size,
                                    seed=spec.seed, caption_spatial_rate=spec.caption_spatial_rate)
            counts.update(generate_general_benchmarks(tmp, n_per_benchmark=spec.n_general_per_benchmark,
                                                      image_size=spec.image_size, seed=spec.seed))
            write_json_atomic(tmp / MANIFEST, {"kind": "synthetic", "counts": counts})
        return {f"n_{k}": v for k, v in counts.items()}
    metrics: dict[str, Any] = {}
    for part in ("pretrain", "instruct"):
        corpus = getattr(spec, part)
        dest = out / part
        if (dest / MANIFEST).is_file():
            log.info("%s already complete; skipping", dest)
            continue
        partial = _snapshot(corpus.repo_id, corpus.revision, "dataset", dest)
        if not (partial / corpus.annotations).is_file():
            raise FileNotFoundError(f"{corpus.repo_id}@{corpus.revision}: annotations {corpus.annotations} missing")
        n = sum(_extract(partial / a, partial) for a in corpus.archives)
        write_json_atomic(partial / MANIFEST, {"repo_id": corpus.repo_id, "revision": corpus.revision,
                                               "extracted": n})
        _finish(partial, dest)
        metrics[f"{part}_extracted"] = n
    for bench, ref in spec.benchmarks.items():
        dest = out / bench
        if (dest / MANIFEST).is_file():
            continue
        partial = _snapshot(ref.repo_id, ref.revision, "dataset", dest)
        write_json_atomic(partial / MANIFEST, {"repo_id": ref.repo_id, "revision": ref.revision})
        _finish(partial, dest)
        metrics[f"benchmark_{bench}"] = 1
    return metrics


def download_llm(d: DownloadSpec) -> dict[str, Any]:
    spec: LLMSpec = d.entry
    out, name = d.out, d.name
    if spec.init == "hub":
        assert spec.hub is not None
        info, partial = _hub_model(spec.hub, out, f"llms.{name}")
        from transformers import AutoTokenizer

        from jarvis.data.tokenizer import attach_chat_template

        tok = AutoTokenizer.from_pretrained(partial)  # no trust_remote_code
        added = attach_chat_template(tok, spec.chat_template)
        tok.save_pretrained(partial)
        write_json_atomic(partial / MANIFEST, {**info, "added_tokens": added})
        _finish(partial, out)
        return {"added_tokens": added}

    from transformers import AutoConfig, AutoModelForCausalLM

    from jarvis.data.synthetic import corpus_texts
    from jarvis.data.tokenizer import build_tokenizer
    from jarvis.seeding import seed_everything

    assert spec.tokenizer is not None and spec.config is not None
    # Every text also with a leading space: templates put one before the answer ("ASSISTANT: Yes"), and the
    # generation prompt ends before it (benchmarks-spec §1). With "ĠYes" in the vocabulary, as with Vicuna's
    # "▁Yes", the first generated token carries the space, so training and evaluation tokenise alike.
    assert d.tokenizer_data is not None and d.seed is not None
    texts = [t for text in corpus_texts(d.tokenizer_data) for t in (text, " " + text)]
    tok = build_tokenizer(texts, spec.tokenizer.vocab_size, spec.chat_template)
    cfg_kwargs = dict(spec.config)
    model_type = cfg_kwargs.pop("model_type")
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  tie_word_embeddings=False, **cfg_kwargs)
    seed_everything(d.seed)
    model = AutoModelForCausalLM.from_config(config)
    text_metrics: dict[str, Any] = {}
    if d.text_corpus is not None:
        from jarvis.stages.text_pretrain import pretrain_text

        tp = spec.text_pretrain
        text_metrics = pretrain_text(model, tok, d.text_corpus.annotations, tp.steps, tp.batch_size,
                                     tp.learning_rate, d.seed)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json_atomic(tmp / MANIFEST, {"init": "scratch", "vocab_size": len(tok),
                                           "n_params": sum(p.numel() for p in model.parameters()), **text_metrics})
    return {"vocab_size": len(tok), "n_params": sum(p.numel() for p in model.parameters()), **text_metrics}


def download_tower(d: DownloadSpec) -> dict[str, Any]:
    spec: TowerSpec = d.entry
    out, name = d.out, d.name
    from jarvis.model.vision import VisionTower

    if spec.init == "hub":
        assert spec.hub is not None
        if spec.library == "timm":
            raise NotImplementedError("timm towers from the hub: download the safetensors with timm's hf-hub: names")
        info, partial = _hub_model(spec.hub, out, f"towers.{name}")
        tower = VisionTower.from_pretrained(partial, **tower_selection(spec))  # verifies it loads
        write_json_atomic(partial / MANIFEST, {**info, "grid": list(tower.grid)})
        _finish(partial, out)
        return {"grid": tower.grid[0], "hidden_size": tower.hidden_size}
    from jarvis.seeding import seed_everything

    assert d.seed is not None
    seed_everything(d.seed)
    tower = VisionTower(tower_spec(spec))
    with atomic_dir(out) as tmp:
        tower.save_pretrained(tmp)
    check = VisionTower.from_pretrained(out, **tower_selection(spec))
    return {"grid": check.grid[0], "hidden_size": check.hidden_size,
            "n_params": sum(p.numel() for p in tower.parameters())}


def run(plan: StagePlan) -> dict[str, Any]:
    from jarvis import tracking
    from jarvis.tracking import plan_run as stage_run

    d: DownloadSpec = plan.spec
    fn = {"data": download_data, "llm": download_llm, "tower": download_tower}[d.component]
    t0 = time.perf_counter()
    with stage_run(plan) as (run_, _):
        metrics = fn(d)
        metrics["wall_s"] = round(time.perf_counter() - t0, 3)
        if run_ is not None:
            tracking.log_final_metrics(metrics, prefix="")
    return metrics


def manifest(path: Path) -> dict[str, Any]:
    return read_json(path / MANIFEST)

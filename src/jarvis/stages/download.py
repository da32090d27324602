"""Stage `download`: put one building block (data set, LLM, vision tower) on local disk.

Real mode (``init: hub`` / ``kind: hub``): the revision resolved to a commit and checked against hub.lock.yaml,
the snapshot fetched at that commit through the hub cache (resumable; jarvis.hub), pickled ``.bin`` weights
converted to safetensors, stage-2 image archives fetched over HTTP (jarvis.fetch), verification, then one atomic
rename, so training nodes never need the network.
Tiny mode (``init: scratch`` / ``kind: synthetic``), through the same interface: generate the synthetic world, train
the tokenizer with its chat template, build the tiny LM / tower from its config and save it in HF/timm format.
"""

from __future__ import annotations

import fnmatch
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

from jarvis import hub, paths
from jarvis.config import HubCorpus, HubRef, LLMSpec, SyntheticData, TowerSpec
from jarvis.io import atomic_dir, digest, read_json, write_json_atomic
from jarvis.model.recipe import tower_selection, tower_spec
from jarvis.plan import DownloadSpec, StagePlan

log = logging.getLogger(__name__)
MANIFEST = "download.json"


# ------------------------------------------------------------------ hub
def _extract(archive: Path, dest: Path) -> int:
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive.name} listed in params.yaml is missing from the snapshot")
    with zipfile.ZipFile(archive) as zf:
        bad = zf.testzip()
        if bad is not None:
            raise ValueError(f"{archive}: corrupt member {bad}")
        for name in zf.namelist():  # refuse members that would land outside dest (zip-slip)
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"{archive}: member {name!r} escapes the extraction root")
        zf.extractall(dest)
        return len(zf.namelist())


def _hub_model(ref: HubRef, tmp: Path, what: str, update_lock: bool) -> tuple[dict[str, Any], hub.Snapshot]:
    """Config/tokenizer files and safetensors weights of ``ref`` into ``tmp``; pickled ``.bin`` weights only when
    the commit has no safetensors, converted (jarvis.hub.convert_bin). Other pickles (``*.pt``, ``*.ckpt``,
    training_args.bin, ...) are never taken."""
    snap = hub.snapshot(ref.repo_id, ref.revision, "model", update_lock=update_lock,
                        allow_patterns=[*hub.MODEL_FILES, hub.ST_WEIGHTS])
    top = {f.name for f in snap.path.iterdir() if f.is_file()}
    if not (snap.path / "config.json").is_file():
        raise FileNotFoundError(f"{what} {ref.repo_id}@{ref.revision}: no config.json in the snapshot")
    converted = None
    if not any(fnmatch.fnmatch(n, hub.ST_WEIGHTS) for n in top):
        snap = hub.fetch(snap, [*hub.MODEL_FILES, "pytorch_model*.bin"])
        if not hub.bin_shards(snap.path):
            raise FileNotFoundError(f"{what} {ref.repo_id}@{ref.revision}: no weights (neither model*.safetensors nor "
                                    f"pytorch_model*.bin)")
        converted = hub.convert_bin(snap.path, tmp)
    taken = [n for n in hub.snapshot_files(snap.path, [*hub.MODEL_FILES, hub.ST_WEIGHTS])
             if "/" not in n and n != hub.BIN_INDEX and not (converted and n == hub.ST_INDEX)]
    for name in taken:
        hub.place(snap.path / name, tmp / name)
    info = {**snap.record(), "files": sorted(taken + (converted["to"] if converted else [])),
            "converted": converted}
    return info, snap


def _hub_dataset(ref: HubRef | HubCorpus, dest: Path, update_lock: bool, extra: Any = None) -> dict[str, Any]:
    """One dataset repo into ``dest`` atomically: a corpus takes its annotations and extracts its archives (and
    fetches its URL archives); a benchmark repo is copied whole."""
    # What made the directory: the whole params entry (annotations, archives, URL archives), not only the repo and
    # revision, so a changed entry rebuilds instead of reusing the old files.
    producer = digest(ref.model_dump(mode="json"))
    if (dest / MANIFEST).is_file():
        done = manifest(dest)
        if done.get("repo_id") == ref.repo_id and done.get("revision") == ref.revision \
                and done.get("producer") == producer:
            log.info("%s already complete; skipping", dest)
            return {}
        log.warning("%s was made from other settings (%s, not %s); rebuilding it", dest,
                    done.get("producer", "unrecorded"), producer)
    corpus = isinstance(ref, HubCorpus)
    patterns = [ref.annotations, *ref.archives] if corpus else None
    snap = hub.snapshot(ref.repo_id, ref.revision, "dataset", allow_patterns=patterns, update_lock=update_lock)
    info: dict[str, Any] = {**snap.record(), "producer": producer}
    with atomic_dir(dest) as tmp:
        if corpus:
            if not (snap.path / ref.annotations).is_file():
                raise FileNotFoundError(f"{ref.repo_id}@{ref.revision}: annotations {ref.annotations} missing")
            hub.place(snap.path / ref.annotations, tmp / ref.annotations)
            info["extracted"] = sum(_extract(snap.path / a, tmp) for a in ref.archives)
            if extra is not None:
                info["url_archives"] = extra(tmp)
        else:
            files = hub.snapshot_files(snap.path)
            for rel in files:
                hub.place(snap.path / rel, tmp / rel)
            info["files"] = len(files)
        write_json_atomic(tmp / MANIFEST, info)
    hub.lock_snapshot(snap)
    return info


def _url_archives(corpus: HubCorpus, pin: bool) -> Any:
    """The corpus's URL archives (jarvis.fetch) as a step run inside its atomic build dir, or None."""
    if not corpus.url_archives:
        return None
    from jarvis import fetch

    def step(tmp: Path) -> dict[str, Any]:
        fetch.require_checksums({n: (a.url, a.checksum) for n, a in corpus.url_archives.items()}, pin)
        return {name: fetch.fetch_archive(name, a.url, a.checksum, a.root, tmp / a.dest, pin=pin,
                                          downloads=paths.downloads_dir())
                for name, a in corpus.url_archives.items()}

    return step


# ------------------------------------------------------------------ components
def download_data(d: DownloadSpec, update_lock: bool = False, pin_checksums: bool = False) -> dict[str, Any]:
    spec, out = d.entry, d.out
    if isinstance(spec, SyntheticData):
        from jarvis.data.synthetic import generate_world
        from jarvis.eval.synthetic_bench import generate_general_benchmarks

        with atomic_dir(out) as tmp:
            counts = generate_world(tmp, n_pretrain=spec.n_pretrain, n_instruct=spec.n_instruct,
                                    n_bench_per_task=spec.n_bench_per_task, image_size=spec.image_size,
                                    seed=spec.seed, caption_spatial_rate=spec.caption_spatial_rate)
            counts.update(generate_general_benchmarks(tmp, n_per_benchmark=spec.n_general_per_benchmark,
                                                      image_size=spec.image_size, seed=spec.seed))
            checks = _validate_corpora(d.corpora, lambda p: tmp / p.relative_to(out))
            write_json_atomic(tmp / MANIFEST, {"kind": "synthetic", "counts": counts})
        return {**{f"n_{k}": v for k, v in counts.items()}, **checks}
    from jarvis import fetch

    for part in ("pretrain", "instruct"):  # refuse an unverifiable archive before fetching anything
        fetch.require_checksums({n: (a.url, a.checksum) for n, a in getattr(spec, part).url_archives.items()},
                                pin_checksums)
    metrics: dict[str, Any] = {}
    for part in ("pretrain", "instruct"):
        corpus = getattr(spec, part)
        info = _hub_dataset(corpus, out / part, update_lock, _url_archives(corpus, pin_checksums))
        if info:
            metrics[f"{part}_extracted"] = info["extracted"]
            if "url_archives" in info:
                metrics[f"{part}_url_archive_files"] = sum(a["files"] for a in info["url_archives"].values())
    metrics.update(_validate_corpora(d.corpora, lambda p: p, only_missing=True))
    for bench, ref in spec.benchmarks.items():
        if _hub_dataset(ref, out / bench, update_lock):
            metrics[f"benchmark_{bench}"] = 1
    return metrics


def _validate_corpora(corpora: Any, where: Any, only_missing: bool = False) -> dict[str, Any]:
    """Validate each corpus once (every image decoded) into its manifest beside the annotations, so that
    cache-features and training open no image at start-up (jarvis.data.manifest). ``where`` maps a corpus path
    to where it is now (the atomic build dir); ``only_missing``: keep the manifest of a corpus already in place."""
    from jarvis.data import manifest

    out: dict[str, Any] = {}
    for c in corpora:
        ann, root = where(c.annotations), where(c.image_root)
        if only_missing and manifest.path_for(ann).is_file():
            continue
        info = manifest.build(ann, root)
        part = c.annotations.parent.name
        out.update({f"{part}_images_checked": info["images"], f"{part}_image_problems": len(info["image_problems"]),
                    f"{part}_records_dropped": info["drops"]["dropped"]})
    return out


def download_llm(d: DownloadSpec, update_lock: bool = False) -> dict[str, Any]:
    spec: LLMSpec = d.entry
    out, name = d.out, d.name
    if spec.init == "hub":
        assert spec.hub is not None
        from transformers import AutoTokenizer

        from jarvis.data.tokenizer import attach_chat_template

        with atomic_dir(out) as tmp:
            info, snap = _hub_model(spec.hub, tmp, f"llms.{name}", update_lock)
            tok = AutoTokenizer.from_pretrained(tmp)  # no trust_remote_code
            added = attach_chat_template(tok, spec.chat_template)
            tok.save_pretrained(tmp)
            write_json_atomic(tmp / MANIFEST, {**info, "added_tokens": added})
        hub.lock_snapshot(snap)
        return {"added_tokens": added, "converted": int(info["converted"] is not None)}

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
        assert d.text_max_dropped_fraction is not None and d.text_max_truncated_fraction is not None
        text_metrics = pretrain_text(model, tok, d.text_corpus.annotations, tp.steps, tp.batch_size,
                                     tp.learning_rate, d.seed, max_dropped_fraction=d.text_max_dropped_fraction,
                                     max_truncated_fraction=d.text_max_truncated_fraction)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json_atomic(tmp / MANIFEST, {"init": "scratch", "vocab_size": len(tok),
                                           "n_params": sum(p.numel() for p in model.parameters()), **text_metrics})
    return {"vocab_size": len(tok), "n_params": sum(p.numel() for p in model.parameters()), **text_metrics}


def download_tower(d: DownloadSpec, update_lock: bool = False) -> dict[str, Any]:
    spec: TowerSpec = d.entry
    out, name = d.out, d.name
    from jarvis.model.vision import VisionTower

    if spec.init == "hub":
        assert spec.hub is not None
        if spec.library == "timm":
            raise NotImplementedError("timm towers from the hub: download the safetensors with timm's hf-hub: names")
        with atomic_dir(out) as tmp:
            info, snap = _hub_model(spec.hub, tmp, f"towers.{name}", update_lock)
            tower = VisionTower.from_pretrained(tmp, **tower_selection(spec))  # verifies it loads
            write_json_atomic(tmp / MANIFEST, {**info, "grid": list(tower.grid)})
        hub.lock_snapshot(snap)
        return {"grid": tower.grid[0], "hidden_size": tower.hidden_size,
                "converted": int(info["converted"] is not None)}
    from jarvis.seeding import seed_everything

    assert d.seed is not None
    seed_everything(d.seed)
    tower = VisionTower(tower_spec(spec))
    with atomic_dir(out) as tmp:
        tower.save_pretrained(tmp)
    check = VisionTower.from_pretrained(out, **tower_selection(spec))
    return {"grid": check.grid[0], "hidden_size": check.hidden_size,
            "n_params": sum(p.numel() for p in tower.parameters())}


def run(plan: StagePlan, update_lock: bool = False, pin_checksums: bool = False) -> dict[str, Any]:
    """``update_lock`` (or JARVIS_UPDATE_LOCK=1): accept a floating revision that moved since hub.lock.yaml.
    ``pin_checksums`` (or JARVIS_PIN_CHECKSUMS=1): trust the first download of a URL archive whose checksum is
    null in params.yaml, and record its sha256 in hub.lock.yaml."""
    from jarvis import tracking
    from jarvis.tracking import plan_run as stage_run

    d: DownloadSpec = plan.spec
    fn = {"data": download_data, "llm": download_llm, "tower": download_tower}[d.component]
    t0 = time.perf_counter()
    with stage_run(plan) as (run_, _):
        extra = {"pin_checksums": pin_checksums} if d.component == "data" else {}
        metrics = fn(d, update_lock=update_lock, **extra)
        metrics["wall_s"] = round(time.perf_counter() - t0, 3)
        if run_ is not None:
            tracking.log_final_metrics(metrics, prefix="")
    return metrics


def manifest(path: Path) -> dict[str, Any]:
    return read_json(path / MANIFEST)

"""Validation manifests: each corpus's images are checked once, at download, not at every start of every rank.

At the paper's scale the check is the start-up cost: 558K (stage 1) and 665K (stage 2) images decoded in
cache-features and again in each training stage, on every rank, at every (re)start (issue 11). The download stage
therefore validates each annotation file once -- every distinct ``image`` string resolved inside the image root
(no absolute paths, no ``..``), its header size checked and the image decoded as training will -- and writes
``<annotations>.validated.json`` beside it:

- ``sha256`` of the annotation file's bytes: a later reader refuses verdicts for a file that changed since;
- ``image_problems``: image string -> drop reason, for the bad ones only (the rest passed);
- ``drops``: the record-level report the verdicts give (counts and examples by reason, no threshold applied: each
  consumer applies its own ``max_dropped_fraction``), so the manifest shows what a stage will drop before it runs.

Readers (:func:`jarvis.data.dataset.load_and_validate`) then open no image file at start-up: their cost is reading
the annotations and this file. A folder without a manifest (data made by hand, tests) is checked the old way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from jarvis.io import StageFailed, read_json, write_json_atomic

logger = logging.getLogger(__name__)

FORMAT = 1
SUFFIX = ".validated.json"


def path_for(annotations: str | os.PathLike[str]) -> Path:
    annotations = Path(annotations)
    return annotations.with_name(annotations.name + SUFFIX)


def build(annotations: str | os.PathLike[str], image_root: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate ``annotations`` against ``image_root`` (every image decoded once) and write its manifest."""
    from jarvis.data.dataset import DropLog, image_problem, load_records, validate_records

    annotations = Path(annotations)
    raw = annotations.read_bytes()
    drops = DropLog()  # bad JSON lines count as drops, as in load_and_validate
    records, total = load_records(annotations, drops, raw)
    images = sorted({r["image"] for r in records if isinstance(r, dict) and isinstance(r.get("image"), str)})
    problems = {rel: reason for rel in images if (reason := image_problem(image_root, rel, decode=True))}
    kept = validate_records(records, image_root, drops, image_problems=problems)
    info = {
        "format": FORMAT,
        "annotations": annotations.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "records": total,
        "kept": len(kept),
        "images": len(images),
        "image_problems": problems,
        "drops": drops.report(annotations.name, total, max_dropped_fraction=1.0),
    }
    write_json_atomic(path_for(annotations), info)
    logger.info("%s: %d records, %d images checked, %d bad; drops %s", annotations, total, len(images),
                len(problems), info["drops"]["counts"])
    return info


def verdicts(annotations: str | os.PathLike[str], raw: bytes) -> dict[str, str] | None:
    """The manifest's image verdicts for the annotation file whose bytes are ``raw``; None when there is no
    manifest. A manifest of other bytes (the file was edited after download) or of another format is an error."""
    mpath = path_for(annotations)
    if not mpath.is_file():
        return None
    info = read_json(mpath)
    if info.get("format") != FORMAT:
        raise StageFailed(f"{mpath}: validation manifest format {info.get('format')!r}, expected {FORMAT};"
                          " rerun the download stage of this data set to rebuild it")
    digest = hashlib.sha256(raw).hexdigest()
    if info.get("sha256") != digest:
        raise StageFailed(f"{annotations} changed since it was validated ({mpath} records sha256"
                          f" {str(info.get('sha256'))[:12]}…, the file is {digest[:12]}…); rerun the download stage"
                          " of this data set (or delete the manifest to check every image at each start)")
    return dict(info["image_problems"])

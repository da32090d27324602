"""Validation manifests (jarvis.data.manifest): a corpus's images are checked once, at download; a reader applies the
verdicts without opening an image, and gets exactly what checking every image would give."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jarvis.data import manifest
from jarvis.data.dataset import load_and_validate
from jarvis.io import StageFailed
from test_dataset import BAD, GOOD, _bad_images, conv, make_image_root, write_jsonl


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_image_root(tmp_path)


def _corpus(root: Path) -> Path:
    bad = _bad_images(root / "img")
    recs = [*GOOD, *BAD.values(), *({"id": f"b{i}", "image": n, "conversations": conv()} for i, n in enumerate(bad))]
    recs.append({"id": "again", "image": "00000/0.png", "conversations": conv()})  # an image used twice
    write_jsonl(root / "ann.jsonl", recs, bad_lines=1)
    return root / "ann.jsonl"


def test_manifest_verdicts_equal_checking_every_image_and_open_no_image(root: Path) -> None:
    ann = _corpus(root)
    expected = load_and_validate(ann, root / "img", max_dropped_fraction=0.9)  # no manifest: every image decoded
    assert expected[1]["images_checked"] == "decoded"

    info = manifest.build(ann, root / "img")
    assert manifest.path_for(ann).name == "ann.jsonl.validated.json"
    assert info["records"] == expected[1]["total"] and info["kept"] == len(expected[0])
    assert info["drops"]["counts"] == expected[1]["counts"]  # what a stage will drop, known before it runs
    assert info["image_problems"] == {"00000/nope.png": "missing_image", "00000/broken.png": "corrupt_image",
                                      "../outside.png": "unsafe_image_path", "strip.png": "extreme_aspect_ratio",
                                      "huge.png": "image_too_large", "text.png": "corrupt_image",
                                      "empty.png": "corrupt_image"}

    # Remove every image: a reader that opened (or stat'ed) one would now drop it as missing_image.
    shutil.rmtree(root / "img")
    kept, report = load_and_validate(ann, root / "img", max_dropped_fraction=0.9)
    assert kept == expected[0]
    assert report["images_checked"] == "manifest"
    assert {k: v for k, v in report.items() if k != "images_checked"} == {
        k: v for k, v in expected[1].items() if k != "images_checked"}


def test_an_annotation_file_edited_after_validation_is_refused_naming_the_fix(root: Path) -> None:
    ann = _corpus(root)
    manifest.build(ann, root / "img")
    ann.write_text(ann.read_text().replace('"a0"', '"a1"'))
    with pytest.raises(StageFailed, match="changed since it was validated.*rerun the download stage"):
        load_and_validate(ann, root / "img", max_dropped_fraction=0.9)
    info = json.loads(manifest.path_for(ann).read_text())
    manifest.path_for(ann).write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(StageFailed, match="format 99"):
        load_and_validate(ann, root / "img", max_dropped_fraction=0.9)


def test_the_threshold_is_the_readers_not_the_manifests(root: Path) -> None:
    ann = _corpus(root)
    info = manifest.build(ann, root / "img")
    assert info["drops"]["dropped_fraction"] > 0.5  # recorded, not refused, at download
    with pytest.raises(ValueError, match="max_dropped_fraction"):
        load_and_validate(ann, root / "img", max_dropped_fraction=0.5)

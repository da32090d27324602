"""Start-up cost of reading a corpus, at 1x, 10x and 100x the tiny default's stage-1 data (issue 11).

Run: ``python benchmarks/bench_data_startup.py [--scales 1 10 100]``. It writes the tiny world once (256 stage-1
pairs at 64 px, as params.yaml's ``synth``), then a corpus per scale: the annotations repeated ``scale`` times with
new ids, each copy's images hard links under their own folder, so every record names its own file and the number of
distinct images grows with the scale.

Per scale it prints what a training or cache-features stage spends before its first step on validating the corpus
(:func:`jarvis.data.dataset.load_and_validate`): checking every image at every start (no manifest: the way before
issue 11, on every rank and every restart), building the manifest (once, in the download stage), and reading with the
manifest (what every start now costs). Medians of ``--repeat`` runs; one process, warm page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def scaled_corpus(world: Path, dest: Path, scale: int) -> Path:
    """``scale`` copies of the world's stage-1 corpus under ``dest``; returns the annotation file."""
    src = world / "pretrain"
    ann = json.loads((src / "blip_laion_cc_sbu_558k.json").read_text())
    dest.mkdir(parents=True)
    out = []
    for k in range(scale):
        for rec in ann:
            image = f"c{k:03d}/{rec['image']}"
            (dest / image).parent.mkdir(parents=True, exist_ok=True)
            os.link(src / rec["image"], dest / image)
            out.append({**rec, "id": f"{rec['id']}-{k}", "image": image})
    path = dest / "blip_laion_cc_sbu_558k.json"
    path.write_text(json.dumps(out))
    return path


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from jarvis.data import manifest
    from jarvis.data.dataset import load_and_validate
    from jarvis.data.synthetic import generate_world

    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate_world(world, n_pretrain=256, n_instruct=8, n_bench_per_task=1, image_size=64, seed=0)
        print(f"{'scale':>5} {'records':>8} {'images':>7} {'every start, no manifest s':>27} "
              f"{'manifest build (once) s':>24} {'every start, manifest s':>24} {'ratio':>6}")
        for scale in args.scales:
            root = Path(tmp) / f"x{scale}"
            ann = scaled_corpus(world, root, scale)
            n = len(json.loads(ann.read_text()))

            def read() -> None:
                load_and_validate(ann, root, max_dropped_fraction=0.0)

            old = timed(read, args.repeat)
            build = timed(lambda: manifest.build(ann, root), 1)
            new = timed(read, args.repeat)
            assert load_and_validate(ann, root, 0.0)[1]["images_checked"] == "manifest"
            print(f"{scale:>5} {n:>8} {n:>7} {old:>27.3f} {build:>24.3f} {new:>24.3f} {old / new:>6.1f}")


if __name__ == "__main__":
    main()

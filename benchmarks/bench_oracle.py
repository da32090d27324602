"""Learning curves of the tiny default's model on question types the image alone decides (issue 12).

Run: ``python benchmarks/bench_oracle.py [--image-size 64] [--object-scale 1] [--steps 1500] [--lr 2e-3]
[--types count,relation,depth] [--every 250]``; about 0.07-0.1 s per step on one core.

It measures how many stage-2 steps the default's architectures (tiny_llama 64x4 from scratch, a random frozen
tiny_clip with patch 8, MLP projector; params.yaml) need before a question type leaves chance, which is what
decides whether the default can be an oracle within its budget. Each question lists its options in a fixed order,
so the letter is a function of the image and nothing in the question has to be matched against it:

| type | question | options |
|---|---|---|
| ``count`` | How many <shape>s are in the image? (1-4 objects, all that shape) | 1, 2, 3, 4 |
| ``count_any`` | How many objects are in the image? (1-3 objects) | 1, 2, 3 |
| ``relation`` | CV-Bench relation, two objects, the first in a red box | left/right or above/below |
| ``depth`` | CV-Bench depth, two boxed objects on the 3d floor | red-boxed, blue-boxed |
| ``colour`` | What colour is the <shape>? (one object) | the six colours |
| ``side`` | Which side of the image is the <shape> on? (one object) | left, right |

Training goes through the package's data path (annotation validation, LlavaDataset, Collator, the model's splice)
with a plain AdamW loop in one process, not the pipeline (no DeepSpeed, no start-up); evaluation through the
evaluate stage's ``generate_answers``, with and without blank images (the blind control). No timing or accuracy is
asserted anywhere; this prints numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jarvis.data import synthetic as S

Maker = Callable[[np.random.Generator, float], tuple[S.Scene, S.SceneQuestion]]


def _objects(rng: np.random.Generator, n: int, scale: float, shape: str | None = None) -> S.Scene:
    """``n`` non-overlapping flat objects of sizes 0.12-0.22 x ``scale`` of the width (resampled until they fit)."""
    while True:
        objs: list[S.SceneObject] = []
        for _ in range(60 * n):
            s = float(rng.uniform(0.12, 0.22)) * scale
            u, v = float(rng.uniform(s / 2 + 0.02, 1 - s / 2 - 0.02)), float(rng.uniform(s + 0.02, 0.98))
            kind = shape or str(rng.choice(S.SHAPES))
            o = S.SceneObject(kind, str(rng.choice(list(S.COLORS))), u, 2.0 - v, s, u, v, s)
            if all(S._compatible("flat", o, p) for p in objs):
                objs.append(o)
            if len(objs) == n:
                return S.Scene("flat", tuple(objs), int(rng.integers(2**31)))


def _count(rng: np.random.Generator, scale: float) -> tuple[S.Scene, S.SceneQuestion]:
    n, shape = int(rng.integers(1, 5)), str(rng.choice(S.SHAPES))
    q = S.SceneQuestion("Count", f"How many {shape}s are in the image?", ("1", "2", "3", "4"), n - 1, (), shape)
    return _objects(rng, n, scale, shape), q


def _count_any(rng: np.random.Generator, scale: float) -> tuple[S.Scene, S.SceneQuestion]:
    n = int(rng.integers(1, 4))
    return _objects(rng, n, scale), S.SceneQuestion("Count", "How many objects are in the image?", ("1", "2", "3"),
                                                     n - 1, ())


def _pair_question(rng: np.random.Generator, source: S.Source, make: Callable) -> tuple[S.Scene, S.SceneQuestion]:
    while True:
        scene = S.sample_scene(rng, source, n_objects=2)
        if len(scene.objects) == 2 and len(S._unique(scene)) == 2 and (q := make(rng, scene)) is not None:
            return scene, q


def _colour(rng: np.random.Generator, scale: float) -> tuple[S.Scene, S.SceneQuestion]:
    scene, colours = _objects(rng, 1, scale), tuple(S.COLORS)
    o = scene.objects[0]
    return scene, S.SceneQuestion("Colour", f"What colour is the {o.shape}?", colours, colours.index(o.color), ())


def _side(rng: np.random.Generator, scale: float) -> tuple[S.Scene, S.SceneQuestion]:
    while abs((scene := _objects(rng, 1, scale)).objects[0].u - 0.5) <= 0.1:
        pass
    o = scene.objects[0]
    return scene, S.SceneQuestion("Side", f"Which side of the image is the {o.shape} on?", ("left", "right"),
                                  int(o.u > 0.5), ())


MAKERS: dict[str, Maker] = {
    "count": _count, "count_any": _count_any, "colour": _colour, "side": _side,
    "relation": lambda rng, _s: _pair_question(rng, "flat", S.question_relation),
    "depth": lambda rng, _s: _pair_question(rng, "3d", S.question_depth),
}  # fmt: skip


@dataclass(frozen=True)
class _Question:  # what generate_answers reads of a benchmark question
    qs: str
    image: Path

    def load_image(self) -> Image.Image:
        return Image.open(self.image).convert("RGB")


def world(root: Path, n: int, seed: int, types: list[str], size: int, scale: float) -> list[tuple[Path, str, str, str, int]]:
    """(image, prompt, letter, type, n_options) per question, the types in turn."""
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        kind = types[i % len(types)]
        scene, q = MAKERS[kind](rng, scale)
        path = root / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        S.render(scene, size, q.boxes).save(path)
        out.append((path, S.cvbench_prompt(q) + S.LETTER_SUFFIX, chr(65 + q.answer), kind, len(q.choices)))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--object-scale", type=float, default=1.0)
    ap.add_argument("--types", default="count,relation,depth")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--n-train", type=int, default=960)
    ap.add_argument("--n-test", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    types = args.types.split(",")
    unknown = sorted(set(types) - set(MAKERS))
    if unknown:
        ap.error(f"unknown --types {unknown}; known: {sorted(MAKERS)}")
    torch.set_num_threads(args.threads)

    from jarvis.data.collate import Collator
    from jarvis.data.dataset import LlavaDataset, load_and_validate
    from jarvis.data.templates import FIXED_TEXTS, IMAGE_TOKEN
    from jarvis.data.tokenizer import build_tokenizer
    from jarvis.model.configuration import JarvisConfig
    from jarvis.model.freeze import set_trainable
    from jarvis.model.modeling import JarvisForCausalLM
    from jarvis.stages.common import image_transform
    from jarvis.stages.evaluate import generate_answers

    tmp = Path(tempfile.mkdtemp(prefix="bench-oracle-"))
    train = world(tmp / "train", args.n_train, 0, types, args.image_size, args.object_scale)
    test = world(tmp / "test", args.n_test, 1, types, args.image_size, args.object_scale)
    annotations = tmp / "train.json"
    annotations.write_text(json.dumps([
        {"id": f"{i:09d}", "image": str(p.relative_to(tmp)),
         "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]}
        for i, (p, q, a, _t, _k) in enumerate(train)]))  # fmt: skip
    corpus = [q for _, q, *_ in train] + list("ABCDEF") + [t for ts in FIXED_TEXTS.values() for t in ts]
    tok = build_tokenizer(corpus, 600, "vicuna_v1")
    text = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # params.yaml llms.tiny_llama
    vision = {"library": "transformers", "feature_layer": -2, "drop_prefix_tokens": 1,
              "config": dict(model_type="clip_vision_model", image_size=args.image_size, patch_size=8, hidden_size=48,
                             intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)}  # towers.tiny_clip
    torch.manual_seed(0)
    model = JarvisForCausalLM(JarvisConfig(text_config=text, vision_config=vision,
                                           image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN)))
    set_trainable(model, ["projector", "llm"])  # stage 2's groups; the tower stays frozen and random
    samples, report = load_and_validate(annotations, tmp, 0.0)
    data = LlavaDataset(samples, tokenizer=tok, image_root=tmp, num_image_tokens=model.vision_tower.num_patches,
                        max_length=256, max_dropped_fraction=0.0, max_truncated_fraction=0.0,
                        validation_report=report, transform=image_transform(model.vision_tower, "pad"))
    collate = Collator(pad_token_id=tok.pad_token_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    questions = [_Question(q, p) for p, q, *_ in test]
    chance = {t: 100 * float(np.mean([1 / k for *_, kind, k in test if kind == t])) for t in types}
    print(f"{args.image_size} px, grid {model.vision_tower.grid}, object scale {args.object_scale}, lr {args.lr};"
          f" chance " + ", ".join(f"{t} {c:.0f}" for t, c in chance.items()), flush=True)
    curve, start = [], time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        batch = collate([data[order[(step * 16 + j) % len(order)]] for j in range(16)])
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
        if step % args.every:
            continue
        model.eval()
        point: dict[str, object] = {"step": step, "train_s": round(time.perf_counter() - start, 1)}
        for blind in (False, True):
            answers = generate_answers(model, tok, questions, 32, 3, desc="oracle", blind=blind)
            for t in types:
                rows = [(a, gt) for a, (_p, _q, gt, kind, _k) in zip(answers, test, strict=True) if kind == t]
                point[f"{t}{' blind' if blind else ''}"] = 100 * float(np.mean([a.strip().upper().startswith(g)
                                                                              for a, g in rows]))
        model.train()
        curve.append(point)
        print("  ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in point.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "chance": chance,
                                         "curve": curve}, indent=2) + "\n")


if __name__ == "__main__":
    main()

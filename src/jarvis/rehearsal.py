"""The rehearsal world: the paper configuration's weights and data in miniature, in their real on-disk layouts.

``python -m jarvis.rehearsal world --out DIR`` writes, from the synthetic world, deterministically:

* ``DIR/hf/hub``: a Hugging Face cache (``HF_HOME=DIR/hf``; blobs, ``snapshots/<commit>``, ``refs/main``) holding
  the paper's repos under their real ids:

  - ``lmsys/vicuna-7b-v1.5``: a 4-layer, 64-wide Llama in two pickled ``pytorch_model-0000x-of-00002.bin`` shards
    (float16, as published) with their index, a SentencePiece ``tokenizer.model`` (BPE with byte fallback, as
    Llama's) trained on the world's texts, ``tokenizer_config.json``, ``special_tokens_map.json`` and the
    repo's sampling ``generation_config.json``;
  - ``openai/clip-vit-large-patch14-336``: a full ``CLIPModel`` (text and vision towers; 336 px, patch 14 -> a
    24x24 grid, 2 layers) in one ``pytorch_model.bin``, with openai's old-style ``preprocessor_config.json``;
  - ``facebook/dinov2-large``: a 2-layer DINOv2 (patch 14, image_size 518 as published) in ``model.safetensors``
    with a pickled twin, and its ``BitImageProcessor`` config;
  - ``liuhaotian/LLaVA-Pretrain``: ``blip_laion_cc_sbu_558k.json`` (+ ``_meta.json``) and ``images.zip``;
  - ``liuhaotian/LLaVA-Instruct-150K``: ``llava_v1_5_mix665k.json`` with text-only entries and images in the five
    source folders (``coco/train2017``, ``gqa/images``, ``ocr_vqa/images``, ``textvqa/train_images``,
    ``vg/VG_100K`` + ``vg/VG_100K_2``);
  - each benchmark repo of ``datasets.rehearsal15.benchmarks`` in its real file layout (the synthetic world writes
    those layouts: jarvis.data.synthetic, jarvis.eval.synthetic_bench).

* ``DIR/archives/<source>/<file>.zip``: the 665K mix's six image archives, as the sources publish them (one
  top-level folder each), served by ``python -m jarvis.rehearsal serve DIR`` on 127.0.0.1 at the URLs of
  ``datasets.rehearsal15.instruct.url_archives`` (HTTP range requests supported, so resumption is exercised).

* ``DIR/world.json``: what was written: each repo's commit, each archive's sha256, counts.

Commits are the sha1 of the snapshot's file list and contents, so the same code writes the same commits and
archive checksums; params.yaml pins those checksums as a real run pins the published ones.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jarvis.eval.synthetic_bench_ext import EXT_BENCHMARKS
from jarvis.io import atomic_dir, write_json_atomic

PORT = 18511  # datasets.rehearsal15.instruct.url_archives point here
VICUNA = "lmsys/vicuna-7b-v1.5"
CLIP = "openai/clip-vit-large-patch14-336"
DINOV2 = "facebook/dinov2-large"
PRETRAIN = "liuhaotian/LLaVA-Pretrain"
INSTRUCT = "liuhaotian/LLaVA-Instruct-150K"
# The world's size: a few dozen images per corpus, four questions per benchmark task.
SIZES = {"n_pretrain": 48, "n_instruct": 72, "n_bench_per_task": 3, "n_general_per_benchmark": 4,
         "n_mmvp_pairs": 3, "image_size": 96, "text_only_rate": 0.125}
# The 665K mix's image sources: (archive file on the server, its top-level folder, folder the JSON names).
SOURCES: dict[str, tuple[str, str, str]] = {
    "coco": ("coco/train2017.zip", "train2017", "coco/train2017"),
    "gqa": ("gqa/images.zip", "images", "gqa/images"),
    "ocr_vqa": ("ocr_vqa/ocr_vqa.zip", "ocr_vqa_images", "ocr_vqa/images"),
    "textvqa": ("textvqa/train_val_images.zip", "train_images", "textvqa/train_images"),
    "vg_part1": ("vg/images.zip", "VG_100K", "vg/VG_100K"),
    "vg_part2": ("vg/images2.zip", "VG_100K_2", "vg/VG_100K_2"),
}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


# ------------------------------------------------------------------ small deterministic writers
def _zip(members: dict[str, bytes]) -> bytes:
    """A zip whose bytes depend on its members only (fixed timestamps, sorted names, stored: JPEGs are packed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, members[name])
    return buf.getvalue()


def _jpeg(png: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(png) as img:
        img.convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _commit(files: dict[str, bytes]) -> str:
    h = hashlib.sha1()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return h.hexdigest()


def _files(directory: Path) -> dict[str, bytes]:
    return {f.relative_to(directory).as_posix(): f.read_bytes() for f in sorted(directory.rglob("*")) if f.is_file()}


def _torch_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


# ------------------------------------------------------------------ models
def _tokenizer_files(texts: list[str], work: Path) -> dict[str, bytes]:
    """A Llama-style SentencePiece BPE model (byte fallback, split digits, dummy prefix) and vicuna's configs."""
    import sentencepiece as spm

    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(work / "tokenizer"), vocab_size=700, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0, num_threads=1, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        allow_whitespace_only_pieces=True, hard_vocab_limit=False, shuffle_input_sentence=False, minloglevel=2)
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((work / "tokenizer.model").read_bytes())
    proto.trainer_spec.input[:] = ["corpus.txt"]  # the trainer records its (temporary) paths: keep the bytes stable
    proto.trainer_spec.model_prefix = "tokenizer"
    (work / "tokenizer.model").write_bytes(proto.SerializeToString())

    def tok(content: str) -> dict[str, Any]:
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False}

    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": tok("<s>"),
              "clean_up_tokenization_spaces": False, "eos_token": tok("</s>"), "legacy": False,
              "model_max_length": 4096, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
              "tokenizer_class": "LlamaTokenizer", "unk_token": tok("<unk>")}
    special = {k: {f: v for f, v in tok(c).items() if f != "__type"} for k, c in
               (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
    special["pad_token"] = "<unk>"
    return {"tokenizer.model": (work / "tokenizer.model").read_bytes(), "tokenizer_config.json": _json(config),
            "special_tokens_map.json": _json(special)}


def _vicuna(texts: list[str], work: Path) -> dict[str, bytes]:
    import sentencepiece as spm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    files = _tokenizer_files(texts, work)
    vocab = spm.SentencePieceProcessor(model_file=str(work / "tokenizer.model")).get_piece_size()
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                      hidden_act="silu", initializer_range=0.02)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float16)  # lmsys publishes float16 pickles
    config = cfg.to_dict()
    config.update(architectures=["LlamaForCausalLM"], torch_dtype="float16")
    config.pop("dtype", None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    names = list(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for shard, keys in shards.items():
        files[shard] = _torch_bytes({k: state[k] for k in keys})
    total = sum(t.numel() * t.element_size() for t in state.values())
    files["pytorch_model.bin.index.json"] = _json(
        {"metadata": {"total_size": total}, "weight_map": {k: s for s, keys in shards.items() for k in keys}})
    files["config.json"] = _json(config)
    # vicuna-7b-v1.5 ships sampling defaults; evaluation must stay greedy whatever the repo says
    files["generation_config.json"] = _json({"bos_token_id": 1, "do_sample": True, "eos_token_id": 2,
                                             "max_length": 4096, "pad_token_id": 0, "temperature": 0.9,
                                             "top_p": 0.6})
    return files


def _clip() -> dict[str, bytes]:
    import torch
    from transformers import CLIPConfig, CLIPModel

    vision = dict(image_size=336, patch_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, projection_dim=16, hidden_act="quick_gelu")
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                max_position_embeddings=77, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                hidden_act="quick_gelu")
    torch.manual_seed(1)
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
    config = model.config.to_dict()
    config.update(architectures=["CLIPModel"])
    pre = {"crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
           "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
           "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 336}
    return {"config.json": _json(config), "preprocessor_config.json": _json(pre),
            "pytorch_model.bin": _torch_bytes({k: v.contiguous() for k, v in model.state_dict().items()})}


def _dinov2() -> dict[str, bytes]:
    import torch
    from safetensors.torch import save
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(2)
    model = Dinov2Model(Dinov2Config(image_size=518, patch_size=14, hidden_size=32, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=2, layerscale_value=1.0))
    config = model.config.to_dict()
    config.update(architectures=["Dinov2Model"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    pre = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
           "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
           "image_processor_type": "BitImageProcessor", "image_std": [0.229, 0.224, 0.225], "resample": 3,
           "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256}}
    return {"config.json": _json(config), "preprocessor_config.json": _json(pre),
            "model.safetensors": save(state, metadata={"format": "pt"}), "pytorch_model.bin": _torch_bytes(state)}


# ------------------------------------------------------------------ data
def _source_name(source: str, i: int) -> str:
    """An image file name in the style of each 665K source (COCO ids, GQA ids, ASINs, TextVQA hashes, VG ids)."""
    if source == "coco":
        return f"{100000 + i:012d}.jpg"
    if source == "gqa":
        return f"{2300000 + i}.jpg"
    if source == "ocr_vqa":
        return f"{1000000000 + i:010d}.jpg"
    if source == "textvqa":
        return hashlib.sha256(f"textvqa{i}".encode()).hexdigest()[:16] + ".jpg"
    return f"{(1 if source == 'vg_part1' else 2400000) + i}.jpg"


def _pretrain_repo(world: Path) -> dict[str, bytes]:
    entries = json.loads((world / "pretrain" / "blip_laion_cc_sbu_558k.json").read_text())
    images, meta = {}, []
    for e in entries:
        png = world / "pretrain" / e["image"]
        e["image"] = e["image"].removesuffix(".png") + ".jpg"  # LCS-558K: 00000/000000001.jpg
        images[e["image"]] = _jpeg(png)
        meta.append({"id": e["id"], "image": e["image"], "blip_caption": e["conversations"][1]["value"],
                     "url": f"http://127.0.0.1/laion/{e['id']}.jpg"})
    return {"blip_laion_cc_sbu_558k.json": json.dumps(entries, indent=2).encode(),
            "blip_laion_cc_sbu_558k_meta.json": json.dumps(meta, indent=2).encode(),
            "images.zip": _zip(images)}


def _instruct_repo(world: Path) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, int]]:
    """The 665K JSON, and each source's archive (its top-level folder holds the images)."""
    entries = json.loads((world / "instruct" / "llava_v1_5_mix665k.json").read_text())
    members: dict[str, dict[str, bytes]] = {s: {} for s in SOURCES}
    n = 0
    for e in entries:
        if "image" not in e:
            continue
        source = list(SOURCES)[n % len(SOURCES)]
        _, top, dest = SOURCES[source]
        name = _source_name(source, n)
        members[source][f"{top}/{name}"] = _jpeg(world / "instruct" / e["image"])
        e["image"] = f"{dest}/{name}"
        n += 1
    counts = {s: len(m) for s, m in members.items()}
    counts["text_only"] = sum(1 for e in entries if "image" not in e)
    repo = {"llava_v1_5_mix665k.json": json.dumps(entries, indent=2).encode()}
    return repo, {s: _zip(m) for s, m in members.items()}, counts


BENCH_DIRS = ("cvbench", "mmvp", "blink", "mme", "mmstar", "pope", "gqa", *EXT_BENCHMARKS)


def benchmark_repos() -> dict[str, str]:
    """Benchmark data dir -> dataset repo, as datasets.rehearsal15 (= datasets.llava15) names them."""
    from jarvis import paths
    from jarvis.config import load_params

    spec = load_params(paths.root() / paths.PARAMS).datasets["rehearsal15"]
    return {name: ref.repo_id for name, ref in spec.benchmarks.items()}


# ------------------------------------------------------------------ the world
def build(out: Path, repos: dict[str, str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the rehearsal world into ``out`` (replaced atomically); returns what ``world.json`` records."""
    from jarvis import hub
    from jarvis.data.synthetic import corpus_texts, generate_world
    from jarvis.eval.synthetic_bench import generate_general_benchmarks
    from jarvis.eval.synthetic_bench_ext import generate_ext_benchmarks

    repos = dict(repos if repos is not None else benchmark_repos())
    unknown = sorted(set(repos) - set(BENCH_DIRS))
    if unknown:
        raise ValueError(f"no synthetic layout for benchmark dirs {unknown} (the world writes {BENCH_DIRS})")
    s = SIZES
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as scratch, atomic_dir(out) as tmp:
        work = Path(scratch)
        world = work / "world"
        counts = generate_world(world, n_pretrain=s["n_pretrain"], n_instruct=s["n_instruct"],
                                n_bench_per_task=s["n_bench_per_task"], image_size=s["image_size"], seed=seed,
                                n_mmvp_pairs=s["n_mmvp_pairs"], text_only_rate=s["text_only_rate"])
        counts.update(generate_general_benchmarks(world, n_per_benchmark=s["n_general_per_benchmark"],
                                                  image_size=s["image_size"], seed=seed))
        counts.update(generate_ext_benchmarks(world, n_per_benchmark=s["n_general_per_benchmark"],
                                              image_size=s["image_size"], seed=seed))
        texts = [t for t in corpus_texts(world) if t.strip()]
        cache = tmp / "hf" / "hub"
        record: dict[str, Any] = {"sizes": s, "seed": seed, "counts": counts, "commits": {}, "archives": {}}

        def put(repo_id: str, repo_type: str, files: dict[str, bytes]) -> None:
            commit = _commit(files)
            hub.seed_cache(repo_id, repo_type, commit, files, cache=cache)
            record["commits"][f"{repo_type}:{repo_id}"] = commit

        put(VICUNA, "model", _vicuna(texts, work))
        put(CLIP, "model", _clip())
        put(DINOV2, "model", _dinov2())
        put(PRETRAIN, "dataset", _pretrain_repo(world))
        instruct, archives, record["instruct_images"] = _instruct_repo(world)
        put(INSTRUCT, "dataset", instruct)
        for source, data in archives.items():
            path = tmp / "archives" / SOURCES[source][0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            record["archives"][source] = {"path": SOURCES[source][0],
                                          "checksum": "sha256:" + hashlib.sha256(data).hexdigest()}
        for name, repo_id in sorted(repos.items()):
            put(repo_id, "dataset", _files(world / name))
        write_json_atomic(tmp / "world.json", record)
    return record


# ------------------------------------------------------------------ the archive server
class _Handler(SimpleHTTPRequestHandler):
    """Static files with single ``bytes=N-`` range requests (206 / 416), as the archive hosts answer."""

    def send_head(self):  # type: ignore[no-untyped-def]
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        m = re.fullmatch(r"bytes=(\d+)-", (rng or "").strip())
        if not m or not path.is_file():
            return super().send_head()
        size, start = path.stat().st_size, int(m.group(1))
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        fh = open(path, "rb")  # noqa: SIM115 -- closed by copyfile's caller (the base class)
        fh.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return fh

    def log_message(self, *args: object) -> None:
        pass


def server(root: Path, port: int = PORT) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:``port`` serving ``root/archives`` (call ``serve_forever``)."""
    directory = str(Path(root) / "archives")

    class Handler(_Handler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=directory, **kw)

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    return httpd


@contextmanager
def serving(root: Path, port: int = PORT) -> Iterator[str]:
    """Serve the world's archives in a background thread; yields the base URL."""
    httpd = server(root, port)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jarvis.rehearsal", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("world", help="write the rehearsal world (hub cache, archives) into --out")
    w.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("serve", help="serve DIR/archives on 127.0.0.1 (foreground)")
    s.add_argument("dir", type=Path)
    s.add_argument("--port", type=int, default=PORT)
    args = p.parse_args(argv)
    if args.cmd == "world":
        record = build(args.out)
        print(json.dumps({"commits": record["commits"], "archives": record["archives"]}, indent=2))
        print(f"export HF_HOME={args.out.resolve() / 'hf'} HF_HUB_OFFLINE=1")
        return 0
    httpd = server(args.dir, args.port)
    print(f"serving {args.dir / 'archives'} on http://127.0.0.1:{httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


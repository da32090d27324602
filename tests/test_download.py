"""Stage `download`, offline: tiny mode end to end, and hub mode through the hub library's own cache.

Hub mode never touches the network and mocks nothing: each test writes a Hugging Face cache in the standard layout
(``models--org--name/{blobs,snapshots/<sha>,refs/main}``, checked against ``scan_cache_dir``) into tmp, sets
``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE``, and runs ``jarvis download``; ``snapshot_download`` reads that cache as
it would one it filled itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from conftest import ROOT
from jarvis import hub
from jarvis.config import Params, load_raw, validate_params
from jarvis.data.templates import IMAGE_TOKEN, get_template
from jarvis.data.tokenizer import build_tokenizer
from jarvis.model.recipe import tower_selection
from jarvis.model.vision import VisionTower
from jarvis.stages import download


def _plan(params, component: str, name: str):
    """The download stage's plan, resolved as the CLI resolves it."""
    from jarvis.plan import Resolver

    return Resolver(params, params.model_dump(mode="json")).download(component, name)

VICUNA = "lmsys/vicuna-7b-v1.5"  # params.yaml llms.vicuna7b.hub.repo_id
CLIP_L = "openai/clip-vit-large-patch14-336"  # params.yaml towers.clip_l336.hub.repo_id
PRETRAIN = "liuhaotian/LLaVA-Pretrain"
INSTRUCT = "liuhaotian/LLaVA-Instruct-150K"


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the module: creating (migrating) a fresh DB per test costs seconds each."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: str) -> Path:
    """A throwaway project root: params.yaml copied in, cwd and JARVIS_ROOT pointing at it."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JARVIS_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.delenv("JARVIS_SCRATCH", raising=False)
    return tmp_path


def tiny_params(seed: int = 42, edit: Callable[[dict[str, Any]], None] | None = None) -> Params:
    """The repo's params.yaml with a much smaller synthetic world (same schema, validated)."""
    raw = load_raw(ROOT / "params.yaml")
    raw["seed"] = seed
    raw["datasets"]["synth"].update(n_pretrain=8, n_instruct=8, n_bench_per_task=2, n_general_per_benchmark=2)
    for llm in ("tiny_llama", "tiny_qwen2"):  # a short stage 0: these tests check its outputs, not what it learns
        raw["llms"][llm]["text_pretrain"]["steps"] = 24  # 1-20 are refused (warm-up)
    if edit is not None:
        edit(raw)
    return validate_params(raw)


def plain_tokenizer() -> Any:
    """A Vicuna-like tokenizer: <unk> <s> </s> and words, no <image>, no pad token, no chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "USER", "ASSISTANT", ":", "a", "chat", "red", "square", "the", "is"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def no_temp_leftovers(parent: Path) -> bool:
    return not [p.name for p in parent.iterdir() if ".tmp-" in p.name or p.name.endswith(".partial")]


# ------------------------------------------------------------------ tiny mode
def test_tiny_tower_is_a_loadable_component_dir(project: Path) -> None:
    params = tiny_params()
    metrics = download.run(_plan(params, "tower", "tiny_clip"))
    assert metrics["grid"] == 8 and metrics["hidden_size"] == 48

    out = project / "models" / "tower" / "tiny_clip"
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert no_temp_leftovers(out.parent)
    tower = VisionTower.from_pretrained(out, **tower_selection(params.towers["tiny_clip"]))
    assert tower.grid == (8, 8) and tower.num_patches == 64
    assert tower.feature_layer == -2 and tower.drop_prefix_tokens == 1
    assert tower(torch.zeros(2, 3, 64, 64)).shape == (2, 64, 48)


def test_tiny_llm_after_data_reloads_with_template_and_is_deterministic(project: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    params = tiny_params()
    data = download.run(_plan(params, "data", "synth"))
    assert data["n_pretrain"] == 8 and data["n_instruct"] == 8
    assert download.manifest(project / "data" / "synth")["kind"] == "synthetic"
    # each corpus validated once, beside its annotations: every image checked, none bad
    assert data["pretrain_images_checked"] == 8 and data["pretrain_image_problems"] == 0
    for part, name in (("pretrain", "blip_laion_cc_sbu_558k.json"), ("instruct", "llava_v1_5_mix665k.json")):
        checked = json.loads((project / "data" / "synth" / part / f"{name}.validated.json").read_text())
        assert checked["image_problems"] == {} and checked["kept"] == checked["records"]

    metrics = download.run(_plan(params, "llm", "tiny_llama"))
    out = project / "models" / "llm" / "tiny_llama"
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert metrics["vocab_size"] == len(tok) == model.config.vocab_size
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 4
    assert tok.chat_template == get_template("vicuna_v1")
    image_ids = tok.encode(IMAGE_TOKEN, add_special_tokens=False)
    assert len(image_ids) == 1 and image_ids[0] == tok.convert_tokens_to_ids(IMAGE_TOKEN) != tok.unk_token_id
    assert model.config.pad_token_id == tok.pad_token_id and model.config.eos_token_id == tok.eos_token_id
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": f"{IMAGE_TOKEN}\nhi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.rstrip().endswith("ASSISTANT:")
    assert download.manifest(out)["init"] == "scratch"
    # stage 0's drop and truncation counts reach the stage's metrics (MLflow) and the component's manifest
    for key in ("text_data/truncation/samples", "text_data/truncation/fraction", "text_data/encode/dropped"):
        assert metrics[key] == download.manifest(out)[key], key
    assert metrics["text_data/encode/total"] == 8.0

    first = {f: (out / f).read_bytes() for f in ("model.safetensors", "tokenizer.json")}
    download.run(_plan(params, "llm", "tiny_llama"))  # same seed: the very same bytes
    assert {f: (out / f).read_bytes() for f in first} == first
    assert no_temp_leftovers(out.parent)
    download.download_llm(_plan(tiny_params(seed=43), "llm", "tiny_llama").spec)  # the seed does reach the weights
    assert (out / "model.safetensors").read_bytes() != first["model.safetensors"]
    assert (out / "tokenizer.json").read_bytes() == first[
        "tokenizer.json"
    ]  # the tokenizer depends on data only


def test_unknown_component_is_named(project: Path) -> None:
    params = tiny_params()
    with pytest.raises(KeyError, match=r"unknown tower 'nope'.*tiny_clip"):
        download.run(_plan(params, "tower", "nope"))
    with pytest.raises(KeyError, match=r"unknown llm 'tiny_lama'.*tiny_llama"):
        download.run(_plan(params, "llm", "tiny_lama"))
    assert not (project / "models").exists()


# ------------------------------------------------------------------ hub mode (the library's own offline cache)
SHA_A, SHA_B = "a" * 40, "b" * 40


@pytest.fixture
def hf_cache(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache in tmp, offline: snapshot_download reads it like a cache filled by a real download."""
    cache = project / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(project / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(hub.UPDATE_ENV, raising=False)
    return cache


def files_of(directory: Path) -> dict[str, bytes]:
    return {f.relative_to(directory).as_posix(): f.read_bytes() for f in directory.rglob("*") if f.is_file()}


def llama_bin_checkpoint(directory: Path, tokenizer: Any) -> tuple[dict[str, bytes], Any]:
    """A tiny Llama as vicuna-7b-v1.5 publishes it: config + tokenizer + two pickled shards + their index. The
    embeddings are tied, so one shard holds two names for one storage (what safetensors refuses as is)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=64, tie_word_embeddings=True))
    model.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    names = [k for k in state if k != "lm_head.weight"]
    shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2] + ["lm_head.weight"],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for shard, keys in shards.items():
        torch.save({k: state[k] for k in keys}, directory / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (directory / hub.BIN_INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (directory / "training_args.bin").write_bytes(b"never read")  # other pickles are never taken
    return files_of(directory), model


def clip_openai_checkpoint(directory: Path) -> tuple[dict[str, bytes], Any]:
    """openai/clip-vit-*'s layout: one CLIPModel (text + vision towers) in a single pytorch_model.bin."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text))
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    (directory / "preprocessor_config.json").write_text("{}")
    return files_of(directory), model


def dinov2_checkpoint(directory: Path) -> dict[str, bytes]:
    """facebook/dinov2-*'s layout: safetensors and a pickled twin; only the safetensors may be read."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=2)).save_pretrained(directory)
    (directory / "pytorch_model.bin").write_bytes(b"not even a pickle: loading it would fail")
    return files_of(directory)


def llava_data_cache(archive: bytes, commit: str = SHA_A) -> None:
    """Dataset repos of datasets.llava15 in the cache: LCS-558K (json + images.zip), the 665K json, benchmarks."""
    hub.seed_cache(PRETRAIN, "dataset", commit, {
        "blip_laion_cc_sbu_558k.json": json.dumps([{"id": "0", "image": "00000/a.png"}]).encode(),
        "blip_laion_cc_sbu_558k_meta.json": b"{}", "images.zip": archive})
    hub.seed_cache(INSTRUCT, "dataset", commit, {"llava_v1_5_mix665k.json": b"[]", "llava_instruct_150k.json": b"[]"})
    for bench, ref in tiny_params().datasets["llava15"].benchmarks.items():
        hub.seed_cache(ref.repo_id, "dataset", commit, {"README.md": bench.encode(), "data/test.parquet": b"pq"})


def without_url_archives(raw: dict[str, Any]) -> None:
    raw["datasets"]["llava15"]["instruct"]["url_archives"] = {}


def cli(*args: str) -> int:
    from jarvis import cli as jarvis_cli

    return jarvis_cli.main(["download", *args])


def test_seeded_cache_is_the_library_layout(hf_cache: Path, tmp_path: Path) -> None:
    from huggingface_hub import scan_cache_dir

    hub.seed_cache(VICUNA, "model", SHA_A, {"config.json": b"{}", "sub/x.txt": b"x"})
    repos = {(r.repo_id, r.repo_type): r for r in scan_cache_dir(hf_cache).repos}
    revs = repos[(VICUNA, "model")].revisions
    assert [(r.commit_hash, sorted(r.refs)) for r in revs] == [(SHA_A, ["main"])]
    assert hub.resolve(VICUNA, "main", "model") == SHA_A and hub.resolve(VICUNA, SHA_B, "model") == SHA_B
    with pytest.raises(FileNotFoundError, match=r"offline .* has no models--lmsys--vicuna-7b-v1\.5/refs/v2"):
        hub.resolve(VICUNA, "v2", "model")


@pytest.mark.parametrize("kind", ["plain", "ours"])
def test_hub_llm_from_bin_shards_converts_once_and_locks_the_commit(
        hf_cache: Path, project: Path, tmp_path_factory: pytest.TempPathFactory, kind: str) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = plain_tokenizer() if kind == "plain" else build_tokenizer(["a red square", "the cat"], 300, "plain")
    files, original = llama_bin_checkpoint(tmp_path_factory.mktemp("vicuna"), tokenizer)
    hub.seed_cache(VICUNA, "model", SHA_A, files)

    assert cli("--llm", "vicuna7b") == 0
    out = project / "models" / "llm" / "vicuna7b"
    assert no_temp_leftovers(out.parent)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model-00001-of-00002.safetensors",
                                                                 "model-00002-of-00002.safetensors"]
    assert not list(out.glob("*.bin")) and not (out / hub.BIN_INDEX).exists()
    index = json.loads((out / hub.ST_INDEX).read_text())["weight_map"]
    assert index["lm_head.weight"] == "model-00001-of-00002.safetensors"
    assert set(index) == set(original.state_dict())
    shard1 = load_file(out / "model-00001-of-00002.safetensors")
    assert torch.equal(shard1["lm_head.weight"], original.lm_head.weight)

    m = download.manifest(out)
    assert (m["repo_id"], m["revision"], m["commit"]) == (VICUNA, "main", SHA_A)
    conv = m["converted"]
    assert conv["from"] == ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    assert conv["shared_cloned"] == ["lm_head.weight"] and conv["loader"] == "torch.load(weights_only=True)"
    assert hub.read_lock() == {"model": {VICUNA: {"main": SHA_A}}}

    model = AutoModelForCausalLM.from_pretrained(out)  # the converted checkpoint computes what the original did
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original.eval()(ids).logits)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == get_template("vicuna_v1")
    assert len(tok.encode(IMAGE_TOKEN, add_special_tokens=False)) == 1
    if kind == "plain":
        assert tok.pad_token == tok.unk_token == "<unk>"  # the LLaVA-1.5 convention for Vicuna
    assert model.config.vocab_size == len(tokenizer)  # not resized (JarvisForCausalLM.embed masks <image>)


def test_moved_revision_is_an_error_unless_the_update_is_asked(hf_cache: Path, project: Path,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    files, _ = llama_bin_checkpoint(tmp_path_factory.mktemp("vicuna"), plain_tokenizer())
    hub.seed_cache(VICUNA, "model", SHA_A, files)
    raw = load_raw(project / "params.yaml")  # the stand-in has 1 layer: checked at load once it is on disk
    raw["llms"]["vicuna7b"]["jepa_layer"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    assert cli("--llm", "vicuna7b") == 0
    out = project / "models" / "llm" / "vicuna7b"

    hub.seed_cache(VICUNA, "model", SHA_B, files)  # upstream `main` moved on
    with pytest.raises(hub.LockConflict, match=rf"{VICUNA}@main is now {SHA_B}, but .*hub\.lock\.yaml pins "
                                               rf"{SHA_A}.*revision: {SHA_A}.*--update-lock"):
        download.run(_plan(tiny_params(), "llm", "vicuna7b"))
    assert download.manifest(out)["commit"] == SHA_A and hub.locked("model", VICUNA, "main") == SHA_A

    raw = load_raw(project / "params.yaml")  # pinning the locked commit keeps working, whatever main is
    raw["llms"]["vicuna7b"]["hub"]["revision"] = SHA_A
    (project / "pinned.yaml").write_text(yaml.safe_dump(raw))
    from jarvis import cli as jarvis_cli

    assert jarvis_cli.main(["--params", "pinned.yaml", "download", "--llm", "vicuna7b"]) == 0
    assert download.manifest(out)["commit"] == SHA_A

    assert cli("--llm", "vicuna7b", "--update-lock") == 0
    assert download.manifest(out)["commit"] == SHA_B
    assert hub.read_lock()["model"][VICUNA] == {"main": SHA_B, SHA_A: SHA_A}
    assert "Commit it with the results" in (project / "hub.lock.yaml").read_text()


def test_update_env_accepts_a_moved_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(hub.UPDATE_ENV, raising=False)
    hub.lock("model", VICUNA, "main", SHA_A)
    hub.check_lock("model", VICUNA, "main", SHA_A)  # the same commit: fine
    hub.check_lock("model", VICUNA, "v1", SHA_B)  # another name: fine
    with pytest.raises(hub.LockConflict):
        hub.check_lock("model", VICUNA, "main", SHA_B)
    monkeypatch.setenv(hub.UPDATE_ENV, "1")  # what `dvc repro` / snakemake runs can set
    hub.check_lock("model", VICUNA, "main", SHA_B)


class _RunsCode:
    """Unpickling this calls Path.touch(marker): what torch.load(weights_only=False) would execute."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("payload", ["code", "not_a_state_dict"])
def test_unsafe_or_odd_pickle_is_refused_naming_the_file(hf_cache: Path, project: Path, tmp_path: Path,
                                                         payload: str) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "src"
    src.mkdir()
    files, _ = llama_bin_checkpoint(src, plain_tokenizer())
    files = {k: v for k, v in files.items() if not k.startswith("pytorch_model")}
    obj = {"w": _RunsCode(marker)} if payload == "code" else [torch.zeros(2)]
    torch.save(obj, src / "evil.bin")
    files["pytorch_model.bin"] = (src / "evil.bin").read_bytes()
    hub.seed_cache(VICUNA, "model", SHA_A, files)
    why = "cannot be loaded with torch.load\\(weights_only=True\\)" if payload == "code" else "is not a flat state dict"
    with pytest.raises(ValueError, match=rf"pytorch_model\.bin: refused, it {why}"):
        download.run(_plan(tiny_params(), "llm", "vicuna7b"))
    assert not marker.exists()
    assert not (project / "models" / "llm" / "vicuna7b").exists() and hub.read_lock() == {}


def test_hub_model_without_weights_fails_naming_the_repo(hf_cache: Path, project: Path) -> None:
    hub.seed_cache(VICUNA, "model", SHA_A, {"config.json": b"{}", "optimizer.pt": b"x"})
    with pytest.raises(FileNotFoundError, match=rf"{VICUNA}@main: no weights \(neither model\*\.safetensors nor"):
        download.run(_plan(tiny_params(), "llm", "vicuna7b"))
    assert not (project / "models" / "llm" / "vicuna7b").exists()


def test_hub_clip_openai_layout_loads_the_vision_half(hf_cache: Path, project: Path,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    files, original = clip_openai_checkpoint(tmp_path_factory.mktemp("clip"))
    hub.seed_cache(CLIP_L, "model", SHA_A, files)
    assert cli("--tower", "clip_l336") == 0
    out = project / "models" / "tower" / "clip_l336"
    m = download.manifest(out)
    assert m["grid"] == [4, 4] and m["commit"] == SHA_A and m["converted"]["to"] == ["model.safetensors"]
    tower = VisionTower.from_pretrained(out, feature_layer=-2, drop_prefix_tokens=1)
    mine = {k.removeprefix("vision_model."): v for k, v in tower.model.state_dict().items()}
    theirs = {k.removeprefix("vision_model."): v for k, v in original.state_dict().items() if "vision_model." in k}
    assert len(mine) > 10 and mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert tower(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 32)


def test_hub_dinov2_safetensors_never_reads_the_pickle(hf_cache: Path, project: Path,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    files = dinov2_checkpoint(tmp_path_factory.mktemp("dino"))
    hub.seed_cache("facebook/dinov2-large", "model", SHA_A, files)
    # A separate `jarvis download` process, so HF_HUB_OFFLINE=1 is in place before huggingface_hub is imported.
    proc = subprocess.run([sys.executable, "-m", "jarvis", "download", "--tower", "dinov2_l"], cwd=project,
                          env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["converted"] == 0
    out = project / "models" / "tower" / "dinov2_l"
    m = download.manifest(out)
    assert m["converted"] is None and m["grid"] == [42, 42]  # image_size: 336 over patch 8
    assert not list(out.glob("*.bin"))
    assert (out / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert hub.read_lock() == {"model": {"facebook/dinov2-large": {"main": SHA_A}}}


def test_hub_dataset_with_url_archives_lands_in_the_665k_layout(hf_cache: Path, project: Path) -> None:
    """LCS-558K from the hub cache, the 665K mix's six image sources over HTTP (127.0.0.1), one atomic build."""
    from archive_server import serve

    llava_data_cache(zip_bytes({"00000/a.png": b"png-a", "00000/b.png": b"png-b"}))
    raw = load_raw(project / "params.yaml")
    sources = raw["datasets"]["llava15"]["instruct"]["url_archives"]
    with serve() as server:
        for name, src in sources.items():  # each source's zip as published: its images under `root/`
            top = src["root"] if src["root"] != "*" else "whatever_the_mirror_calls_it"
            path = f"/{name}/{Path(src['url']).name}"
            server.files[path] = zip_bytes({f"{top}/{name}_0.jpg": name.encode(), f"{top}/{name}_1.jpg": b"1"})
            src["url"] = server.url(path)
        sources["coco"]["checksum"] = "md5:" + hashlib.md5(server.files["/coco/train2017.zip"]).hexdigest()
        server.cut_after["/gqa/images.zip"] = 100  # a dropped connection on the way: resumed
        (project / "params.yaml").write_text(yaml.safe_dump(raw))
        assert cli("--data", "llava15") == 2  # checksums null in params.yaml and none pinned: refused
        assert not server.requests and not (project / "data" / "llava15" / "instruct").exists()
        assert cli("--data", "llava15", "--pin-checksums") == 0
    out = project / "data" / "llava15"
    ins = out / "instruct"
    for name, src in sources.items():
        assert (ins / src["dest"] / f"{name}_0.jpg").read_bytes() == name.encode()
    assert {p.relative_to(ins).as_posix() for p in ins.glob("*/*") if p.is_dir()} == {
        "coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K", "vg/VG_100K_2"}
    fetched = download.manifest(ins)["url_archives"]
    assert fetched["coco"]["checksum_from"] == "params.yaml" and fetched["gqa"]["requests"] == 2
    assert hub.read_lock()["archive"].keys() == {sources[n]["url"] for n in sources if n != "coco"}

    assert (out / "pretrain" / "00000" / "a.png").read_bytes() == b"png-a"
    assert sorted(p.name for p in (out / "pretrain").iterdir() if p.is_file()) == [
        "blip_laion_cc_sbu_558k.json", "blip_laion_cc_sbu_558k.json.validated.json", "download.json"]
    # only what params.yaml names, and its validation manifest; the zip stays in the cache. The manifest checked
    # each image once: these test archives hold bytes, not PNGs, and the verdict says so before any stage runs.
    checked = json.loads((out / "pretrain" / "blip_laion_cc_sbu_558k.json.validated.json").read_text())
    assert set(checked["image_problems"].values()) == {"corrupt_image"}
    assert (ins / "llava_v1_5_mix665k.json").is_file() and not (ins / "llava_instruct_150k.json").exists()
    assert download.manifest(out / "pretrain")["extracted"] == 2
    assert download.manifest(out / "pretrain")["commit"] == SHA_A
    benches = tiny_params().datasets["llava15"].benchmarks
    assert {b for b in benches if (out / b / "README.md").read_text() == b} == set(benches)
    assert (out / "gqa" / "data" / "test.parquet").read_bytes() == b"pq"
    lock = hub.read_lock()["dataset"]
    assert set(lock) == {PRETRAIN, INSTRUCT, *(r.repo_id for r in benches.values())}
    assert all(v == {"main": SHA_A} for v in lock.values())
    assert no_temp_leftovers(out)

    shutil.rmtree(hf_cache)  # every part has its manifest: nothing is looked up or fetched again
    assert set(download.run(_plan(validate_params(raw), "data", "llava15"))) == {"wall_s"}


def test_changed_corpus_entry_rebuilds_instead_of_reusing(hf_cache: Path, project: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # Before: a finished part was skipped whenever repo and revision matched, so another `annotations` file of the
    # same repo kept the old one ("already complete; skipping").
    llava_data_cache(zip_bytes({"00000/a.png": b"png-a"}))
    download.run(_plan(tiny_params(edit=without_url_archives), "data", "llava15"))
    ins = project / "data" / "llava15" / "instruct"
    assert (ins / "llava_v1_5_mix665k.json").is_file()

    def other_annotations(raw: dict[str, Any]) -> None:
        without_url_archives(raw)
        raw["datasets"]["llava15"]["instruct"]["annotations"] = "llava_instruct_150k.json"

    with caplog.at_level("WARNING", logger="jarvis.stages.download"):
        download.run(_plan(tiny_params(edit=other_annotations), "data", "llava15"))
    assert (ins / "llava_instruct_150k.json").is_file() and not (ins / "llava_v1_5_mix665k.json").exists()
    assert "data/llava15/instruct was made from other settings" in caplog.text
    assert "pretrain was made from other settings" not in caplog.text  # the unchanged parts are still reused


def test_zip_slip_member_is_refused(hf_cache: Path, project: Path) -> None:
    llava_data_cache(zip_bytes({"00000/a.png": b"png-a", "../evil": b"pwned"}))
    with pytest.raises(ValueError, match=r"member '\.\./evil' escapes the extraction root"):
        download.run(_plan(tiny_params(edit=without_url_archives), "data", "llava15"))
    assert not list(project.rglob("evil"))
    assert not (project / "data" / "llava15" / "pretrain").exists()  # never renamed into place


def test_missing_archive_is_named(hf_cache: Path, project: Path) -> None:
    llava_data_cache(zip_bytes({"a.png": b"x"}))
    (hub.repo_folder(PRETRAIN, "dataset") / "snapshots" / SHA_A / "images.zip").unlink()
    with pytest.raises(FileNotFoundError, match=r"images\.zip listed in params\.yaml is missing"):
        download.run(_plan(tiny_params(edit=without_url_archives), "data", "llava15"))

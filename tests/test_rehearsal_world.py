"""The rehearsal world (jarvis.rehearsal) without a cluster: deterministic, in the library's cache layout, the real
repos' file sets, archives matching the checksums params.yaml pins, served with range requests. The end-to-end
run is tests/test_rehearsal.py (its own tier)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT
from jarvis import rehearsal
from jarvis.config import load_params


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rehearsal") / "world"
    rehearsal.build(out)
    return out


def test_world_is_deterministic_and_pinned_by_params(world: Path, tmp_path: Path) -> None:
    again = rehearsal.build(tmp_path / "again")
    assert again == json.loads((world / "world.json").read_text())
    spec = load_params(ROOT / "params.yaml").datasets["rehearsal15"]
    for name, archive in spec.instruct.url_archives.items():  # regenerate and paste when the world changes
        assert archive.checksum == again["archives"][name]["checksum"], name
        assert archive.url == f"http://127.0.0.1:{rehearsal.PORT}/{again['archives'][name]['path']}", name
    paper = load_params(ROOT / "params.yaml").datasets["llava15"]
    assert spec.model_dump(exclude={"instruct"}) == paper.model_dump(exclude={"instruct"})  # same repos as the paper
    assert {n: (a.root, a.dest) for n, a in spec.instruct.url_archives.items()} == \
        {n: (a.root, a.dest) for n, a in paper.instruct.url_archives.items()}


def test_the_paper_repos_in_the_library_layout(world: Path) -> None:
    from huggingface_hub import scan_cache_dir

    record = json.loads((world / "world.json").read_text())
    repos = {f"{r.repo_type}:{r.repo_id}": r for r in scan_cache_dir(world / "hf" / "hub").repos}
    assert set(repos) == set(record["commits"])
    for key, repo in repos.items():
        assert [(r.commit_hash, sorted(r.refs)) for r in repo.revisions] == [(record["commits"][key], ["main"])]
    files = {key: {f.file_name for rev in r.revisions for f in rev.files} for key, r in repos.items()}
    assert files["model:lmsys/vicuna-7b-v1.5"] == {
        "config.json", "generation_config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json", "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"}
    assert files["model:openai/clip-vit-large-patch14-336"] == {"config.json", "preprocessor_config.json",
                                                                "pytorch_model.bin"}
    assert {"model.safetensors", "pytorch_model.bin"} <= files["model:facebook/dinov2-large"]
    assert files["dataset:liuhaotian/LLaVA-Pretrain"] == {"blip_laion_cc_sbu_558k.json",
                                                          "blip_laion_cc_sbu_558k_meta.json", "images.zip"}


def test_the_sentencepiece_tokenizer_loads_as_vicuna_s(world: Path) -> None:
    """lmsys/vicuna-7b-v1.5 ships tokenizer.model only: transformers needs `sentencepiece` to read it (the lock)."""
    from transformers import AutoTokenizer

    snap = next((world / "hf/hub/models--lmsys--vicuna-7b-v1.5/snapshots").iterdir())
    tok = AutoTokenizer.from_pretrained(snap)
    assert (tok.bos_token, tok.eos_token, tok.unk_token) == ("<s>", "</s>", "<unk>")
    ids = tok("Is there a red cube?")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == "Is there a red cube?"


def test_665k_json_names_every_source_and_text_only_entries(world: Path) -> None:
    snap = next((world / "hf/hub/datasets--liuhaotian--LLaVA-Instruct-150K/snapshots").iterdir())
    entries = json.loads((snap / "llava_v1_5_mix665k.json").read_text())
    folders = {e["image"].rsplit("/", 1)[0] for e in entries if "image" in e}
    assert folders == {dest for _, _, dest in rehearsal.SOURCES.values()}
    assert any("image" not in e for e in entries)


def test_archive_server_answers_ranges_and_404(world: Path) -> None:
    path = rehearsal.SOURCES["coco"][0]
    data = (world / "archives" / path).read_bytes()
    with rehearsal.serving(world, port=0) as base:
        with urllib.request.urlopen(f"{base}/{path}") as resp:
            assert resp.status == 200 and resp.read() == data
        req = urllib.request.Request(f"{base}/{path}", headers={"Range": "bytes=100-"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 206 and resp.read() == data[100:]
            assert resp.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"{base}/nope.zip")

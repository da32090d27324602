"""Stage `download`, offline: tiny mode end to end, and hub mode against a fake ``snapshot_download``.

Hub mode never touches the network: ``huggingface_hub.snapshot_download`` (imported inside
``jarvis.stages.download._snapshot``) is replaced by :class:`FakeHub`, which copies a local "repo" directory into
``local_dir`` the way the real client does (honouring ``allow_patterns``), and can fail part-way to exercise the
resumable ``.partial`` directory.
"""

from __future__ import annotations

import fnmatch
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import ROOT
from jarvis.config import Params, load_raw, validate_params
from jarvis.data.templates import IMAGE_TOKEN, get_template
from jarvis.data.tokenizer import build_tokenizer
from jarvis.model.recipe import tower_selection
from jarvis.model.vision import VisionTower
from jarvis.stages import download

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
    if edit is not None:
        edit(raw)
    return validate_params(raw)


class FakeHub:
    """Stands in for ``huggingface_hub.snapshot_download``: copies ``repos[repo_id]`` into ``local_dir``.

    ``fail_after`` maps a repo id to a number of files: the first call for that repo copies that many files and then
    raises, like a dropped connection. Every call records what was already in ``local_dir`` when it started.
    """

    def __init__(self, repos: dict[str, Path], fail_after: dict[str, int] | None = None) -> None:
        self.repos = repos
        self.fail_after = dict(fail_after or {})
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        *,
        repo_id: str,
        revision: str,
        repo_type: str,
        local_dir: Path | str,
        allow_patterns: list[str] | None = None,
        **kwargs: Any,
    ) -> str:
        local = Path(local_dir)
        self.calls.append(
            {
                "repo_id": repo_id,
                "revision": revision,
                "repo_type": repo_type,
                "already_there": sorted(p.name for p in local.iterdir()) if local.is_dir() else [],
            }
        )
        if repo_id not in self.repos:
            raise FileNotFoundError(f"404: {repo_type} repo {repo_id} not found")
        files = sorted(f for f in self.repos[repo_id].rglob("*") if f.is_file())
        if allow_patterns is not None:
            files = [f for f in files if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns)]
        budget = self.fail_after.pop(repo_id, None)
        for i, f in enumerate(files):
            if budget is not None and i == budget:
                raise ConnectionError("connection reset by peer")
            dest = local / f.relative_to(self.repos[repo_id])
            if dest.exists():  # resume: what is complete is not fetched again
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        return str(local)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeHub]:
    import huggingface_hub

    def install(repos: dict[str, Path], fail_after: dict[str, int] | None = None) -> FakeHub:
        hub = FakeHub(repos, fail_after)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
        return hub

    return install


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


def tiny_llama_repo(directory: Path, tokenizer: Any) -> Path:
    """A real (tiny) HF Llama checkpoint as a hub repo would hold it: config.json + model.safetensors + tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def clip_vision_repo(directory: Path) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    CLIPVisionModel(
        CLIPVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        )
    ).save_pretrained(directory)
    return directory


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def llava_data_repos(root: Path, archive: bytes) -> dict[str, Path]:
    """Fake dataset repos for datasets.llava15: pretrain (annotations + images.zip), instruct, one per benchmark."""
    pre = root / "pretrain"
    pre.mkdir(parents=True)
    (pre / "blip_laion_cc_sbu_558k.json").write_text(json.dumps([{"id": "0", "image": "00000/a.png"}]))
    (pre / "images.zip").write_bytes(archive)
    ins = root / "instruct"
    ins.mkdir()
    (ins / "llava_v1_5_mix665k.json").write_text("[]")
    repos = {PRETRAIN: pre, INSTRUCT: ins}
    for bench, ref in tiny_params().datasets["llava15"].benchmarks.items():
        d = root / bench
        d.mkdir()
        (d / "README.md").write_text(bench)
        repos[ref.repo_id] = d
    return repos


def _plan(params, component: str, name: str):
    """The download stage's plan, resolved as the CLI resolves it."""
    from jarvis.plan import Resolver

    return Resolver(params, params.model_dump(mode="json")).download(component, name)


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


# ------------------------------------------------------------------ hub mode (fake snapshot_download)
@pytest.mark.parametrize("kind", ["plain", "ours"])
def test_hub_llm_lands_atomically_with_chat_template(
    project: Path, fake_hub, tmp_path_factory, kind: str
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path_factory.mktemp("hub") / "vicuna"
    tokenizer = (
        plain_tokenizer() if kind == "plain" else build_tokenizer(["a red square", "the cat"], 300, "plain")
    )
    tiny_llama_repo(src, tokenizer)
    (src / "pytorch_model.bin").write_bytes(
        b"pickle"
    )  # a hub repo often holds both; only safetensors is taken
    hub = fake_hub({VICUNA: src})

    metrics = download.run(_plan(tiny_params(), "llm", "vicuna7b"))
    assert metrics["added_tokens"] == (
        1 if kind == "plain" else 0
    )  # <image> is new to a Vicuna-like tokenizer
    assert [(c["repo_id"], c["revision"], c["repo_type"]) for c in hub.calls] == [(VICUNA, "main", "model")]

    out = project / "models" / "llm" / "vicuna7b"
    assert no_temp_leftovers(out.parent)
    assert not (out / "pytorch_model.bin").exists()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == get_template("vicuna_v1")
    assert len(tok.encode(IMAGE_TOKEN, add_special_tokens=False)) == 1
    if kind == "plain":
        assert tok.pad_token == tok.unk_token == "<unk>"  # the LLaVA-1.5 convention for Vicuna
    model = AutoModelForCausalLM.from_pretrained(out)
    # Not resized: the <image> placeholder id never reaches the embedding (JarvisForCausalLM.embed masks it).
    assert model.config.vocab_size == len(tokenizer)
    manifest = download.manifest(out)
    assert manifest["repo_id"] == VICUNA and manifest["revision"] == "main"


def test_hub_model_without_safetensors_fails_naming_the_repo(
    project: Path, fake_hub, tmp_path_factory
) -> None:
    src = tmp_path_factory.mktemp("hub") / "vicuna"
    tiny_llama_repo(src, plain_tokenizer())
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    fake_hub({VICUNA: src})
    with pytest.raises(FileNotFoundError, match=rf"{VICUNA}@main: no safetensors"):
        download.run(_plan(tiny_params(), "llm", "vicuna7b"))
    assert not (project / "models" / "llm" / "vicuna7b").exists()


def test_failed_download_keeps_partial_and_resumes(project: Path, fake_hub, tmp_path_factory) -> None:
    src = tiny_llama_repo(tmp_path_factory.mktemp("hub") / "vicuna", plain_tokenizer())
    hub = fake_hub({VICUNA: src}, fail_after={VICUNA: 1})  # config.json arrives, then the connection drops
    params = tiny_params()
    with pytest.raises(RuntimeError, match=rf"download of model {VICUNA}@main failed: connection reset"):
        download.run(_plan(params, "llm", "vicuna7b"))
    partial = project / "models" / "llm" / "vicuna7b.partial"
    assert (partial / "config.json").is_file()
    assert not (project / "models" / "llm" / "vicuna7b").exists()

    download.run(_plan(params, "llm", "vicuna7b"))
    assert hub.calls[1]["already_there"] == [
        "config.json"
    ]  # the second call resumed into the same partial dir
    assert not partial.exists()
    assert (project / "models" / "llm" / "vicuna7b" / "model.safetensors").is_file()


def test_hub_clip_vision_tower(project: Path, fake_hub, tmp_path_factory) -> None:
    fake_hub({CLIP_L: clip_vision_repo(tmp_path_factory.mktemp("hub") / "clip")})
    metrics = download.run(_plan(tiny_params(), "tower", "clip_l336"))
    assert metrics["grid"] == 4 and metrics["hidden_size"] == 32
    out = project / "models" / "tower" / "clip_l336"
    assert download.manifest(out)["grid"] == [4, 4]
    tower = VisionTower.from_pretrained(out, feature_layer=-2, drop_prefix_tokens=1)
    assert tower(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 32)


def test_hub_full_clip_checkpoint_as_tower(project: Path, fake_hub, tmp_path_factory) -> None:
    from transformers import CLIPConfig, CLIPModel

    src = tmp_path_factory.mktemp("hub") / "clip"
    vision = dict(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=64,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    CLIPModel(CLIPConfig(vision_config=vision, text_config=text)).save_pretrained(src)
    fake_hub({CLIP_L: src})
    assert download.run(_plan(tiny_params(), "tower", "clip_l336"))["grid"] == 4


def test_hub_dataset_extracts_archives_and_skips_when_complete(
    project: Path, fake_hub, tmp_path_factory
) -> None:
    archive = zip_bytes({"00000/a.png": b"png-a", "00000/b.png": b"png-b"})
    hub = fake_hub(llava_data_repos(tmp_path_factory.mktemp("hub"), archive))
    params = tiny_params()
    metrics = download.run(_plan(params, "data", "llava15"))
    assert metrics["pretrain_extracted"] == 2 and metrics["instruct_extracted"] == 0

    out = project / "data" / "llava15"
    assert (out / "pretrain" / "00000" / "a.png").read_bytes() == b"png-a"
    assert (out / "pretrain" / "blip_laion_cc_sbu_558k.json").is_file()
    assert (out / "instruct" / "llava_v1_5_mix665k.json").is_file()
    assert download.manifest(out / "pretrain")["extracted"] == 2
    benches = set(params.datasets["llava15"].benchmarks)
    assert {b for b in benches if (out / b / "README.md").read_text() == b} == benches
    assert all(c["repo_type"] == "dataset" for c in hub.calls)
    assert no_temp_leftovers(out)

    n_calls = len(hub.calls)
    download.run(_plan(params, "data", "llava15"))  # every part has its manifest: nothing is fetched again
    assert len(hub.calls) == n_calls


def test_zip_slip_member_is_refused(project: Path, fake_hub, tmp_path_factory) -> None:
    archive = zip_bytes({"00000/a.png": b"png-a", "../evil": b"pwned"})
    fake_hub(llava_data_repos(tmp_path_factory.mktemp("hub"), archive))
    with pytest.raises(ValueError, match=r"member '\.\./evil' escapes the extraction root"):
        download.run(_plan(tiny_params(), "data", "llava15"))
    assert not list(project.rglob("evil"))
    assert not (project / "data" / "llava15" / "pretrain").exists()  # never renamed into place


def test_missing_archive_is_named(project: Path, fake_hub, tmp_path_factory) -> None:
    repos = llava_data_repos(tmp_path_factory.mktemp("hub"), zip_bytes({"a.png": b"x"}))
    (repos[PRETRAIN] / "images.zip").unlink()
    fake_hub(repos)
    with pytest.raises(FileNotFoundError, match=r"images\.zip listed in params\.yaml is missing"):
        download.run(_plan(tiny_params(), "data", "llava15"))

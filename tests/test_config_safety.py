"""Issue 9, params part: names that reach paths/commands are a safe alphabet, duplicated YAML keys are an error in
every entry point, cross-field mistakes fail at load (naming the dotted key), and `snakemake --config` is refused."""

from __future__ import annotations

import copy
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import bin_path
from jarvis import paths, yamlsafe
from jarvis.config import ConfigError, load_params, load_raw, validate_params
from pipeline_utils import env

UNSAFE = ["j$(touch PWNED)", "../../escape", "a/b", "a.b", "-rf", "x y", "a;b", "`id`", "", "x" * 65, "é"]
# table -> the references that name one of its entries, as (path to the referring dict, field) pairs
REFS = {
    "experiments": [],
    "llms": [("experiments.*", "llm")],
    "towers": [("experiments.*", "vision"), ("jepa.*", "target")],
    "datasets": [("experiments.*", "data"), ("llms.*.tokenizer", "corpus"), ("llms.*.text_pretrain", "data")],
    "training": [("experiments.*", "training")],
    "jepa": [("experiments.*", "jepa")],
}
OLD = {"experiments": "jarvis", "llms": "tiny_llama", "towers": "tiny_dinov2", "datasets": "synth",
       "training": "tiny", "jepa": "tiny"}


@pytest.fixture()
def raw(root):
    return load_raw(root / "params.yaml")


def _rename(raw: dict, table: str, old: str, new: str) -> dict:
    """A copy of ``raw`` with ``table.old`` renamed to ``new`` everywhere it is referred to."""
    out = copy.deepcopy(raw)
    out[table] = {(new if k == old else k): v for k, v in out[table].items()}
    if table == "experiments":
        out["run"]["experiments"] = [new if e == old else e for e in out["run"]["experiments"]]
        for exp in out["experiments"].values():
            exp["baselines"] = [new if b == old else b for b in exp["baselines"]]
        for sweep in out.get("sweeps", {}).values():
            sweep["base"] = new if sweep["base"] == old else sweep["base"]
    for where, field in REFS[table]:
        head, *rest = where.split(".")
        for entry in out[head].values():
            node = entry
            for part in rest[1:]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and node.get(field) == old:
                node[field] = new
    return out


def _set(raw: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(raw)
    node = out
    *head, last = dotted.split(".")
    for part in head:
        node = node[part]
    node[last] = value
    return out


# ------------------------------------------------------------------ names
@pytest.mark.parametrize("table", sorted(OLD))
@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_rejected_naming_the_offender(raw, table, name):
    bad = _rename(raw, table, OLD[table], name)
    with pytest.raises(ConfigError, match="unsafe name") as err:
        validate_params(bad)
    assert f"{table}: unsafe name {name!r}" in str(err.value)  # the table and the offending name itself


@pytest.mark.parametrize("name", ["a", "A1", "tiny_llama-2", "x" * 64])
def test_safe_names_still_validate(raw, name):
    for table in OLD:
        validate_params(_rename(raw, table, OLD[table], name))


@pytest.mark.parametrize(("dotted", "value", "match"), [
    ("datasets.llava15.pretrain.annotations", "../../x.json", "unsafe relative path '../../x.json'"),
    ("datasets.llava15.pretrain.annotations", "/etc/passwd", "unsafe relative path '/etc/passwd'"),
    ("datasets.llava15.pretrain.annotations", "a/../../b.json", "unsafe relative path"),
    ("datasets.llava15.pretrain.archives", ["ok.zip", "$(id).zip"], r"archives\.1: unsafe relative path"),
    ("datasets.llava15.pretrain.repo_id", "../x", "invalid hub repo_id"),
    ("datasets.llava15.pretrain.repo_id", "a/b/c", "invalid hub repo_id"),
    ("llms.vicuna7b.hub.revision", "main; rm -rf ~", r"llms\.vicuna7b\.hub\.revision: invalid hub revision"),
    ("datasets.llava15.benchmarks", {"../pope": {"repo_id": "lmms-lab/POPE"}}, "unsafe name '../pope'"),
])
def test_hub_fields_that_reach_paths_are_checked(raw, dotted, value, match):
    with pytest.raises(ConfigError, match=match):
        validate_params(_set(raw, dotted, value))


def test_paths_refuse_names_that_leave_the_project():
    for fn in (paths.dataset_dir, paths.llm_dir, paths.tower_dir, paths.features_dir, paths.log_file):
        for name in ("../../escape", "j$(touch PWNED)", "a/b", "/abs"):
            with pytest.raises(paths.UnsafePathError, match=re.escape(repr(name))):
                fn(name)
    with pytest.raises(paths.UnsafePathError, match="experiment '../x'"):
        paths.run_dir("../x", 0, "pretrain")
    with pytest.raises(paths.UnsafePathError, match="benchmark"):
        paths.answers_file("jarvis", 0, "../../pope")
    with pytest.raises(paths.UnsafePathError):
        paths.work_dir("..")
    assert paths.checkpoint_dir("jarvis", 0, "pretrain") == Path("runs/jarvis/s0/pretrain/model")
    assert paths.features_dir(paths.cache_key("synth", "tiny_clip", "tiny_dinov2")).as_posix() == \
        "features/synth-tiny_clip-tiny_dinov2"


def test_inside_root_is_lexical(tmp_path, monkeypatch):
    monkeypatch.setenv("JARVIS_ROOT", str(tmp_path))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "proj").mkdir()
    monkeypatch.setenv("JARVIS_ROOT", str(tmp_path / "proj"))
    assert paths.inside_root(Path("data/x/../y")) == Path("data/x/../y")
    assert paths.inside_root(tmp_path / "proj" / "data") == tmp_path / "proj" / "data"
    for bad in (Path("data/../../x"), Path(".."), tmp_path / "elsewhere", tmp_path / "proj" / ".." / "x"):
        with pytest.raises(paths.UnsafePathError, match="leaves the project root"):
            paths.inside_root(bad)
    # a symlinked data/ on a scratch disk is the documented layout: containment is by name, not by target
    (tmp_path / "proj" / "data").symlink_to(tmp_path / "elsewhere")
    assert paths.inside_root(paths.dataset_dir("synth")) == Path("data/synth")


# ------------------------------------------------------------------ duplicated keys
DUP = """\
seed: 1
training:
  tiny:
    pretrain:
      learning_rate: 1.0e-3
      global_batch: 16
      learning_rate: 2.0e-3
"""


def test_yaml_loader_names_duplicated_key_and_lines():
    with pytest.raises(yamlsafe.DuplicateKeyError, match=r"duplicated key 'learning_rate' \(line 5 and line 7\)"):
        yamlsafe.load(DUP)
    assert yaml.safe_load(DUP)["training"]["tiny"]["pretrain"]["learning_rate"] == 2.0e-3  # what PyYAML does
    merged = yamlsafe.load("base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n")  # merge keys are not duplicates
    assert merged["use"] == {"x": 1, "y": 3}
    with pytest.raises(yamlsafe.DuplicateKeyError, match="duplicated key 'x'"):
        yamlsafe.load("- {x: 1, x: 1}\n")


def _with_duplicate(root: Path, dest: Path) -> Path:
    text = (root / "params.yaml").read_text()
    assert "\nseed: 42\n" in text
    dest.write_text(text.replace("\nseed: 42\n", "\nseed: 42\nseed: 7\n", 1))
    return dest


def test_every_python_entry_point_refuses_duplicated_keys(root, tmp_path):
    from jarvis import cli, dag

    bad = _with_duplicate(root, tmp_path / "params.yaml")
    for load in (load_params, load_raw, dag.load):
        with pytest.raises(ConfigError, match=r"duplicated key 'seed' \(line \d+ and line \d+\)"):
            load(bad)
    assert cli.main(["--params", str(bad), "dag", "list"]) == 2


def _snakemake_project(root: Path, dest: Path) -> Path:
    for name in ("Snakefile", "params.yaml", "dvc.yaml", "environment.yml"):  # a stale dvc.yaml is refused
        shutil.copy2(root / name, dest / name)
    shutil.copytree(root / "workflow", dest / "workflow")
    shutil.copytree(root / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _snakemake_dry(project: Path, *extra: str) -> subprocess.CompletedProcess:
    e = {**env(project), "PYTHONPATH": str(project / "src")}  # this checkout's jarvis, whatever is installed
    return subprocess.run([bin_path("snakemake"), "all", "-n", "--cores", "1", *extra], cwd=project,
                          env=e, capture_output=True, text=True, timeout=300)


def test_snakemake_refuses_duplicated_keys_and_config_overrides(root, tmp_path):
    project = _snakemake_project(root, tmp_path)
    ok = _snakemake_dry(project)
    assert ok.returncode == 0, ok.stderr[-3000:]
    _with_duplicate(root, project / "params.yaml")
    res = _snakemake_dry(project)
    assert res.returncode != 0
    assert "duplicated key 'seed'" in res.stdout + res.stderr
    shutil.copy2(root / "params.yaml", project / "params.yaml")
    res = _snakemake_dry(project, "--config", "seed=7")
    assert res.returncode != 0
    assert "--config/--configfile is not applied (seed)" in res.stdout + res.stderr


def test_snakemake_never_runs_an_injected_experiment_name(root, tmp_path):
    """The issue's reproduction: an experiment named `j$(touch PWNED)`, run for real (not a dry run)."""
    project = _snakemake_project(root, tmp_path)
    text = (root / "params.yaml").read_text()
    text = text.replace("  jarvis:\n", "  j$(touch PWNED):\n", 1).replace(
        "experiments: [llava, llava_bidir, jarvis]", 'experiments: ["j$(touch PWNED)"]', 1)
    (project / "params.yaml").write_text(text)
    e = {**env(project), "PYTHONPATH": str(project / "src")}
    res = subprocess.run([bin_path("snakemake"), "--cores", "1", "all"], cwd=project, env=e, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode != 0
    assert "unsafe name 'j$(touch PWNED)'" in res.stdout + res.stderr
    assert not list(project.rglob("PWNED")) and not (project / "runs").exists()


# ------------------------------------------------------------------ cross-field and value checks
CASES = [
    # (dotted key to set, value, dotted key the error must name)
    ("llms.tiny_llama.jepa_layer", 5, "llms.tiny_llama.jepa_layer"),
    ("jepa.tiny.mask.target_scale", [1.5, 2], "jepa.tiny.mask.target_scale"),
    ("jepa.tiny.mask.target_scale", [0.0, 0.2], "jepa.tiny.mask.target_scale"),
    ("jepa.tiny.mask.context_scale", [0.9, 0.8], "jepa.tiny.mask.context_scale"),
    ("jepa.tiny.mask.aspect_ratio", [-1.0, 2.0], "jepa.tiny.mask.aspect_ratio"),
    ("jepa.tiny.mask.aspect_ratio", [2.0, 1.0], "jepa.tiny.mask.aspect_ratio"),
    ("jepa.tiny.mask.num_targets", 0, "jepa.tiny.mask.num_targets"),
    ("jepa.tiny.mask.min_keep", 40, "jepa.tiny.mask.min_keep"),  # 8x8 grid: target blocks have <= 12 patches
    ("training.tiny.pretrain.learning_rate", math.inf, "training.tiny.pretrain.learning_rate"),
    ("training.tiny.finetune.learning_rate", math.nan, "training.tiny.finetune.learning_rate"),
    ("training.tiny.pretrain.max_grad_norm", math.inf, "training.tiny.pretrain.max_grad_norm"),
    ("training.tiny.pretrain.epochs", math.inf, "training.tiny.pretrain.epochs"),
    ("llms.tiny_llama.text_pretrain.learning_rate", math.inf, "llms.tiny_llama.text_pretrain.learning_rate"),
    ("llms.tiny_llama.config.rope_theta", math.inf, "llms.tiny_llama.config.rope_theta"),
    ("jepa.tiny.weight", math.nan, "jepa.tiny.weight"),
    ("datasets.synth.caption_spatial_rate", math.nan, "datasets.synth.caption_spatial_rate"),
    ("experiments.jarvis.overrides", {"pretrain": {"learning_rate": math.inf}},
     "experiments.jarvis.overrides.pretrain.learning_rate"),
    ("training.tiny.pretrain.learning_rate", "inf", "training.tiny.pretrain.learning_rate"),
    ("training.tiny.pretrain.global_batch", True, "training.tiny.pretrain.global_batch"),
    ("training.tiny.pretrain.learning_rate", True, "training.tiny.pretrain.learning_rate"),
    ("training.tiny.pretrain.zero_stage", True, "training.tiny.pretrain.zero_stage"),
    ("jepa.tiny.mask.target_scale", [True, True], "jepa.tiny.mask.target_scale"),
    ("seed", False, "seed"),
    ("training.tiny.pretrain.max_steps", 0, "training.tiny.pretrain.max_steps"),
    ("training.tiny.pretrain.max_steps", -5, "training.tiny.pretrain.max_steps"),
    ("training.tiny.pretrain.trainable", [], "training.tiny.pretrain.trainable"),
    ("training.tiny.pretrain.trainable", ["projector", "projector"], "training.tiny.pretrain.trainable"),
    ("training.tiny.pretrain.trainable", ["projector", "vision"], "training.tiny.pretrain.use_feature_cache"),
    ("evaluation.limit", 0, "evaluation.limit"),
    ("evaluation.blind", "sometimes", "evaluation.blind"),
    ("evaluation.blind", 2, "evaluation.blind"),
    # OneCycleLR divided by zero at 20 steps (a traceback once stage 0 started); fewer: a negative warm-up
    ("llms.tiny_llama.text_pretrain.steps", 20, "llms.tiny_llama.text_pretrain.steps"),
    ("llms.tiny_llama.text_pretrain.steps", 5, "llms.tiny_llama.text_pretrain.steps"),
    ("towers.tiny_dinov2.image_size", 0, "towers.tiny_dinov2.image_size"),
    ("towers.tiny_dinov2.image_size", 60, "towers.tiny_dinov2.image_size"),  # 60 % patch 8
    ("towers.tiny_clip.config.patch_size", 7, "towers.tiny_clip.config.image_size"),
    ("towers.tiny_clip.feature_layer", 3, "towers.tiny_clip.feature_layer"),  # 2 layers: -3..2
    ("towers.tiny_clip.feature_layer", -4, "towers.tiny_clip.feature_layer"),
    ("towers.tiny_clip.config.num_attention_heads", 5, "towers.tiny_clip.config.hidden_size"),
    ("llms.tiny_llama.config.num_attention_heads", 3, "llms.tiny_llama.config.hidden_size"),
    ("llms.tiny_llama.config.num_key_value_heads", 3, "llms.tiny_llama.config.num_attention_heads"),
    ("llms.tiny_llama.config.num_hidden_layers", 0, "llms.tiny_llama.config.num_hidden_layers"),
    ("llms.tiny_llama.config.hidden_size", 64.5, "llms.tiny_llama.config.hidden_size"),
    ("llms.tiny_llama.config.vocab_size", 100, "llms.tiny_llama.config.vocab_size"),
    ("llms.tiny_llama.tokenizer.corpus", "llava15", "llms.tiny_llama.tokenizer.corpus"),
    ("run.experiments", ["llava", "jarvis", "llava"], "run.experiments"),
    ("run.benchmarks", ["pope", "pope"], "run.benchmarks"),
    ("run.benchmarks", [], "run.benchmarks"),  # before: everything trained, then the report failed (no scores)
    ("run.seeds", [0, -1], "run.seeds.1"),  # before: `__s-1` runs were never paired over seeds in the deltas
    ("experiments.jarvis.baselines", ["jarvis"], "experiments.jarvis.baselines"),
    ("experiments.jarvis.baselines", ["llava", "llava"], "experiments.jarvis.baselines"),
]


@pytest.mark.parametrize(("dotted", "value", "key"), CASES, ids=[f"{c[0]}={c[1]!r}" for c in CASES])
def test_bad_values_fail_at_load_naming_the_dotted_key(raw, dotted, value, key):
    with pytest.raises(ConfigError) as err:
        validate_params(_set(raw, dotted, value))
    assert re.search(rf"(^|\s){re.escape(key)}:", str(err.value)), str(err.value)


def test_default_limits_are_accepted(raw):
    p = validate_params(raw)
    assert p.llms["tiny_llama"].jepa_layer == 1 and p.towers["tiny_clip"].grid() == (8, 8)
    assert p.towers["clip_l336"].grid() is None  # hub tower: the grid is checked when the model is built
    # the boundaries themselves are legal: jepa_layer = depth, scale max = 1, feature_layer = -(depth + 1)
    validate_params(_set(_set(_set(raw, "llms.tiny_llama.jepa_layer", 4), "jepa.tiny.mask.context_scale", [1.0, 1.0]),
                         "towers.tiny_clip.feature_layer", -3))
    validate_params(_set(raw, "llms.tiny_llama.text_pretrain.steps", 0))  # 0 skips stage 0
    validate_params(_set(raw, "llms.tiny_llama.text_pretrain.steps", 21))


def test_reserved_and_case_colliding_names(raw):
    with pytest.raises(ConfigError, match="experiments.components: the name is reserved"):
        validate_params(_rename(raw, "experiments", "jarvis", "components"))
    bad = copy.deepcopy(raw)
    bad["experiments"]["Jarvis"] = copy.deepcopy(bad["experiments"]["jarvis"])
    with pytest.raises(ConfigError, match="experiments.Jarvis: differs from experiments.jarvis only in case"):
        validate_params(bad)


def test_feature_cache_directories_cannot_collide(raw):
    """'-' is allowed in names, so (synth, x-tiny_clip) and (synth-x, tiny_clip) would share features/synth-x-tiny_clip."""
    bad = copy.deepcopy(raw)
    bad["towers"]["x-tiny_clip"] = copy.deepcopy(bad["towers"]["tiny_clip"])
    bad["datasets"]["synth-x"] = copy.deepcopy(bad["datasets"]["synth"])
    bad["experiments"]["a"] = {**copy.deepcopy(bad["experiments"]["llava"]), "vision": "x-tiny_clip"}
    bad["experiments"]["b"] = {**copy.deepcopy(bad["experiments"]["llava"]), "data": "synth-x"}
    with pytest.raises(ConfigError, match="feature cache 'synth-x-tiny_clip' would be shared"):
        validate_params(bad)


def test_hub_dataset_must_hold_every_selected_benchmark(raw):
    bad = _set(raw, "run.experiments", ["jarvis_vicuna7b"])
    del bad["datasets"]["llava15"]["benchmarks"]["pope"]
    with pytest.raises(ConfigError, match=r"datasets\.llava15\.benchmarks: no 'pope' entry"):
        validate_params(bad)
    validate_params(_set(bad, "run.benchmarks", ["gqa", "cvbench_2d"]))  # not selected: fine


def test_hub_lm_depth_is_checked_once_its_config_is_downloaded(root, tmp_path):
    shutil.copy2(root / "params.yaml", tmp_path / "params.yaml")
    load_params(tmp_path / "params.yaml")  # not downloaded yet: depth unknown, JarvisForCausalLM checks it later
    cfg = tmp_path / "models" / "llm" / "vicuna7b" / "config.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('{"model_type": "llama", "num_hidden_layers": 32}')
    load_params(tmp_path / "params.yaml")
    cfg.write_text('{"model_type": "llama", "num_hidden_layers": 6}')  # jepa_layer: 8
    load_params(tmp_path / "params.yaml")  # no selected experiment reads vicuna7b's layer
    raw = load_raw(tmp_path / "params.yaml")
    raw["run"]["experiments"] = ["llava_vicuna7b", "jarvis_vicuna7b"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=r"llms\.vicuna7b\.jepa_layer: 8 is beyond the LM's depth.*jarvis_vicuna7b"):
        load_params(tmp_path / "params.yaml")
    raw["run"]["experiments"] = ["llava_vicuna7b"]  # a LLaVA arm reads no layer
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    load_params(tmp_path / "params.yaml")
    raw["run"]["sweeps"] = ["paper_jepa_layer"]  # the sweep's variants run too: layers 4..32 on 6 layers
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=r"experiments\.jarvis_vicuna7b--layer-8\.jepa_layer: 8 is beyond"):
        load_params(tmp_path / "params.yaml")


def test_rehearsal_reads_out_at_a_quarter_of_its_miniature_vicuna(root, tmp_path):
    """The rehearsal's 4-layer stand-in for Vicuna-7B sits in models/llm/vicuna7b beside llms.vicuna7b.jepa_layer: 8:
    its JARVIS arm reads out at L/4 = 1 (experiments.rehearsal_jarvis.jepa_layer), and loading params must not fail
    on the LM entry's default, which no rehearsal arm reads (found by the rehearsal: every stage after the LM's
    download refused to start)."""
    raw = load_raw(root / "params.yaml")
    raw["run"]["experiments"] = ["rehearsal_llava", "rehearsal_llava_bidir", "rehearsal_jarvis"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = tmp_path / "models" / "llm" / "vicuna7b" / "config.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('{"model_type": "llama", "num_hidden_layers": 4}')
    params = load_params(tmp_path / "params.yaml")
    assert params.jepa_layer("rehearsal_jarvis") == 1 == 4 // 4

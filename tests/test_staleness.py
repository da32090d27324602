"""Code edits and params edits rerun exactly what they touch, in `dvc status` and `snakemake -n` alike.

A trimmed graph (one arm, one seed, two benchmarks: every stage kind) in a throwaway copy of the project. Instead
of running the pipeline, every stage's outputs are written as placeholders in topological order and recorded with
`dvc commit`, so both tools start from "everything up to date"; each check then edits one thing, asks both tools,
and restores it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pipeline_utils import dvc_stale, make_project, run, snakemake_dry_jobs

pytestmark = [pytest.mark.slow]

T0 = 1_600_000_000  # code and params files are older than every placeholder output


def _plans(project: Path) -> dict:
    from jarvis.plan import load

    cwd = os.getcwd()
    os.chdir(project)
    try:
        return {p.id: p for p in load(project / "params.yaml").graph()}
    finally:
        os.chdir(cwd)


def _trim(project: Path, **run_over) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["run"].update(experiments=["jarvis"], seeds=[0], benchmarks=["pope", "mmvp"], **run_over)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run(project, "jarvis", "dag", "render")


def _descendants(plans: dict, ids: set[str]) -> set[str]:
    producer = {o: p.id for p in plans.values() for o in (*p.outs, *p.metrics)}
    out = set(ids)
    changed = True
    while changed:
        changed = False
        for p in plans.values():
            if p.id not in out and any(producer.get(i) in out for i in p.inputs):
                out.add(p.id)
                changed = True
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("staleness") / "proj"
    p.mkdir()
    make_project(p)
    _trim(p)
    for f in p.rglob("*"):
        if f.is_file() and ".git" not in f.parts:
            os.utime(f, (T0, T0))
    plans = _plans(p)
    for plan in plans.values():  # placeholders
        for out in (*plan.outs, *plan.metrics):
            path = p / out
            if "." in path.name:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{plan.id}\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder.txt").write_text(f"{plan.id}\n")
    run(p, "dvc", "commit", "-f", "-q")
    for k, plan in enumerate(plans.values()):  # after the commit (it relinks directories): topological mtimes
        for out in (*plan.outs, *plan.metrics):
            path = p / out
            for q in [*path.rglob("*"), path]:
                os.utime(q, (T0 + 100 + k, T0 + 100 + k), follow_symlinks=False)
    return p


def test_placeholders_are_up_to_date_in_both_tools(project: Path) -> None:
    assert dvc_stale(project) == set()
    assert snakemake_dry_jobs(project) == set()


# One module per stage kind at least, and the ones a hand list used to miss. (mask_geometry.py is in every stage's
# closure: params validation checks mask feasibility with the sampler's own size rule at every load; the sampler
# itself, masking.py, only in the stages that draw masks.)
MODULES = ("data/synthetic.py", "stages/cache_features.py", "model/freeze.py", "eval/scorers.py", "report.py",
           "stages/common.py", "launch.py", "seeding.py", "training.py", "masking.py", "mask_geometry.py")


def test_a_comment_in_a_module_reruns_the_stages_importing_it(project: Path) -> None:
    plans = _plans(project)
    hit_kinds: set[str] = set()
    for mod in MODULES:
        rel = f"src/jarvis/{mod}"
        path = project / rel
        text = path.read_text()
        direct = {i for i, p in plans.items() if rel in p.code}
        assert direct, mod
        hit_kinds |= {plans[i].kind for i in direct}
        try:
            path.write_text(text + "# a comment\n")
            assert dvc_stale(project) == direct, mod
            assert snakemake_dry_jobs(project) == _descendants(plans, direct), mod
        finally:
            path.write_text(text)
            os.utime(path, (T0, T0))
    assert hit_kinds == {p.kind for p in plans.values()}
    assert any(len({i for i, p in plans.items() if f"src/jarvis/{m}" in p.code}) < len(plans) for m in MODULES)
    assert dvc_stale(project) == set() and snakemake_dry_jobs(project) == set()


def _edit(project: Path, dotted: str, value) -> str:
    path = project / "params.yaml"
    text = path.read_text()
    raw = yaml.safe_load(text)
    node = raw
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return text


@pytest.mark.parametrize(("key", "value", "kinds"), [
    ("training.tiny.resources.pretrain.runtime", 99, set()),  # a scheduler request: read by no stage
    ("evaluation.max_new_tokens", {"pope": 6}, {"evaluate"}),
    ("llms.tiny_llama.jepa_layer", 2, {"pretrain"}),  # the JEPA read-out layer: not the LM download
    # a tower's architecture: its download, not the stages that read only its feature selection (sibling keys)
    ("towers.tiny_dinov2.config.num_attention_heads", 2, {"download"}),
    ("training.tiny.finetune.learning_rate", 2.0e-3, {"finetune"}),
])
def test_a_params_edit_reruns_exactly_the_stages_reading_it(project: Path, key, value, kinds) -> None:
    plans = _plans(project)
    direct = {i for i, p in plans.items() if any(key == k or key.startswith(k + ".") for k in p.params)}
    assert {plans[i].kind for i in direct} == kinds
    text = _edit(project, key, value)
    try:
        assert dvc_stale(project) == direct
        assert snakemake_dry_jobs(project) == _descendants(plans, direct)
    finally:
        (project / "params.yaml").write_text(text)
        os.utime(project / "params.yaml", (T0, T0))
    assert dvc_stale(project) == set() and snakemake_dry_jobs(project) == set()


def test_a_sweep_expands_to_the_same_stages_in_both_tools(project: Path) -> None:
    text = (project / "params.yaml").read_text()
    dvc_yaml = (project / "dvc.yaml").read_text()
    try:
        _trim(project, sweeps=["tiny_skip_prob"])
        plans = _plans(project)
        expected = {i for i in plans if "--" in i}
        assert expected == {f"{k}-jarvis--skip_prob-{v}-s0" for k in ("pretrain", "finetune", "evaluate")
                            for v in ("0p0", "0p5")}
        dvc_ids = set(run(project, "dvc", "stage", "list", "--name-only").stdout.split())
        assert {i for i in dvc_ids if "--" in i} == expected
        smk = snakemake_dry_jobs(project)
        assert {i for i in smk if "--" in i} == expected and smk - expected == {"report"}
        assert dvc_stale(project) - expected == {"report"}
    finally:
        (project / "params.yaml").write_text(text)
        (project / "dvc.yaml").write_text(dvc_yaml)

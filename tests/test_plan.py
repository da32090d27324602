"""Stage plans: one resolution per stage; recorded params keys; computed code deps; seeds; sweeps; run identities."""

from __future__ import annotations

import ast
import copy
import json
import shlex
from pathlib import Path

import pytest

from jarvis import codedeps
from jarvis.config import ConfigError, load_raw, validate_params
from jarvis.plan import Resolver


def _resolver(raw: dict) -> Resolver:
    return Resolver(validate_params(raw), raw)


@pytest.fixture()
def raw(root) -> dict:
    return load_raw(root / "params.yaml")


def _by_id(raw: dict) -> dict:
    return {p.id: p for p in _resolver(raw).graph()}


# ------------------------------------------------------------------ identities and commands
def test_every_plan_names_its_run_by_its_stage_id(raw):
    plans = _resolver(raw).graph()
    assert {p.kind for p in plans} == {"download", "cache_features", "pretrain", "finetune", "evaluate", "report"}
    for p in plans:
        tags = dict(p.tags)
        assert tags["jarvis.stage_id"] == p.id and tags["jarvis.stage"] == p.kind
        assert shlex.split(p.cmd) == list(p.argv)  # every interpolated word quoted
        if p.seed is not None:
            assert f"-s{p.seed}" in p.id and f"/s{p.seed}/" in p.run_name and tags["jarvis.seed"] == str(p.seed)
            assert all(f"/s{p.seed}/" in o for o in (*p.outs, *p.metrics))


def test_cli_resolves_the_same_plan_as_the_graph(raw):
    r = _resolver(raw)
    graph = {p.id: p for p in r.graph()}
    for p in graph.values():
        args = p.argv[1:]
        ids: dict = {}
        if p.kind == "download":
            ids = {"component": args[1].removeprefix("--"), "name": args[2]}
        elif p.kind == "cache_features":
            opts = dict(zip(args[1::2], args[2::2], strict=True))
            ids = {"data": opts["--data"], "vision": opts["--vision"], "target": opts.get("--target")}
        elif p.kind in ("pretrain", "finetune", "evaluate"):
            opts = dict(zip(args[1::2], args[2::2], strict=True))
            ids = {"experiment": opts["--experiment"], "seed": int(opts["--seed"])}
            assert "--benchmark" not in opts  # the DAG's evaluation runs every benchmark of run.benchmarks
        again = r.resolve(p.kind, **ids)
        assert (again.id, again.params, again.outs, again.spec) == (p.id, p.params, p.outs, p.spec), p.id


# ------------------------------------------------------------------ recorded params
def test_declared_params_are_the_keys_resolution_read(raw):
    plans = _by_id(raw)
    jarvis, llava = plans["pretrain-jarvis-s0"], plans["pretrain-llava-s0"]
    assert {"jepa.tiny", "llms.tiny_llama.jepa_layer", "towers.tiny_dinov2.feature_layer",
            "training.tiny.pretrain"} <= set(jarvis.params)
    assert not any(k.startswith("jepa.") or k.endswith("jepa_layer") for k in llava.params)
    assert not any(k.startswith("training.") for k in plans["evaluate-jarvis-s0"].params)
    assert {"run.benchmarks", "evaluation.max_new_tokens", "evaluation.limit"} <= set(plans["evaluate-jarvis-s0"].params)
    assert "experiments.jarvis" not in jarvis.params and "experiments.jarvis.paper_ref" not in jarvis.params
    assert "training.tiny.finetune" in plans["finetune-jarvis-s0"].params
    assert not any(k.startswith("jepa") for k in plans["finetune-jarvis-s0"].params)  # JEPA is stage 1 only
    # the LM download does not read the stage-1 read-out layer; no stage reads scheduler resources
    assert "llms.tiny_llama.jepa_layer" not in plans["download-llm-tiny_llama"].params
    assert "llms.tiny_llama" not in plans["download-llm-tiny_llama"].params
    for p in plans.values():
        assert not any(".resources" in k for k in p.params), p.id
        assert dict(p.values) == {k: _lookup(raw, k) for k in p.params}


def test_each_key_read_is_declared_itself_not_its_parent(raw):
    """Declared keys == keys read: with every sweep selected, each key a stage's resolution reads is written in
    params.yaml and declared as it is (never widened to its parent block), so an edit of a sibling the stage does not
    read leaves its declared values unchanged. A default left out of params.yaml is declared as its nearest written
    parent (DVC refuses a missing key, and writing it later must rerun the stage)."""
    raw["run"]["sweeps"] = list(raw["sweeps"])
    plans = _by_id(raw)
    assert len({p.kind for p in plans.values()}) == 6
    for p in plans.values():
        read = set(p.read)
        assert read and all(_exists(raw, k) for k in read), (p.id, sorted(k for k in read if not _exists(raw, k)))
        assert set(p.params) == {k for k in read if not any(k.startswith(a + ".") for a in read)}, p.id
    pre = plans["pretrain-jarvis-s0"]
    assert {"towers.tiny_dinov2.feature_layer", "towers.tiny_dinov2.image_size"} <= set(pre.params)
    assert not any(k in pre.params for k in ("towers.tiny_dinov2", "towers.tiny_dinov2.config"))
    # a sibling the stage does not read (the tower's architecture: its download stage reads it)
    edited = copy.deepcopy(raw)
    edited["towers"]["tiny_dinov2"]["config"]["num_attention_heads"] = 2
    after = _by_id(edited)
    assert dict(after[pre.id].values) == dict(pre.values)
    assert dict(after["download-tower-tiny_dinov2"].values) != dict(plans["download-tower-tiny_dinov2"].values)
    # a default left out: its parent is declared, so writing the key later reruns the stage
    del edited["towers"]["tiny_dinov2"]["image_size"]
    assert "towers.tiny_dinov2" in _by_id(edited)[pre.id].params


def _exists(raw, key):
    try:
        _lookup(raw, key)
    except (KeyError, TypeError):
        return False
    return True


def _lookup(raw, key):
    node = raw
    for part in key.split("."):
        node = node[part]
    return node


def test_an_override_applies_to_its_stage_and_keeps_the_declared_keys(raw):
    before = {i: p.params for i, p in _by_id(copy.deepcopy(raw)).items()}
    raw["experiments"]["jarvis"]["overrides"] = {"finetune": {"learning_rate": 2.0e-3}}
    plans = _by_id(raw)
    assert {i: p.params for i, p in plans.items()} == before  # a value edit never needs a new dvc.yaml
    assert plans["finetune-jarvis-s0"].spec.train.learning_rate == 2.0e-3
    assert "experiments.jarvis.overrides" in plans["finetune-jarvis-s0"].params  # the same key, present or not
    assert plans["pretrain-jarvis-s0"].spec.train.learning_rate == 1.0e-3


def test_one_evaluation_per_model_holds_every_benchmark(raw):
    """Issue 13: one evaluate stage per (arm, seed), its benchmarks with their decoding lengths and files."""
    from jarvis.eval.decoding import MAX_NEW_TOKENS

    raw["evaluation"].update(max_new_tokens={"mmvp": 7}, limit=3)
    plans = _by_id(raw)
    evals = [p for p in plans.values() if p.kind == "evaluate"]
    arms, seeds = raw["run"]["experiments"], raw["run"]["seeds"]
    assert sorted(p.id for p in evals) == sorted(f"evaluate-{a}-s{s}" for a in arms for s in seeds)
    ev = plans["evaluate-jarvis-s1"]
    benches = raw["run"]["benchmarks"]
    assert [b.name for b in ev.spec.benchmarks] == benches
    assert {b.name: b.max_new_tokens for b in ev.spec.benchmarks} == {
        b: 7 if b == "mmvp" else MAX_NEW_TOKENS[b] for b in benches}
    assert {b.limit for b in ev.spec.benchmarks} == {3}
    assert {b.name: b.bench_root.as_posix() for b in ev.spec.benchmarks}["cvbench_3d"] == "data/synth/cvbench"
    files = ("answers.jsonl", "scores.json")
    assert ev.outs == (*(f"runs/jarvis/s1/eval/{b}/{f}" for b in benches for f in files),
                       *(f"runs/jarvis/s1/eval_blind/{b}/{f}" for b in benches for f in files))  # evaluation.blind
    assert ev.metrics == ("runs/jarvis/s1/eval/scores.json", "runs/jarvis/s1/eval_blind/scores.json")
    assert ev.run_name == "jarvis/s1/evaluate" and "evaluation.blind" in ev.params
    # the report reads the per-benchmark scores the evaluation writes, real and blind
    report = plans["report"].spec
    assert {str(f) for *_, f in (*report.score_files, *report.blind_files)} == {o for p in evals for o in p.outs
                                                                                 if o.endswith("/scores.json")}
    # `jarvis evaluate --benchmark B` (ad hoc): the same per-benchmark files, its own id, no summary
    one = _resolver(raw).resolve("evaluate", experiment="jarvis", seed=1, benchmarks=("pope",))
    assert one.id == "evaluate-jarvis-s1-pope" and one.metrics == () and one.spec.summary is None
    assert one.outs == ("runs/jarvis/s1/eval/pope/answers.jsonl", "runs/jarvis/s1/eval/pope/scores.json",
                        "runs/jarvis/s1/eval_blind/pope/answers.jsonl", "runs/jarvis/s1/eval_blind/pope/scores.json")
    assert one.argv[-2:] == ("--benchmark", "pope") and one.spec.benchmarks[0] == ev.spec.benchmarks[
        benches.index("pope")]


def test_blind_evaluation_off_declares_no_blind_files(raw):
    """evaluation.blind: false: neither the evaluation nor the report names an eval_blind/ file."""
    raw["evaluation"]["blind"] = False
    plans = _by_id(raw)
    ev = plans["evaluate-jarvis-s1"]
    assert ev.spec.blind_summary is None and all(b.blind is None for b in ev.spec.benchmarks)
    assert not any("eval_blind" in o for p in plans.values() for o in (*p.outs, *p.metrics, *p.inputs))
    assert plans["report"].spec.blind_files == ()


# ------------------------------------------------------------------ code deps
def test_code_deps_are_the_import_closure(root):
    r = _resolver(load_raw(root / "params.yaml"))
    plans = {p.kind: p for p in r.graph()}
    pre = set(plans["pretrain"].code)
    # the modules a hand list used to miss (issue 8), each really imported by `jarvis pretrain`
    for mod in ("seeding", "config", "stages/common", "tracking", "paths", "io", "cli", "launch", "training",
                "masking", "plan", "model/modeling"):
        assert f"src/jarvis/{mod}.py" in pre, mod
    assert "workflow/deepspeed/zero2.json" in pre and "workflow/deepspeed/zero3.json" in plans["finetune"].code
    report = set(plans["report"].code)
    assert "src/jarvis/report.py" in report  # (model code is in every closure: `import jarvis` registers it)
    assert "src/jarvis/training.py" not in report and "src/jarvis/stages/train.py" not in report
    assert "src/jarvis/eval/scorers.py" in plans["evaluate"].code
    assert "src/jarvis/stages/common.py" in plans["cache_features"].code


def test_closure_follows_function_local_imports_and_skips_type_checking(tmp_path: Path):
    pkg = tmp_path / "jarvis"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from jarvis import c\n"
                              "def f():\n    from jarvis.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import d\n")
    (pkg / "sub" / "d.py").write_text("import os\n")
    (pkg / "c.py").write_text("")
    got = codedeps.closure({"jarvis.a"}, src=tmp_path)
    assert got == {"jarvis", "jarvis.a", "jarvis.sub", "jarvis.sub.b", "jarvis.sub.d"}


def _every_node(tree):
    """The walk codedeps used before it followed statements only: every node, minus `if TYPE_CHECKING:` bodies."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if codedeps._is_type_checking(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(nodes) -> list[str]:
    return sorted(ast.dump(n) for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom)))


ODD_PLACES = """
import a
class C:
    import b
    def m(self):
        with open(x) as f, g():
            for i in y:
                while z:
                    import c
                else:
                    import d
        try:
            import e
        except ImportError:
            import f
        else:
            from . import i
        finally:
            from .. import j
        try:
            pass
        except* OSError:
            from g import h
        match v:
            case 1:
                import k
            case _:
                if w:
                    import l
                elif q:
                    import m
                else:
                    import n
async def am():
    async with a:
        async for b in c:
            import o
lam = lambda: (p if q else r)
if TYPE_CHECKING:
    import never
else:
    import p
"""


def test_statement_walk_finds_every_import_a_full_walk_finds(root):
    """codedeps walks statement lists only (imports are statements); every import of every module of the package,
    and of a module with imports in every kind of block, is the same as a walk over every node finds."""
    trees = {"odd places": ast.parse(ODD_PLACES)}
    trees |= {str(f): ast.parse(f.read_text()) for f in sorted((root / "src" / "jarvis").rglob("*.py"))}
    assert len(trees) > 40
    for name, tree in trees.items():
        assert _imports(codedeps._walk(tree)) == _imports(_every_node(tree)), name
    assert len(_imports(codedeps._walk(trees["odd places"]))) == 15  # a..p (h from g), `never` excluded


# ------------------------------------------------------------------ seeds
def test_seeds_are_an_axis_and_shared_blocks_are_not_repeated(raw):
    raw["run"]["seeds"] = [0]
    one = _by_id(raw)
    raw["run"]["seeds"] = [0, 1, 2]
    three = _by_id(raw)
    shared = {"download", "cache_features"}
    assert {i for i, p in one.items() if p.kind in shared} == {i for i, p in three.items() if p.kind in shared}
    per_seed = [p for p in one.values() if p.kind not in shared | {"report"}]
    assert len([p for p in three.values() if p.kind not in shared | {"report"}]) == 3 * len(per_seed)
    assert three["pretrain-jarvis-s2"].spec.seed == 2
    outs = [o for p in three.values() for o in (*p.outs, *p.metrics)]
    assert len(outs) == len(set(outs))
    assert len(three["report"].spec.score_files) == 3 * len(one["report"].spec.score_files)


def test_default_runs_at_least_two_seeds(raw):
    assert len(validate_params(raw).run.seeds) >= 2
    with pytest.raises(KeyError, match=r"seed 7 is not in run.seeds \[0, 1\]"):
        _resolver(raw).resolve("pretrain", experiment="jarvis", seed=7)


# ------------------------------------------------------------------ sweeps
def test_sweep_expands_to_its_declared_variants(raw):
    r = _resolver(raw)
    by_sweep: dict[str, list[str]] = {}
    for name, v in r.variants.items():
        by_sweep.setdefault(v.sweep, []).append(name)
    assert by_sweep["tiny_skip_prob"] == ["jarvis--skip_prob-0p0", "jarvis--skip_prob-0p5"]
    assert by_sweep["tiny_jepa"] == ["jarvis--loss-cos--mask_num_targets-2",
                                     "jarvis--loss-smooth_l1--mask_num_targets-4"]  # zipped, not a grid
    assert len(by_sweep["tiny_stage1"]) == 2 and len(by_sweep["paper_jepa_layer"]) == 5
    # not selected: not in the graph
    assert not any("--" in p.id for p in r.graph())
    raw["run"]["sweeps"] = ["tiny_skip_prob"]
    plans = _by_id(raw)
    variants = {p.experiment for p in plans.values() if p.experiment and "--" in p.experiment}
    assert variants == {"jarvis--skip_prob-0p0", "jarvis--skip_prob-0p5"}
    pre = plans["pretrain-jarvis--skip_prob-0p5-s1"]
    assert pre.spec.jepa.skip_prob == 0.5 and "sweeps.tiny_skip_prob" in pre.params
    assert dict(pre.tags)["jarvis.sweep"] == "tiny_skip_prob"
    assert plans["pretrain-jarvis-s1"].spec.jepa.skip_prob == 0.2  # the base is untouched
    assert "reports/sweep-tiny_skip_prob.png" in plans["report"].outs
    assert dict(plans["report"].spec.sweeps)["tiny_skip_prob"] == (
        ("jarvis--skip_prob-0p0", "jepa.skip_prob=0.0"), ("jarvis--skip_prob-0p5", "jepa.skip_prob=0.5"))


def test_paper_ablations_resolve(raw):
    raw["run"]["sweeps"] = ["paper_jepa_layer", "paper_target_encoder"]
    raw["run"]["experiments"] = ["jarvis_vicuna7b"]
    plans = _by_id(raw)
    assert plans["pretrain-jarvis_vicuna7b--layer-16-s0"].spec.model.jepa.layer == 16
    assert plans["pretrain-jarvis_vicuna7b-s0"].spec.model.jepa.layer == 8
    assert plans["pretrain-jarvis_vicuna7b--target-dinov2_g-s0"].spec.model.target.name == "dinov2_g"
    assert "download-tower-dinov2_g" in plans


@pytest.mark.parametrize(("values", "match"), [
    ({"jepa.wieght": [1.0]}, "unknown sweep key 'jepa.wieght'"),
    ({"jepa.loss": ["l2"]}, r"(?s)sweeps.bad: variant jarvis--loss-l2 \(jepa.loss=l2\) is invalid.*overrides.jepa.loss"),
    ({"jepa.skip_prob": [1.5]}, "(?s)jarvis--skip_prob-1p5.*skip_prob"),
    ({"jepa.target": ["no tower"]}, "cannot be spelled"),
])
def test_bad_sweeps_are_named(raw, values, match):
    raw["sweeps"]["bad"] = {"base": "jarvis", "values": values}
    with pytest.raises(ConfigError, match=match):
        _resolver(raw)


# ------------------------------------------------------------------ MLflow
def test_mlflow_stage_id_tags_equal_dag_ids_for_every_kind(raw, tmp_path: Path, monkeypatch):
    """Open each kind's real MLflow run (no stage work) and read the tags back from the store."""
    from mlflow import MlflowClient

    from jarvis import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("JARVIS_ROOT", str(tmp_path))
    monkeypatch.setenv("JARVIS_SCRATCH", str(tmp_path / "_work"))
    picked = {}
    for p in _resolver(raw).graph():
        picked.setdefault(p.kind, p)
    for p in picked.values():
        with tracking.plan_run(p):
            pass
    client = MlflowClient(tracking.tracking_uri(tmp_path))
    seen = {}
    for e in client.search_experiments():
        for run in client.search_runs([e.experiment_id]):
            seen[run.info.run_name] = (run.data.tags["jarvis.stage_id"], e.name)
    study = raw["run"]["study"]  # one MLflow experiment per study holds every kind's runs
    assert seen == {p.run_name: (p.id, study) for p in picked.values()}
    assert {p.mlflow_experiment for p in picked.values()} == {study}


def test_mlflow_params_are_arm_independent(raw):
    """Two arms' runs log the same keys, so MLflow's compare view diffs their settings, not their names: the two
    LLaVA arms differ in bidirectional attention only; every arm's runs carry study, arm and seed tags."""
    from jarvis.tracking import flatten_params

    r = _resolver(raw)
    for kind, extra in (("pretrain", {}), ("finetune", {}), ("evaluate", {"benchmark": "pope"})):
        a, b = (r.resolve(kind, experiment=e, seed=0, **extra) for e in ("llava", "llava_bidir"))
        fa, fb = flatten_params(a.logged), flatten_params(b.logged)
        assert not any("llava" in k for k in (*fa, *fb)), kind  # no arm name inside a key
        diff = {k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)}
        assert "cfg.arm.bidir_visual_attn" in diff and diff <= {"cfg.arm.bidir_visual_attn",
                                                               "cfg.experiment.bidir_visual_attn"}, (kind, diff)
        tags = dict(b.tags)
        assert (tags["jarvis.study"], tags["jarvis.arm"], tags["jarvis.seed"]) == (raw["run"]["study"], "llava_bidir",
                                                                                   "0")
    jarvis = flatten_params(r.resolve("pretrain", experiment="jarvis", seed=0).logged)
    assert jarvis["cfg.arm.jepa.layer"] == str(raw["llms"]["tiny_llama"]["jepa_layer"])  # resolved, not null
    # A LLaVA arm logs the same cfg.arm.* keys ("none" for the JEPA ones): nothing plots as "unknown" in the compare
    # view's parallel coordinates, and the diff pairs jepa.head "none" with "mlp" on one row.
    llava = flatten_params(r.resolve("pretrain", experiment="llava", seed=0).logged)
    arm_keys = {k for k in jarvis if k.startswith("cfg.arm.")}
    assert arm_keys == {k for k in llava if k.startswith("cfg.arm.")}
    assert llava["cfg.arm.jepa.head"] == llava["cfg.arm.jepa.mask.num_targets"] == "none" != jarvis["cfg.arm.jepa.head"]


# ------------------------------------------------------------------ seeds reach the weights
def _tiny_raw(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    raw["datasets"]["synth"].update(n_pretrain=16, n_instruct=8, n_bench_per_task=2, n_general_per_benchmark=2)
    raw["llms"]["tiny_llama"]["text_pretrain"]["steps"] = 0  # stage 0 off: 1-20 steps are refused (no warm-up)
    raw["training"]["tiny"]["pretrain"]["max_steps"] = 2
    # plain Trainer: DeepSpeed's process group cannot be set up twice in one test process (the seed plumbing is the
    # same: TrainSettings.seed -> TrainingArguments.seed/data_seed, masks, skip coin; build_model's init)
    raw["training"]["tiny"]["pretrain"]["zero_stage"] = None
    raw["run"]["experiments"] = ["jarvis"]
    return raw


@pytest.mark.slow
def test_same_seed_twice_is_bitwise_identical_and_seeds_differ(raw, tmp_path: Path, monkeypatch):
    """Through the real stages: stage 1 of JARVIS (projector/mask-token/head init, data order, masks, skip coin)."""
    from jarvis.stages import cache_features, download, train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("JARVIS_ROOT", str(tmp_path))
    r = _resolver(_tiny_raw(raw))
    plans = r.graph()
    for p in plans:
        if p.kind == "download":
            download.run(p)
        elif p.kind == "cache_features":
            cache_features.run(p)

    def weights_and_metrics(seed: int) -> tuple[bytes, dict]:
        plan = r.train("pretrain", "jarvis", seed)
        train.run(plan)
        metrics = json.loads(Path(plan.spec.metrics).read_text())
        timing = ("second", "time", "wall")  # clocks, not results
        return (plan.spec.out_dir / "model.safetensors").read_bytes(), {
            k: v for k, v in metrics.items() if not any(w in k for w in timing)}

    w0, m0 = weights_and_metrics(0)
    w0b, m0b = weights_and_metrics(0)
    w1, m1 = weights_and_metrics(1)
    assert w0 == w0b
    assert m0 == m0b
    assert w0 != w1 and m0["loss"] != m1["loss"]


def test_report_stage_over_seeds_and_a_sweep(raw, tmp_path: Path, monkeypatch):
    """The report plan's inputs (fake scores, two seeds, one sweep) -> tables with intervals and a sweep section."""
    from jarvis.stages import report

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("JARVIS_ROOT", str(tmp_path))
    raw["run"].update(benchmarks=["pope", "mmvp"], sweeps=["tiny_skip_prob"])
    plan = _resolver(raw).report()
    for k, (_arm, _seed, bench, path) in enumerate((*plan.spec.score_files, *plan.spec.blind_files)):
        path.parent.mkdir(parents=True, exist_ok=True)
        correct = 10 + (k % 5)
        path.write_text(json.dumps({"benchmark": bench, "overall": 100 * correct / 24, "metric": "accuracy",
                                    "n": 24, "correct": correct, "n_questions": 24}))
    for _arm, seed, path in plan.spec.histories:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"step": 1, "loss_ntp": 1.0 + seed}) + "\n")
    report.run(plan)
    for out in (*plan.outs, *plan.metrics):
        assert Path(out).is_file(), out
    md = Path("reports/table.md").read_text()
    assert "### Sweep tiny_skip_prob" in md and "jepa.skip_prob=0.5" in md and "n=24" in md
    summary = json.loads(Path("reports/summary.json").read_text())
    assert summary["rows"]["jarvis"]["pope"]["n"] == 2  # two seeds per arm
    assert summary["deltas"]["jarvis − llava"]["pope"]["paired"]
    # evaluation.blind: each arm is followed by its blank-image row, pooled over the same seeds, in no delta
    assert list(summary["rows"])[:2] == ["llava", "llava (blind)"] and summary["rows"]["jarvis (blind)"]["pope"]["n"] == 2
    assert summary["blind_rows"] == [r for r in summary["rows"] if r.endswith(" (blind)")]
    assert not any("blind" in d for d in summary["deltas"])


def test_dataloader_workers_come_from_the_resources_and_declare_no_param(raw):
    """resources.<stage>.dataloader_workers reaches the stage's settings (the paper recipe: 4 per rank) and is no DVC
    param: no number depends on it (JepaMaskCollator keys the masks by the samples)."""
    raw = copy.deepcopy(raw)
    raw["run"]["experiments"] = ["llava_vicuna7b", "jarvis_vicuna7b"]
    paper = _resolver(raw).resolve("pretrain", experiment="jarvis_vicuna7b", seed=0)
    assert paper.spec.train.num_workers == 4
    assert _resolver(raw).resolve("finetune", experiment="llava_vicuna7b", seed=0).spec.train.num_workers == 4
    tiny = _by_id(load_raw(Path(__file__).resolve().parents[1] / "params.yaml"))["pretrain-jarvis-s0"]
    assert tiny.spec.train.num_workers == 0
    raw["training"]["paper"]["resources"]["pretrain"]["dataloader_workers"] = 1
    again = _resolver(raw).resolve("pretrain", experiment="jarvis_vicuna7b", seed=0)
    assert again.spec.train.num_workers == 1 and again.params == paper.params and again.values == paper.values
    raw["training"]["paper"]["resources"]["pretrain"]["dataloader_workers"] = -1
    with pytest.raises(ConfigError, match="dataloader_workers"):
        _resolver(raw)

"""params.yaml validates; unknown keys and bad references are rejected naming the key; batch split is derived."""

from __future__ import annotations

import copy

import pytest
import yaml

from jarvis.config import ConfigError, load_params, load_raw, validate_params


@pytest.fixture()
def raw(root):
    return load_raw(root / "params.yaml")


def test_default_params_validate(root):
    p = load_params(root / "params.yaml")
    assert p.run.experiments == ["llava", "llava_bidir", "jarvis"]
    for exp in p.experiments:
        for stage in ("pretrain", "finetune"):
            s = p.stage_training(exp, stage)
            assert s.per_device_batch * s.grad_accum * s.world_size == s.global_batch


def test_paper_configuration_is_in_the_same_file(root):
    p = load_params(root / "params.yaml")
    pre = p.stage_training("jarvis_vicuna7b", "pretrain")
    fin = p.stage_training("jarvis_vicuna7b", "finetune")
    assert (pre.learning_rate, pre.global_batch, pre.zero_stage) == (1e-3, 256, 2)
    assert (fin.learning_rate, fin.global_batch, fin.zero_stage) == (2e-5, 128, 3)
    assert pre.grad_accum == 2 and fin.grad_accum == 2  # 16 x 2 x 8 GPUs, 4 x 2 x 16 GPUs (paper-spec §9)
    j = p.jepa_recipe("jarvis_vicuna7b")
    assert (j.skip_prob, j.weight, j.mask.num_targets, j.loss) == (0.2, 1.0, 4, "cos")
    assert p.llms["vicuna7b"].jepa_layer == 8 and p.llms["qwen2_7b"].jepa_layer == 7


def test_unknown_key_is_named(raw):
    bad = copy.deepcopy(raw)
    bad["jepa"]["tiny"]["wieght"] = 1.0
    with pytest.raises(ConfigError, match=r"jepa\.tiny\.wieght: unknown key 'wieght'"):
        validate_params(bad)


def test_top_level_typo_is_named(raw):
    bad = copy.deepcopy(raw)
    bad["sead"] = 1
    with pytest.raises(ConfigError, match="sead"):
        validate_params(bad)


def test_bad_reference_is_named(raw):
    bad = copy.deepcopy(raw)
    bad["experiments"]["jarvis"]["vision"] = "clip_typo"
    with pytest.raises(ConfigError, match=r"experiments\.jarvis\.vision: unknown name 'clip_typo'"):
        validate_params(bad)


def test_impossible_batch_split(raw):
    bad = copy.deepcopy(raw)
    bad["training"]["tiny"]["pretrain"]["global_batch"] = 12  # 12 % (8 x 1) != 0
    with pytest.raises(ConfigError, match="not divisible"):
        validate_params(bad)


def test_jepa_requires_bidirectional_attention(raw):
    bad = copy.deepcopy(raw)
    bad["experiments"]["jarvis"]["bidir_visual_attn"] = False
    with pytest.raises(ConfigError, match="bidir_visual_attn"):
        validate_params(bad)


def test_params_file_is_plain_yaml(root):
    assert isinstance(yaml.safe_load((root / "params.yaml").read_text()), dict)


def test_experiment_override_is_validated_and_applied(raw):
    good = copy.deepcopy(raw)
    good["experiments"]["jarvis"]["overrides"] = {"pretrain": {"learning_rate": 2.0e-3}}
    p = validate_params(good)
    assert p.stage_training("jarvis", "pretrain").learning_rate == 2.0e-3
    assert p.stage_training("llava", "pretrain").learning_rate == 1.0e-3
    bad = copy.deepcopy(raw)
    bad["experiments"]["jarvis"]["overrides"] = {"pretrain": {"lerning_rate": 2.0e-3}}
    with pytest.raises(ConfigError, match="overrides.pretrain.lerning_rate"):
        validate_params(bad)


def test_jepa_override_is_validated_and_applied(raw):
    good = copy.deepcopy(raw)
    good["experiments"]["jarvis"]["overrides"] = {"jepa": {"skip_prob": 0.5, "mask": {"num_targets": 2}}}
    p = validate_params(good)
    j = p.jepa_recipe("jarvis")
    assert (j.skip_prob, j.mask.num_targets, j.mask.min_keep) == (0.5, 2, 4)  # nested keys merge
    bad = copy.deepcopy(raw)
    bad["experiments"]["jarvis"]["overrides"] = {"jepa": {"loss": "l2"}}
    with pytest.raises(ConfigError, match="overrides.jepa.loss"):
        validate_params(bad)
    bad["experiments"]["jarvis"]["overrides"] = {"jepa": {"target": "nope"}}
    with pytest.raises(ConfigError, match="overrides.jepa.target: unknown tower 'nope'"):
        validate_params(bad)


def test_seeds_and_sweep_selection_are_validated(raw):
    bad = copy.deepcopy(raw)
    bad["run"]["seeds"] = [0, 0]
    with pytest.raises(ConfigError, match="run.seeds: repeated"):
        validate_params(bad)
    bad = copy.deepcopy(raw)
    bad["run"]["sweeps"] = ["nope"]
    with pytest.raises(ConfigError, match="run.sweeps: unknown sweep 'nope'"):
        validate_params(bad)
    bad = copy.deepcopy(raw)
    bad["sweeps"]["tiny_skip_prob"]["base"] = "nope"
    with pytest.raises(ConfigError, match="sweeps.tiny_skip_prob.base: unknown experiment 'nope'"):
        validate_params(bad)

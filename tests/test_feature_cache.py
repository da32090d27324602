"""Feature cache integrity (issue 9): every shard is verified on read, partial work is reused only when it was made by
the same inputs and settings."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from jarvis.data.dataset import (
    FeatureCache,
    FeatureCacheError,
    file_sha256,
    write_feature_index,
    write_feature_shard,
)
from jarvis.plan import Resolver, cache_identity
from test_download import mlflow_store, project, tiny_params  # noqa: F401  (fixtures)


def _plan(params: Any, data: str, vision: str, target: str | None) -> Any:
    return Resolver(params, params.model_dump(mode="json")).cache_features(data, vision, target)


def _expect(params: Any, data: str, vision: str, target: str | None) -> dict[str, str]:
    return cache_identity(_plan(params, data, vision, target).spec)


def _cache(root: Path, dtype: torch.dtype = torch.float32, rows: int = 6) -> tuple[Path, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(rows, 16, 8, generator=g).to(dtype)
    tgt = torch.randn(rows, 16, 4, generator=g).to(dtype)
    half = rows // 2
    shards = [write_feature_shard(root, 0, 0, ctx[:half], tgt[:half]),
              write_feature_shard(root, 1, half, ctx[half:], tgt[half:])]
    write_feature_index(root, [f"s{i}" for i in range(rows)], shards, {"dtype": str(dtype).removeprefix("torch.")})
    return root, ctx


def _index(root: Path) -> dict[str, Any]:
    return json.loads((root / "index.json").read_text())


def _rewrite_index(root: Path, index: dict[str, Any]) -> None:
    (root / "index.json").write_text(json.dumps(index))


def test_index_records_hash_dtype_and_shapes(tmp_path: Path) -> None:
    root, ctx = _cache(tmp_path / "fc")
    entry = _index(root)["shards"][1]
    assert entry["sha256"] == file_sha256(root / entry["file"])
    assert (entry["dtype"], entry["context_shape"], entry["target_shape"]) == ("float32", [3, 16, 8], [3, 16, 4])
    assert torch.equal(FeatureCache(root).get("s4")[0], ctx[4])


def test_random_bytes_in_a_shard_fail_before_training(tmp_path: Path) -> None:
    # Before: NaN loss from step 2 and exit 0.
    root, _ = _cache(tmp_path / "fc")
    shard = root / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = os.urandom(64)
    shard.write_bytes(bytes(data))
    with pytest.raises(FeatureCacheError, match=r"shard-00001.safetensors is corrupt: sha256"):
        FeatureCache(root)


def test_non_finite_features_are_refused_on_write_and_on_read(tmp_path: Path) -> None:
    bad = torch.zeros(2, 4, 3)
    bad[1, 2, 0] = float("inf")
    with pytest.raises(FeatureCacheError, match="non-finite context"):
        write_feature_shard(tmp_path / "w", 0, 0, bad)
    # A shard whose recorded hash matches but that holds NaN (written by something else): caught on read.
    root, _ = _cache(tmp_path / "fc")
    index = _index(root)
    entry = index["shards"][0]
    tensors = {"context": torch.full((3, 16, 8), float("nan")), "target": torch.zeros(3, 16, 4)}
    save_file(tensors, str(root / entry["file"]))
    entry["sha256"] = file_sha256(root / entry["file"])
    _rewrite_index(root, index)
    with pytest.raises(FeatureCacheError, match="non-finite context"):
        FeatureCache(root)


def test_dtype_shape_and_producer_are_checked(tmp_path: Path) -> None:
    root, _ = _cache(tmp_path / "fc")
    index = _index(root)
    index["dtype"] = "float16"  # the case: index says float16, the shard holds float32
    _rewrite_index(root, index)
    with pytest.raises(FeatureCacheError, match="context is float32, the index says float16"):
        FeatureCache(root)
    root, _ = _cache(tmp_path / "fc2")
    index = _index(root)
    index["shards"][0]["context_shape"] = [3, 16, 9]
    _rewrite_index(root, index)
    with pytest.raises(FeatureCacheError, match="shards disagree on per-row shapes"):
        FeatureCache(root)
    index["shards"][1]["context_shape"] = [3, 16, 9]
    _rewrite_index(root, index)
    with pytest.raises(FeatureCacheError, match=r"shape \[3, 16, 8\], the index says \[3, 16, 9\]"):
        FeatureCache(root)
    root, _ = _cache(tmp_path / "fc3")
    with pytest.raises(FeatureCacheError, match="made with producer=None, expected 'abc'"):
        FeatureCache(root, expect={"producer": "abc"})
    del index["shards"][0]["sha256"]
    _rewrite_index(root, index)
    with pytest.raises(FeatureCacheError, match="no content hash"):
        FeatureCache(root)


# ---- the stage -------------------------------------------------------------------------------------------------------


def test_stale_partial_cache_is_discarded_when_settings_change(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    # Before: after a midway failure and a change of feature_layer + feature_cache_dtype the rerun reported
    # reused_shards 1, and the index said float16 while that shard held float32 features of the old layer.
    from jarvis import paths
    from jarvis.stages import cache_features, download

    params = tiny_params()
    for kind, name in (("data", "synth"), ("tower", "tiny_clip"), ("tower", "tiny_dinov2")):
        download.run(Resolver(params, params.model_dump(mode="json")).download(kind, name))
    monkeypatch.setattr(cache_features, "SHARD_SIZE", 4)  # 8 images -> 2 shards
    real_encode = cache_features._encode
    calls = {"n": 0}

    def encode_then_die(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("node lost during shard 2")
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(cache_features, "_encode", encode_then_die)
    with pytest.raises(RuntimeError, match="node lost"):
        cache_features.run(_plan(params, "synth", "tiny_clip", "tiny_dinov2"))
    monkeypatch.setattr(cache_features, "_encode", real_encode)
    partial = paths.features_dir(paths.cache_key("synth", "tiny_clip", "tiny_dinov2")).with_name(
        "synth-tiny_clip-tiny_dinov2.partial")
    assert (partial / "shard-00000.safetensors.done").is_file()

    def edit(raw: dict[str, Any]) -> None:
        raw["towers"]["tiny_clip"]["feature_layer"] = -1
        raw["datasets"]["synth"]["feature_cache_dtype"] = "float16"

    with caplog.at_level(logging.WARNING, logger="jarvis.io"):
        metrics = cache_features.run(_plan(tiny_params(edit=edit), "synth", "tiny_clip", "tiny_dinov2"))
    assert metrics["reused_shards"] == 0 and metrics["n_shards"] == 2
    assert "discarding partial feature cache" in caplog.text
    out = paths.features_dir("synth-tiny_clip-tiny_dinov2")
    cache = FeatureCache(out)  # verifies every shard: all float16, as the index says
    assert cache.index["dtype"] == "float16" and {s["dtype"] for s in cache.index["shards"]} == {"float16"}
    assert cache.index["config"]["params"]["towers.tiny_clip.feature_layer"] == -1
    assert not partial.exists()
    # What the training stage checks on read: the cache was made by the current params.
    FeatureCache(out, expect=_expect(tiny_params(edit=edit), "synth", "tiny_clip", "tiny_dinov2"))
    with pytest.raises(FeatureCacheError, match="made with dtype='float16', expected 'float32'"):
        FeatureCache(out, expect=_expect(params, "synth", "tiny_clip", "tiny_dinov2"))

    def dtype_only(raw: dict[str, Any]) -> None:  # same dtype, the old feature_layer
        raw["datasets"]["synth"]["feature_cache_dtype"] = "float16"

    old_layer = _expect(tiny_params(edit=dtype_only), "synth", "tiny_clip", "tiny_dinov2")
    with pytest.raises(FeatureCacheError, match="made with params_digest="):
        FeatureCache(out, expect=old_layer)


def test_partial_cache_of_the_same_settings_is_reused(project: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from jarvis import paths
    from jarvis.stages import cache_features, download

    params = tiny_params()
    for kind, name in (("data", "synth"), ("tower", "tiny_clip")):
        download.run(Resolver(params, params.model_dump(mode="json")).download(kind, name))
    monkeypatch.setattr(cache_features, "SHARD_SIZE", 4)
    real_encode = cache_features._encode
    calls = {"n": 0}

    def encode_then_die(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("node lost")
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(cache_features, "_encode", encode_then_die)
    with pytest.raises(RuntimeError):
        cache_features.run(_plan(params, "synth", "tiny_clip", None))
    monkeypatch.setattr(cache_features, "_encode", real_encode)
    metrics = cache_features.run(_plan(params, "synth", "tiny_clip", None))
    assert metrics["reused_shards"] == 1 and metrics["n_shards"] == 2
    FeatureCache(paths.features_dir("synth-tiny_clip"))


@pytest.mark.parametrize("edit, named", [
    (lambda ix: [], "expected a JSON object"),
    (lambda ix: {k: v for k, v in ix.items() if k != "shards"}, "'shards' must be a list"),
    (lambda ix: {**ix, "ids": "s0"}, "'ids' must be a list"),
    (lambda ix: {**ix, "shards": []}, "no shards"),
    (lambda ix: {**ix, "shards": [{**ix["shards"][0], "file": "../../escape.safetensors"}, ix["shards"][1]]},
     r"shards\[0\]\.file .* not a shard file name"),
    (lambda ix: {**ix, "shards": [{**ix["shards"][0], "count": "3"}, ix["shards"][1]]},
     r"shards\[0\]\.count must be a non-negative integer"),
])
def test_garbage_index_fails_naming_the_field(tmp_path: Path, edit: Any, named: str) -> None:
    # Before: a truncated/hand-edited index.json that is still JSON failed with a bare KeyError/TypeError, and a
    # shard `file` with `..` was opened outside the cache directory.
    root, _ = _cache(tmp_path / "fc")
    _rewrite_index(root, edit(_index(root)))
    with pytest.raises(FeatureCacheError, match=named):
        FeatureCache(root)

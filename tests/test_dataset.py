"""Loading/validation with counted drops, path safety, feature-cache round trip, LlavaDataset, image transforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from jarvis.data.conversation import IGNORE_INDEX
from jarvis.data.dataset import (
    FeatureCache,
    LlavaDataset,
    load_and_validate,
    safe_image_path,
    write_feature_index,
    write_feature_shard,
)
from jarvis.data.images import ContextTargetTransform, ImageTransform
from jarvis.data.tokenizer import build_tokenizer

CORPUS = ["a red cube", "Describe the image.", "What is it?", "Yes", "No"] * 4


def conv(q: str = "<image>\nDescribe the image.", a: str = "a red cube") -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


@pytest.fixture()
def root(tmp_path):
    return make_image_root(tmp_path)


def make_image_root(tmp_path):
    """Three good PNGs under img/00000/, a broken one, and a copy outside the image root."""
    img = tmp_path / "img"
    (img / "00000").mkdir(parents=True)
    for k in range(3):
        Image.new("RGB", (8, 6), (10 * k, 20, 30)).save(img / "00000" / f"{k}.png")
    (img / "00000" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (tmp_path / "outside.png").write_bytes((img / "00000" / "0.png").read_bytes())
    return tmp_path


def write_jsonl(path, records, bad_lines=0):
    lines = [json.dumps(r) for r in records] + ["{not json"] * bad_lines
    path.write_text("\n".join(lines) + "\n")


GOOD = [
    {"id": "a0", "image": "00000/0.png", "conversations": conv()},
    {"id": 17, "image": "00000/1.png", "conversations": conv()},  # integer id (benchmarks-spec §5.2)
    {"id": "t0", "conversations": conv("What is it?", "No"), "model": ""},  # text-only, unknown key ignored
]
BAD = {
    "missing_image": {"id": "m", "image": "00000/nope.png", "conversations": conv()},
    "corrupt_image": {"id": "c", "image": "00000/broken.png", "conversations": conv()},
    "unsafe_image_path": {"id": "u", "image": "../outside.png", "conversations": conv()},
    "malformed_conversation": {"id": "e", "image": "00000/2.png", "conversations": []},
    "image_token_mismatch": {"id": "n", "image": "00000/2.png", "conversations": conv("Describe the image.")},
    "malformed_record": {"image": "00000/2.png", "conversations": conv()},
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_drop_reason_is_counted(root, reason: str) -> None:
    write_jsonl(root / "ann.jsonl", [*GOOD, BAD[reason]])
    kept, report = load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.5)
    assert [k["id"] for k in kept] == ["a0", 17, "t0"]
    assert report["counts"] == {reason: 1} and report["dropped"] == 1 and report["total"] == 4
    json.dumps(report)  # the manifest is JSON-able


def test_bad_json_line_counted_and_threshold_raises(root) -> None:
    records = [*GOOD, *BAD.values()]
    write_jsonl(root / "ann.jsonl", records, bad_lines=1)
    kept, report = load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.8)
    assert report["total"] == 10 and report["kept"] == 3 and report["counts"]["bad_json"] == 1
    assert sum(report["counts"].values()) == 7
    with pytest.raises(ValueError, match=r"dropped 7/10.*missing_image.*'m'"):
        load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.5)


def test_json_array_accepted(root) -> None:
    (root / "ann.json").write_text(json.dumps(GOOD, indent=2))
    kept, report = load_and_validate(root / "ann.json", root / "img", max_dropped_fraction=0.0)
    assert len(kept) == 3 and report["dropped"] == 0


@pytest.mark.parametrize("rel", ["../outside.png", "/etc/passwd", "00000/../../outside.png", ""])
def test_path_escaping_raises(root, rel: str) -> None:
    with pytest.raises(ValueError):
        safe_image_path(root / "img", rel)


def test_symlink_escaping_raises(root) -> None:
    (root / "img" / "link.png").symlink_to(root / "outside.png")
    with pytest.raises(ValueError, match="escapes"):
        safe_image_path(root / "img", "link.png")


# Failures found by trying the validator as a hostile user would (issue 9). Each record passed validation before and
# failed later (or trained on nothing); each is now dropped up front, counted under its reason and named.
HOSTILE = {
    "image_token_misplaced": [
        # `<image>` in an answer: passed (one placeholder, one image), then crashed LlavaDataset at encoding
        {"id": "ia", "image": "00000/2.png",
         "conversations": conv("Describe the image.", "<image> a red cube")},
        # `<image>` in a later human turn
        {"id": "il", "image": "00000/2.png",
         "conversations": [*conv("Describe the image.", "a"), *conv("<image> and now?", "b")]},
    ],
    "empty_turn": [{"id": "ec", "image": "00000/2.png", "conversations": conv(a="  ")}],  # empty caption
    "malformed_conversation": [
        {"id": "nq", "image": "00000/2.png", "conversations": [*conv(), {"from": "human", "value": "And?"}]},
        {"id": "nv", "image": "00000/2.png", "conversations": [conv()[0], {"from": "gpt", "value": None}]},
        {"id": "nd", "image": "00000/2.png", "conversations": {"from": "human", "value": "<image>"}},
    ],
    "malformed_record": [
        {"id": True, "conversations": conv("What is it?", "No")},  # a bool is not an id
        {"id": " ", "conversations": conv("What is it?", "No")},
        {"id": "li", "image": ["00000/2.png", "00000/1.png"], "conversations": conv()},  # multi-image
        ["not", "a", "record"],
    ],
}  # fmt: skip


@pytest.mark.parametrize("reason", sorted(HOSTILE))
def test_hostile_records_are_dropped_and_named_at_validation(root, reason: str) -> None:
    bad = HOSTILE[reason]
    write_jsonl(root / "ann.jsonl", [*GOOD, *bad])
    kept, report = load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.9)
    assert [k["id"] for k in kept] == ["a0", 17, "t0"]
    assert report["counts"] == {reason: len(bad)}
    named = [str(r["id"]) if isinstance(r, dict) else f"index:{3 + i}" for i, r in enumerate(bad)]
    assert report["examples"][reason] == named


def test_image_in_an_answer_is_named_with_its_turn() -> None:
    from jarvis.data.conversation import ConversationError, to_messages

    with pytest.raises(ConversationError, match=r"sample 'ia': turn 1 \(gpt\) holds '<image>'") as e:
        to_messages(HOSTILE["image_token_misplaced"][0]["conversations"], sample_id="ia")
    assert e.value.reason == "image_token_misplaced"


def test_duplicate_ids_are_named_at_validation(root, tok) -> None:
    # Before: both copies were kept; the feature cache then failed with "ids are not unique", naming none.
    dupes = [{"id": "a0", "image": "00000/1.png", "conversations": conv()},
             {"id": "17", "conversations": conv("What is it?", "Yes")}]  # "17" collides with 17 as a cache key
    write_jsonl(root / "ann.jsonl", [*GOOD, *dupes])
    kept, report = load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.5)
    assert [k["id"] for k in kept] == ["a0", 17, "t0"] and kept[0]["image"] == "00000/0.png"  # first one kept
    assert report["counts"] == {"duplicate_id": 2} and report["examples"]["duplicate_id"] == ["a0", "17"]
    with pytest.raises(ValueError, match=r"duplicated sample ids, e.g. \['a0'\]"):
        LlavaDataset([*GOOD, dupes[0]], tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"))


def _bad_images(img) -> dict[str, str]:
    """Files that are not usable images, by the reason they must be dropped with."""
    Image.new("RGB", (1, 500), (1, 2, 3)).save(img / "strip.png")  # 500:1
    Image.new("1", (9000, 9000)).save(img / "huge.png")  # 81 M pixels, a 10 KB file
    (img / "text.png").write_text("hello, I am not an image\n")
    (img / "empty.png").write_bytes(b"")
    return {"strip.png": "extreme_aspect_ratio", "huge.png": "image_too_large", "text.png": "corrupt_image",
            "empty.png": "corrupt_image"}  # fmt: skip


def test_bad_images_are_dropped_with_their_reason(root) -> None:
    bad = _bad_images(root / "img")
    recs = [{"id": f"b{i}", "image": name, "conversations": conv()} for i, name in enumerate(bad)]
    write_jsonl(root / "ann.jsonl", [*GOOD, *recs])
    kept, report = load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.9)
    assert [k["id"] for k in kept] == ["a0", 17, "t0"]
    assert report["counts"] == {"extreme_aspect_ratio": 1, "image_too_large": 1, "corrupt_image": 2}
    assert report["examples"]["image_too_large"] == ["b1"]


def test_missing_images_fail_over_the_threshold_and_pass_under_it(root) -> None:
    recs = [*GOOD, *({"id": f"m{i}", "image": f"00000/gone{i}.png", "conversations": conv()} for i in range(2))]
    write_jsonl(root / "ann.jsonl", recs)
    _, report = load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.4)  # 2/5 = 0.4
    assert report["counts"] == {"missing_image": 2} and report["examples"]["missing_image"] == ["m0", "m1"]
    with pytest.raises(ValueError, match=r"dropped 2/5 = 40.0000% > max_dropped_fraction 39.0000%.*'m0', 'm1'"):
        load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.39)


def test_sixteen_bit_and_transparent_images_reach_the_model_converted(root, tok) -> None:
    # Before: the 16-bit image became all white (1.0 after the crop) and the transparent pixels black.
    img = root / "img"
    Image.fromarray(np.full((8, 8), 257 * 51, np.uint16)).save(img / "g16.png")  # I;16, 51/255 = 0.2
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(img / "clear.png")  # fully transparent
    recs = [{"id": "g", "image": "g16.png", "conversations": conv()},
            {"id": "c", "image": "clear.png", "conversations": conv()}]  # fmt: skip
    kept, report = load_and_validate_list(root, recs)
    assert report["dropped"] == 0
    ds = LlavaDataset(kept, tok, img, num_image_tokens=4, transform=ImageTransform(8, "crop", (0, 0, 0), (1, 1, 1)))
    assert torch.allclose(ds[0]["pixel_values"], torch.full((3, 8, 8), 51 / 255))
    assert torch.allclose(ds[1]["pixel_values"], torch.ones(3, 8, 8))  # white background


def load_and_validate_list(root, recs):
    write_jsonl(root / "ann.jsonl", recs)
    return load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.0)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(CORPUS, 200, "vicuna_v1", "wordlevel")


def test_dataset_expands_image_and_loads_pixels(root, tok) -> None:
    ds = LlavaDataset(GOOD, tok, root / "img", num_image_tokens=4,
                      transform=ContextTargetTransform(ImageTransform(8, "pad"), target_size=4))  # fmt: skip
    img_id = tok.convert_tokens_to_ids("<image>")
    s = ds[0]
    assert int((s["input_ids"] == img_id).sum()) == 4
    assert torch.all(s["labels"][s["input_ids"] == img_id] == IGNORE_INDEX)
    assert s["pixel_values"].shape == (3, 8, 8) and s["pixel_values_target"].shape == (3, 4, 4)
    assert ds[1]["id"] == "17"
    assert "pixel_values" not in ds[2] and int((ds[2]["input_ids"] == img_id).sum()) == 0
    assert ds.lengths[0] == len(s["input_ids"]) and ds.report["dropped"] == 0


def test_each_sample_is_tokenised_once_and_items_equal_a_fresh_encoding(root, tok, monkeypatch) -> None:
    import jarvis.data.dataset as dataset_mod
    from jarvis.data.conversation import encode_conversation, expand_image_token

    calls = []
    monkeypatch.setattr(dataset_mod, "encode_conversation", lambda *a, **k: calls.append(1) or encode_conversation(
        *a, **k))
    ds = LlavaDataset(GOOD, tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"))
    assert len(calls) == len(GOOD)  # at construction: lengths, drops and truncation need the tokens
    img_id = tok.convert_tokens_to_ids("<image>")
    for i, s in enumerate(ds.samples):
        ids, labels = encode_conversation(tok, s["conversations"], "<image>", None, s["id"])  # the naive path
        ids, labels = expand_image_token(ids, labels, img_id, 4)
        item = ds[i]
        assert item["input_ids"].tolist() == ids and item["labels"].tolist() == labels
    assert len(calls) == len(GOOD)  # ...and never again: __getitem__ expands the kept encoding
    st = ds.stats
    assert st["tokens/max"] == max(ds.lengths) and st["tokens/mean"] == sum(ds.lengths) / len(ds.lengths)


def test_max_length_drops_when_image_span_would_be_cut(root, tok) -> None:
    full = LlavaDataset(GOOD, tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"))
    n_before_img = int(torch.nonzero(full[0]["input_ids"] == tok.convert_tokens_to_ids("<image>"))[0, 0])
    limit = n_before_img + 2  # cuts inside the image span; the text-only sample loses its whole answer
    assert len(full[2]["input_ids"]) > limit
    # Every sample dropped: even under max_dropped_fraction 1.0 an empty dataset is an error (before: len 0, and
    # the stage went on to train on nothing), naming the counts.
    with pytest.raises(ValueError, match=r"no sample left to train on \(3 given; drops "
                                         r"\{'image_span_truncated': 2, 'no_supervised_tokens': 1\}"):
        LlavaDataset(GOOD, tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"),
                     max_length=limit, max_dropped_fraction=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="image_span_truncated"):
        LlavaDataset(
            GOOD, tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"), max_length=limit
        )
    # cutting only the final EOS keeps every sample, truncated on the right
    limit = len(full[0]["input_ids"]) - 1
    ds = LlavaDataset(
        GOOD, tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"), max_length=limit
    )
    assert len(ds) == 3 and torch.equal(ds[0]["input_ids"], full[0]["input_ids"][:limit])
    assert torch.equal(ds[0]["labels"], full[0]["labels"][:limit])


def test_truncation_is_counted_per_sample_and_thresholded(root, tok) -> None:
    # A caption longer than max_length: before, it silently lost most of its supervised tokens, uncounted.
    long = {"id": "long", "image": "00000/2.png", "conversations": conv(a=" ".join(["a red cube"] * 10))}
    samples = [*GOOD, long]
    full = LlavaDataset(samples, tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"))
    sup = [int((full[i]["labels"] != IGNORE_INDEX).sum()) for i in range(4)]
    assert full.truncation["truncated_samples"] == 0 and full.truncation["supervised_tokens"] == sum(sup)
    limit = len(full[0]["input_ids"])  # the short samples fit exactly; "long" is cut
    kept_long = int((full[3]["labels"][:limit] != IGNORE_INDEX).sum())
    lost = sup[3] - kept_long
    assert sup[3] == 31 and lost > sup[3] // 2  # 30 caption words + EOS; most of them are cut
    ds = LlavaDataset(samples, tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"),
                      max_length=limit, max_truncated_fraction=0.7)  # fmt: skip
    t = ds.truncation
    assert (t["truncated_samples"], t["samples_losing_supervision"], t["supervised_tokens_lost"]) == (1, 1, lost)
    assert t["examples"] == {"long": lost} and t["truncated_fraction"] == lost / sum(sup)
    assert ds.stats["truncation/supervised_tokens_lost"] == lost and ds.stats["encode/dropped"] == 0
    assert len(ds) == 4 and len(ds[3]["input_ids"]) == limit
    with pytest.raises(ValueError, match=r"truncates 1 samples.*max_truncated_fraction.*'long': " + str(lost)):
        LlavaDataset(samples, tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"),
                     max_length=limit, max_truncated_fraction=0.5)  # fmt: skip


def test_stats_carry_validation_drops_for_the_stage_metrics(root, tok) -> None:
    write_jsonl(root / "ann.jsonl", [*GOOD, BAD["missing_image"]])
    kept, report = load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.5)
    ds = LlavaDataset(kept, tok, root / "img", num_image_tokens=4, transform=ImageTransform(8, "crop"),
                      validation_report=report)  # fmt: skip
    st = ds.stats
    assert st["validation/total"] == 4 and st["validation/dropped"] == 1
    assert st["validation/dropped/missing_image"] == 1 and st["validation/dropped_fraction"] == 0.25
    assert st["encode/total"] == 3 and st["truncation/samples"] == 0
    assert all(isinstance(v, float) for v in st.values())
    json.dumps(st)


def test_feature_cache_round_trip_and_dataset(root, tok, tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    ctx, tgt = torch.randn(3, 4, 5, generator=g), torch.randn(3, 2, 6, generator=g)
    ids = ["a0", 17, "zz"]
    shards = [write_feature_shard(tmp_path / "fc", 0, 0, ctx[:2], tgt[:2]),
              write_feature_shard(tmp_path / "fc", 1, 2, ctx[2:], tgt[2:])]  # fmt: skip
    write_feature_index(tmp_path / "fc", ids, shards, {"context_model": "tiny"})
    cache = FeatureCache(tmp_path / "fc")
    for k, i in enumerate(ids):
        c, t = cache.get(i)
        assert torch.equal(c, ctx[k]) and torch.equal(t, tgt[k])
    ds = LlavaDataset(GOOD, tok, None, num_image_tokens=4, feature_cache=cache)
    assert torch.equal(ds[1]["context_features"], ctx[1]) and torch.equal(ds[1]["target_features"], tgt[1])
    with pytest.raises(ValueError, match="cover"):
        write_feature_index(tmp_path / "fc", ids + ["extra"], shards)


# ------------------------------------------------------------------------------------------------ transforms
def _img(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def test_crop_is_centre_crop_hand_checked() -> None:
    arr = np.zeros((2, 4, 3), np.uint8)  # H=2, W=4: shortest side already 2, so only the centre crop acts
    arr[:, :, 0] = [[0, 10, 20, 30], [40, 50, 60, 70]]
    out = ImageTransform(2, "crop", mean=(0, 0, 0), std=(1, 1, 1))(_img(arr))
    assert out.shape == (3, 2, 2)
    assert torch.allclose(out[0] * 255, torch.tensor([[10.0, 20.0], [50.0, 60.0]]))


def test_pad_fills_with_mean_colour_hand_checked() -> None:
    arr = np.full((1, 2, 3), 200, np.uint8)  # H=1, W=2 → padded to 2x2; original on the top row (offset 0)
    t = ImageTransform(2, "pad", mean=(0.5, 0.25, 0.0), std=(1, 1, 1))
    raw = t.geometry(_img(arr)) * 255
    assert torch.allclose(raw[:, 0], torch.full((3, 2), 200.0))
    assert torch.allclose(raw[:, 1], torch.tensor([[127.0] * 2, [63.0] * 2, [0.0] * 2]))  # int(mean·255)
    # normalisation is (x − mean) / std per channel
    t2 = ImageTransform(2, "pad", mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 0.5))
    assert torch.allclose(
        t2(_img(arr)), (t.geometry(_img(arr)) - torch.tensor([0.5, 0.25, 0.0]).view(3, 1, 1)) / 0.5
    )


def test_context_target_resizes_only_the_target() -> None:
    rng = np.random.default_rng(0)
    im = _img(rng.integers(0, 256, (10, 14, 3)))
    ctx_t = ImageTransform(8, "crop")
    ctx, tgt = ContextTargetTransform(ctx_t, (0.5,) * 3, (0.5,) * 3, target_size=4)(im)
    assert torch.equal(ctx, ctx_t(im))  # the context copy is untouched (fixes paper-spec §11.2)
    raw = ctx_t.geometry(im)
    expected = (F.interpolate(raw[None], size=(4, 4), mode="bilinear", align_corners=False)[0] - 0.5) / 0.5
    assert torch.allclose(tgt, expected)
    _, same = ContextTargetTransform(ctx_t, (0.5,) * 3, (0.5,) * 3)(im)
    assert torch.allclose(same, (raw - 0.5) / 0.5)


def test_annotation_file_edge_cases(root) -> None:
    # BOM: before, the first JSONL record was dropped as bad_json (and a .json array failed to parse).
    body = "\n".join(json.dumps(r) for r in GOOD) + "\n"
    (root / "bom.jsonl").write_text("\ufeff" + body, encoding="utf-8")
    (root / "bom.json").write_text("\ufeff" + json.dumps(GOOD), encoding="utf-8")
    for name in ("bom.jsonl", "bom.json"):
        kept, report = load_and_validate(root / name, root / "img", max_dropped_fraction=0.0)
        assert len(kept) == 3 and report["dropped"] == 0, name
    # not UTF-8: before, a UnicodeDecodeError traceback
    (root / "latin1.jsonl").write_bytes(body.encode() + b'{"id": "caf\xe9"}\n')
    with pytest.raises(ValueError, match="latin1.jsonl: line 4: not UTF-8"):
        load_and_validate(root / "latin1.jsonl", root / "img", max_dropped_fraction=1.0)
    # nothing left to train on: before, an empty list reached the Trainer
    (root / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no usable sample among 0 records"):
        load_and_validate(root / "empty.jsonl", root / "img", max_dropped_fraction=1.0)
    write_jsonl(root / "allbad.jsonl", [BAD["missing_image"]])
    with pytest.raises(ValueError, match=r"no usable sample among 1 records; drops \{'missing_image': 1\}"):
        load_and_validate(root / "allbad.jsonl", root / "img", max_dropped_fraction=1.0)


def test_symlink_loop_is_an_unsafe_path_not_a_crash(root) -> None:
    # Before: Path.resolve raised RuntimeError("Symlink loop") through validation.
    (root / "img" / "loop_a.png").symlink_to(root / "img" / "loop_b.png")
    (root / "img" / "loop_b.png").symlink_to(root / "img" / "loop_a.png")
    write_jsonl(root / "ann.jsonl", [*GOOD, {"id": "l", "image": "loop_a.png", "conversations": conv()}])
    kept, report = load_and_validate(root / "ann.jsonl", root / "img", max_dropped_fraction=0.5)
    assert len(kept) == 3 and report["counts"] == {"unsafe_image_path": 1}

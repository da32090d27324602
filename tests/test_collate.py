"""Collator: padding hand-checked (right and left), image tensors stacked only for samples that have one."""

from __future__ import annotations

import pytest
import torch

from jarvis.data.collate import Collator


def sample(ids, labels=None, **extra):
    out = {"input_ids": torch.tensor(ids), **extra}
    if labels is not None:
        out["labels"] = torch.tensor(labels)
    return out


def test_right_padding_hand_checked() -> None:
    px = torch.ones(3, 2, 2)
    batch = Collator(pad_token_id=0)([
        sample([5, 6, 7], [-100, 6, 7], pixel_values=px, pixel_values_target=px * 2),
        sample([8], [8]),
        sample([9, 9], [-100, 9], pixel_values=px * 3, pixel_values_target=px * 4),
    ])  # fmt: skip
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100], [-100, 9, -100]]
    assert batch["pixel_values"].shape == (2, 3, 2, 2)  # B_img = 2: only the samples with an image, in order
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [1.0, 3.0]
    assert batch["pixel_values_target"][:, 0, 0, 0].tolist() == [2.0, 4.0]
    assert "ids" not in batch


def test_left_padding_for_generation() -> None:
    batch = Collator(pad_token_id=1, padding_side="left", keep_ids=True)(
        [sample([5, 6, 7], id="a"), sample([8], id="b")]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [1, 1, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert "labels" not in batch and batch["ids"] == ["a", "b"]


def test_features_and_text_only_batch() -> None:
    f = torch.zeros(4, 5)
    batch = Collator(0)([sample([1], [1], context_features=f, target_features=f[:2]), sample([2, 3], [2, 3])])
    assert batch["context_features"].shape == (1, 4, 5) and batch["target_features"].shape == (1, 2, 5)
    text_only = Collator(0)([sample([1], [1]), sample([2], [2])])
    assert set(text_only) == {"input_ids", "attention_mask", "labels", "label_positions"}


def test_label_positions_list_the_supervised_next_token_predictions() -> None:
    batch = Collator(0)([sample([5, 6, 7], [-100, 6, 7]), sample([8, 9], [-100, 9])])
    # shifted labels: row 0 -> [6, 7], row 1 -> [9, pad]: predictions at (0,0), (0,1), (1,0)
    assert batch["label_positions"].tolist() == [[0, 0], [0, 1], [1, 0]]


def test_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        Collator(0)([])
    with pytest.raises(ValueError, match="padding_side"):
        Collator(0, padding_side="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        Collator(0)([sample([1], [1]), sample([2])])


def test_inconsistent_samples_are_refused_naming_them() -> None:
    # Before: a sample with a target but no context (or the reverse) shifted every later target row onto the
    # wrong image silently; different image shapes failed inside torch.stack without naming a sample.
    px = torch.ones(3, 2, 2)
    with pytest.raises(ValueError, match=r"samples \['b'\] have only one of pixel_values/pixel_values_target"):
        Collator(0)([sample([1], [1], id="a", pixel_values=px, pixel_values_target=px),
                     sample([2], [2], id="b", pixel_values=px)])  # fmt: skip
    with pytest.raises(ValueError, match=r"samples \[0\] have only one of context_features/target_features"):
        Collator(0)([sample([1], [1], target_features=px), sample([2], [2])])
    with pytest.raises(ValueError, match=r"pixel_values of different shapes.*'a', 'b'"):
        Collator(0)([sample([1], id="a", pixel_values=px), sample([2], id="b", pixel_values=torch.ones(3, 4, 4))])
    with pytest.raises(ValueError, match="sample 'c': 1 labels for 2 input ids"):
        Collator(0)([sample([1, 2], [1], id="c")])
    with pytest.raises(ValueError, match="sample 'd' has no input ids"):
        Collator(0)([sample([], [], id="d")])

"""The blind image and the answer-distribution flag (jarvis.eval.controls, issue 12), checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from jarvis.data.images import CLIP_MEAN, ImageTransform
from jarvis.eval.controls import ANSWER_FLAG_SHARE, answer_distribution, blank_image


def test_blank_image_is_the_tower_mean_colour_at_the_original_size() -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8))  # 5 wide, 3 high
    blank = blank_image(photo, CLIP_MEAN)
    # int(0.48145466*255) = int(122.77) = 122; int(0.4578275*255) = 116; int(0.40821073*255) = 104
    assert blank.size == (5, 3) and blank.mode == "RGB"
    assert set(blank.getdata()) == {(122, 116, 104)}
    # the pad fill has the same colour, so the padded, resized square the model sees is one colour
    pixels = ImageTransform(4, "pad", CLIP_MEAN).geometry(blank)
    assert torch.allclose(pixels, torch.tensor([122, 116, 104]).view(3, 1, 1) / 255 * torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match="3 channel means"):
        blank_image(photo, [0.5])


def test_one_answer_at_15_of_16_is_flagged_and_at_14_of_16_is_not() -> None:
    assert ANSWER_FLAG_SHARE == 0.90
    flagged = answer_distribution(["Yes"] * 8 + [" yes "] * 4 + ["YES"] * 3 + ["No"])
    assert flagged == {"top_answer": "yes", "top_share": 15 / 16, "n": 16, "distinct": 2, "flagged": True}
    fine = answer_distribution(["A"] * 14 + ["B", "(c)"])  # 87.5 % < 90 %
    assert fine["top_answer"] == "a" and fine["top_share"] == 0.875 and not fine["flagged"]
    with pytest.raises(ValueError, match="no answers"):
        answer_distribution([])

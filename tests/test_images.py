"""Image modes -> RGB (16-bit, float, palette + transparency, alpha, CMYK...) and size guards read from the header.

Expected pixels are hand-computed in the comments. Before this module existed, ``convert("RGB")`` clipped 16-bit PNGs
to white and dropped alpha; ``test_16bit_png_through_the_transform_is_not_white`` reproduces that on the old API.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jarvis.data.images import (
    ALPHA_BACKGROUND,
    ImageProblem,
    ImageTransform,
    check_size,
    load_rgb,
    to_rgb,
)


def rgb(image: Image.Image) -> np.ndarray:
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == image.size
    return np.asarray(out)


def test_16bit_png_through_the_transform_is_not_white(tmp_path: Path) -> None:
    # A 0..65535 ramp saved as a 16-bit grey PNG (Pillow opens it as I;16). convert("RGB") clips every value
    # above 255 to 255, so the old transform returned an all-white image (mean 1.0).
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"
        x = ImageTransform(64, "crop").geometry(im)
    expected = np.rint(ramp / 257.0) / 255.0  # 65535 -> 255 exactly
    assert np.allclose(x[0].numpy(), expected, atol=1e-6)
    assert abs(float(x.mean()) - 0.5) < 0.01
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "g16.png"))[..., 0], np.rint(ramp / 257.0))


def test_sixteen_and_thirty_two_bit_and_float_modes_hand_checked() -> None:
    i16 = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))  # I;16
    assert rgb(i16)[0, :, 0].tolist() == [0, 100, 255]
    i32 = Image.fromarray(np.array([[0, 40000, 65535]], dtype=np.int32))  # I with 16-bit data
    assert rgb(i32)[0, :, 0].tolist() == [0, 156, 255]  # 40000 / 257 = 155.6
    i8 = Image.new("L", (3, 1), 124).convert("I")  # I holding 8-bit data (L -> I)
    assert rgb(i8)[0, :, 0].tolist() == [124, 124, 124]
    f01 = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))  # F in [0, 1]
    assert rgb(f01)[0, :, 0].tolist() == [0, 128, 255]  # 127.5 rounds to even: 128
    fwide = Image.fromarray(np.array([[-1.0, 1.0, 3.0]], dtype=np.float32))  # no stated range: stretched
    assert rgb(fwide)[0, :, 0].tolist() == [0, 128, 255]
    fnan = Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32))
    with pytest.raises(ImageProblem) as e:
        to_rgb(fnan)
    assert e.value.reason == "unsupported_image_mode"


def test_alpha_is_composited_on_the_stated_background() -> None:
    # RGBA: transparent black -> background (white); opaque red stays; half-transparent black is 127/255 white.
    px = np.array([[[0, 0, 0, 0], [255, 0, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    out = rgb(Image.fromarray(px, "RGBA"))
    assert ALPHA_BACKGROUND == (255, 255, 255)
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [255, 0, 0]
    assert out[0, 2].tolist() == [127, 127, 127]  # 255 * (255 - 128) / 255
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], dtype=np.uint8), "LA")
    assert rgb(la)[0, :, 0].tolist() == [255, 10]
    assert rgb(la.convert("La"))[0, :, 0].tolist() == [255, 10]  # premultiplied alpha
    pa = Image.new("PA", (2, 1))  # palette + alpha (LA -> PA in Pillow drops the alpha, so built by hand)
    pa.putpalette([10, 10, 10] * 256)
    pa.putpixel((1, 0), (0, 255))
    assert rgb(pa)[0, :, 0].tolist() == [255, 10]


def test_palette_and_trns_transparency_from_png_files(tmp_path: Path) -> None:
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red (transparent), index 1 blue
    p.putpixel((1, 0), 1)
    p.save(tmp_path / "p.png", transparency=0)
    l8 = Image.fromarray(np.array([[7, 200]], dtype=np.uint8), "L")
    l8.save(tmp_path / "l.png", transparency=7)  # tRNS grey key
    c = Image.fromarray(np.array([[[1, 2, 3], [9, 9, 9]]], dtype=np.uint8), "RGB")
    c.save(tmp_path / "rgb.png", transparency=(1, 2, 3))  # tRNS colour key
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P" and "transparency" in im.info
    assert np.asarray(load_rgb(tmp_path / "p.png")).tolist() == [[[255, 255, 255], [0, 0, 255]]]
    assert np.asarray(load_rgb(tmp_path / "l.png")).tolist() == [[[255, 255, 255], [200, 200, 200]]]
    assert np.asarray(load_rgb(tmp_path / "rgb.png")).tolist() == [[[255, 255, 255], [9, 9, 9]]]


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("1", 255, [255, 255, 255]),
        ("L", 77, [77, 77, 77]),
        ("CMYK", (0, 255, 255, 0), [255, 0, 0]),  # full magenta + yellow = red
        ("CMYK", (0, 0, 0, 0), [255, 255, 255]),
        ("YCbCr", (255, 128, 128), [255, 255, 255]),
        ("HSV", (0, 255, 255), [255, 0, 0]),
        ("RGB", (1, 2, 3), [1, 2, 3]),
    ],
)
def test_other_modes_hand_checked(mode: str, value: object, expected: list[int]) -> None:
    assert rgb(Image.new(mode, (2, 2), value))[1, 1].tolist() == expected  # type: ignore[arg-type]


def test_rgb_is_returned_unchanged() -> None:
    im = Image.new("RGB", (3, 2), (5, 6, 7))
    assert to_rgb(im) is im  # no copy, no change of the numbers valid input had before


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width``x``height`` (8-bit grey) and whose IDAT holds 10 bytes: decoding fails."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10))


def test_bomb_limit_is_on_the_pixel_count_from_the_header(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(9000, 9000))  # 81 M pixels in 70 bytes: under Pillow's own 89 M warning
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageProblem, match="81000000 pixels") as e:
        load_rgb(bomb)  # refused from the header, before any decoding (the IDAT would fail to decode)
    assert e.value.reason == "image_too_large"
    with pytest.raises(ImageProblem, match="image_too_large|exceeds"):
        load_rgb(tmp_path / "bomb.png", max_pixels=1000)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    load_rgb(small, max_pixels=1200)
    with pytest.raises(ImageProblem) as e:
        load_rgb(small, max_pixels=1199)
    assert e.value.reason == "image_too_large"


@pytest.mark.parametrize(
    ("size", "reason"),
    [((0, 5), "empty_image"), ((5, 0), "empty_image"), ((1, 101), "extreme_aspect_ratio"),
     ((9000, 10), "image_too_large")],  # fmt: skip
)
def test_degenerate_sizes_are_refused(size: tuple[int, int], reason: str) -> None:
    with pytest.raises(ImageProblem) as e:
        check_size(size)
    assert e.value.reason == reason
    check_size((1, 100))  # 100:1 is the limit, inclusive


def test_transform_refuses_empty_and_elongated_images() -> None:
    # Before: a 0x0 image raised ZeroDivisionError in the resize; a 1x8000 strip became a 64x512000 image.
    with pytest.raises(ImageProblem, match="size 0x0"):
        ImageTransform(8, "crop")(Image.new("RGB", (0, 0)))
    with pytest.raises(ImageProblem, match="aspect ratio"):
        ImageTransform(8, "crop")(Image.new("RGB", (1, 8000)))


def test_benchmark_and_chat_images_go_through_the_same_conversion(tmp_path: Path) -> None:
    # Before: Question.load_image used convert("RGB"): a 16-bit question image became white, alpha was dropped.
    from jarvis.eval.benchmarks import Question

    Image.fromarray(np.full((4, 4), 257 * 51, np.uint16)).save(tmp_path / "q.png")
    q = Question("pope", 1, tmp_path / "q.png", "Is there a cube?", "", 8, "yes")
    assert np.asarray(q.load_image()).tolist() == [[[51] * 3] * 4] * 4
    clear = Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA")
    q = Question("pope", 2, clear, "Is there a cube?", "", 8, "yes")
    assert np.asarray(q.load_image()).min() == 255  # composited on white

"""Image intake: every kind of bad upload gets its own error class and reason."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from infra.errors import (
    ExamdayError,
    InvalidInput,
    MalformedInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from infra.settings.ml import FaceSettings
from ml.images import decode_image, sniff_type
from tests.ml.conftest import photo_bytes


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF) is patched to claim another size."""
    data = bytearray(photo_bytes("person_a_1"))
    offset = 2
    while True:
        marker, length = data[offset + 1], struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[offset + 5 : offset + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        offset += 2 + length


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims another size, with a valid checksum."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 120, 150)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def expect(
    error: type[ExamdayError], reason: str, data: bytes, settings: FaceSettings
) -> ExamdayError:
    with pytest.raises(error) as caught:
        decode_image(data, settings)
    assert caught.value.reason == reason, caught.value.detail
    return caught.value


def test_a_jpeg_photo_decodes_to_rgb(settings: FaceSettings) -> None:
    image = decode_image(photo_bytes("person_a_1"), settings)
    assert image.dtype == np.uint8
    assert image.shape == (244, 204, 3)


def test_zero_bytes_is_an_empty_image(settings: FaceSettings) -> None:
    expect(MalformedInput, "empty_image", b"", settings)


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.7 not a photo", b"hello, this is text", b"\xff\xd8", bytes(range(256)) * 4],
)
def test_non_images_are_refused(data: bytes, settings: FaceSettings) -> None:
    expect(MalformedInput, "not_an_image", data, settings)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.95])
def test_a_truncated_jpeg_is_refused(keep: float, settings: FaceSettings) -> None:
    data = photo_bytes("person_a_2")
    error = expect(MalformedInput, "truncated_image", data[: int(len(data) * keep)], settings)
    assert "truncated" in error.detail


def test_a_truncated_png_is_refused(settings: FaceSettings) -> None:
    png = encode(Image.open(io.BytesIO(photo_bytes("person_a_1"))), "PNG")
    expect(MalformedInput, "truncated_image", png[: len(png) // 2], settings)


@pytest.mark.parametrize("craft", [jpeg_declaring, png_declaring])
def test_a_50_megapixel_header_is_refused_before_decoding(
    craft: Callable[[int, int], bytes], settings: FaceSettings
) -> None:
    data = craft(8000, 6500)
    assert len(data) < 200_000  # the bomb is cheap to send ...
    # ... and refused on its header: decoding would have hit the missing pixel data.
    error = expect(PayloadTooLarge, "image_too_large", data, settings)
    assert "52.0 megapixels" in error.detail


def test_the_megapixel_limit_is_a_setting() -> None:
    small_limit = FaceSettings(max_image_megapixels=0.04)
    expect(PayloadTooLarge, "image_too_large", photo_bytes("person_a_1"), small_limit)


def test_the_byte_limit_is_checked_first() -> None:
    tiny_limit = FaceSettings(max_image_bytes=1000)
    expect(PayloadTooLarge, "file_too_large", photo_bytes("person_a_1"), tiny_limit)


@pytest.mark.parametrize(("fmt", "kind"), [("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff")])
def test_other_image_types_are_unsupported(fmt: str, kind: str, settings: FaceSettings) -> None:
    data = encode(Image.open(io.BytesIO(photo_bytes("person_a_1"))), fmt)
    assert sniff_type(data) == kind
    error = expect(UnsupportedMediaType, "unsupported_image_type", data, settings)
    assert kind.upper() in error.detail


def test_types_can_be_narrowed_by_settings() -> None:
    png = encode(Image.new("RGB", (32, 32)), "PNG")
    jpeg_only = FaceSettings(allowed_image_types=("jpeg",))
    expect(UnsupportedMediaType, "unsupported_image_type", png, jpeg_only)


def test_a_png_with_transparency_is_refused(settings: FaceSettings) -> None:
    rgba = Image.open(io.BytesIO(photo_bytes("person_a_1"))).convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 20))  # one transparent corner is enough
    expect(InvalidInput, "alpha_channel", encode(rgba, "PNG"), settings)


def test_a_palette_png_with_a_transparent_colour_is_refused(settings: FaceSettings) -> None:
    palette = Image.new("P", (32, 32), 0)
    expect(InvalidInput, "alpha_channel", encode(palette, "PNG", transparency=0), settings)


def test_an_opaque_alpha_channel_is_dropped(settings: FaceSettings) -> None:
    photo = Image.open(io.BytesIO(photo_bytes("person_a_1"))).convert("RGB")
    rgba = photo.convert("RGBA")  # alpha 255 everywhere, as browsers' canvas PNGs have
    image = decode_image(encode(rgba, "PNG"), settings)
    assert image.shape == (244, 204, 3)
    assert np.array_equal(image, np.asarray(photo))


def test_exif_orientation_is_applied(settings: FaceSettings) -> None:
    photo = Image.open(io.BytesIO(photo_bytes("person_a_1")))
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write it
    image = decode_image(encode(photo, "JPEG", exif=exif.tobytes()), settings)
    assert image.shape == (204, 244, 3)


def test_greyscale_and_webp_decode(settings: FaceSettings) -> None:
    photo = Image.open(io.BytesIO(photo_bytes("person_a_1")))
    grey = decode_image(encode(photo.convert("L"), "PNG"), settings)
    webp = decode_image(encode(photo, "WEBP", quality=90), settings)
    assert grey.shape == webp.shape == (244, 204, 3)
    assert np.array_equal(grey[..., 0], grey[..., 2])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_corrupted_uploads_never_escape_the_error_tree(fmt: str, settings: FaceSettings) -> None:
    """Random byte damage to a real photo either decodes or is one of our errors."""
    photo = encode(Image.open(io.BytesIO(photo_bytes("person_a_1"))), fmt)
    rng = np.random.default_rng(11)
    refused = 0
    for _ in range(150):
        damaged = bytearray(photo)
        # Headers are the interesting part: half the hits land in the first 200 bytes.
        for _ in range(int(rng.choice([1, 4, 16]))):
            end = 200 if rng.random() < 0.5 else len(damaged)
            damaged[int(rng.integers(end))] = int(rng.integers(256))
        try:
            image = decode_image(bytes(damaged), settings)
        except ExamdayError:
            refused += 1
        else:
            assert image.dtype == np.uint8
            assert image.ndim == 3
    assert refused > 0

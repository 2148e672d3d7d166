"""Image intake: untrusted bytes in, an RGB `uint8` array (height, width, 3) out.

Checks run cheapest first, so a hostile upload costs as little as possible:
size in bytes, magic bytes, then the dimensions declared in the header (Pillow opens
lazily) and only then the pixel data is decoded.

Errors (class, reason):

    MalformedInput        empty_image             zero bytes
    PayloadTooLarge       file_too_large          more bytes than `max_image_bytes`
    MalformedInput        not_an_image            no known image signature, or a header
                                                  that cannot be parsed
    UnsupportedMediaType  unsupported_image_type  a real image of a type not in
                                                  `allowed_image_types` (GIF, BMP, TIFF, ...)
    PayloadTooLarge       image_too_large         header declares more than
                                                  `max_image_megapixels` (pixel bomb)
    MalformedInput        truncated_image         pixel data ends early or is corrupt
    InvalidInput          alpha_channel           at least one transparent pixel
    Unavailable           busy                    every decode slot of the process stayed
                                                  taken for `decode_wait_seconds`

Transparency is refused rather than flattened: what lies "behind" a transparent pixel is
undefined, and flattening on a colour of our choosing would change what the face models
see. A fully opaque alpha channel (browsers' canvas PNGs have one) is simply dropped.
EXIF orientation is applied, so phone photos arrive upright.

`clean_image` is what is stored of an upload: the same checks, then the upright
pixels re-encoded in the sender's format, with no metadata but the ICC colour
profile. EXIF (GPS position, camera serial, time), XMP, IPTC and comments are gone,
since a fresh image carries nothing over: PNG and WebP losslessly (the same
pixels), JPEG at quality 95 without chroma subsampling (the same pixels, up to
JPEG's rounding).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from infra.errors import (
    InvalidInput,
    MalformedInput,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from infra.settings.ml import FaceSettings

RGBImage: TypeAlias = NDArray[np.uint8]

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}

# Signatures of image types we recognise but may refuse; anything else is "not an image".
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (8, b"WEBP", "webp"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (0, b"BM", "bmp"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"\x00\x00\x01\x00", "ico"),
    (0, b"8BPS", "psd"),
    (0, b"\xff\x0a", "jxl"),
    (4, b"jP  ", "jpeg2000"),
    (4, b"JXL ", "jxl"),
    (4, b"ftypheic", "heic"),
    (4, b"ftypheix", "heic"),
    (4, b"ftypmif1", "heif"),
    (4, b"ftypavif", "avif"),
)


def sniff_type(data: bytes) -> str | None:
    """The image type named by the magic bytes, or None if they name no image."""
    for offset, magic, kind in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if kind == "webp" and not data.startswith(b"RIFF"):
                continue
            return kind
    return None


# Decode slots of this process, one semaphore per configured size. Threads, not asyncio:
# decodes run in worker threads (`asyncio.to_thread`) and in verifier replicas.
_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


@contextmanager
def decode_slot(settings: FaceSettings) -> Iterator[None]:
    """Hold one of the process's `max_concurrent_decodes` slots while decoding.

    Blocks (a worker thread, never the event loop) for at most `decode_wait_seconds`:
    a burst of large images would otherwise hold that many bitmaps in memory at once.
    """
    with _slots_lock:
        gate = _slots.setdefault(
            settings.max_concurrent_decodes,
            threading.BoundedSemaphore(settings.max_concurrent_decodes),
        )
    if not gate.acquire(timeout=settings.decode_wait_seconds):
        raise Unavailable(
            "Too many images are being decoded; try again shortly.",
            reason="busy",
            retry_after=1,
        )
    try:
        yield
    finally:
        gate.release()


def decode_image(data: bytes, settings: FaceSettings) -> RGBImage:
    """Validate and decode an uploaded image; see the module docstring for the errors."""
    kind = _check_bytes(data, settings)
    with decode_slot(settings):
        return _decode(data, kind, settings)[0]


def clean_image(data: bytes, settings: FaceSettings) -> tuple[bytes, str]:
    """(the image without metadata, its type): what may be stored of an upload."""
    kind = _check_bytes(data, settings)
    # The re-encode holds the bitmap too: the slot covers it.
    with decode_slot(settings):
        return _reencode(*_decode(data, kind, settings))


def _reencode(pixels: RGBImage, kind: str, icc: bytes | None) -> tuple[bytes, str]:
    out = io.BytesIO()
    fresh = Image.fromarray(pixels, "RGB")  # a new image: no EXIF, XMP or comment to carry
    extra: dict[str, object] = {"icc_profile": icc} if icc else {}
    if kind == "jpeg":
        fresh.save(out, "JPEG", quality=95, subsampling=0, **extra)
    elif kind == "webp":
        fresh.save(out, "WEBP", lossless=True, **extra)
    else:
        fresh.save(out, _PIL_FORMATS[kind], **extra)
    return out.getvalue(), kind


def _check_bytes(data: bytes, settings: FaceSettings) -> str:
    """The checks that need no decoding (and so no slot); the image's type."""
    if not data:
        raise MalformedInput("The image is empty (0 bytes).", reason="empty_image")
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(
            f"The image is {len(data)} bytes; the limit is {settings.max_image_bytes}.",
            reason="file_too_large",
        )
    kind = sniff_type(data)
    if kind is None:
        raise MalformedInput("The data is not an image.", reason="not_an_image")
    if kind not in settings.allowed_image_types:
        allowed = ", ".join(settings.allowed_image_types)
        raise UnsupportedMediaType(
            f"{kind.upper()} images are not accepted; send one of: {allowed}.",
            reason="unsupported_image_type",
        )
    return kind


def _decode(data: bytes, kind: str, settings: FaceSettings) -> tuple[RGBImage, str, bytes | None]:
    with _opened(data, _PIL_FORMATS[kind]) as image:
        _check_pixels(image.size, settings.max_image_megapixels)
        _load(image)
        icc = image.info.get("icc_profile")
        return _to_rgb(_upright(image)), kind, icc if isinstance(icc, bytes) else None


@contextmanager
def _opened(data: bytes, pil_format: str) -> Iterator[Image.Image]:
    # Only the one decoder the magic bytes chose may parse the data.
    try:
        image = Image.open(io.BytesIO(data), formats=[pil_format])
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(str(exc), reason="image_too_large") from None
    except UnidentifiedImageError:
        raise MalformedInput(
            f"The {pil_format} header cannot be read.", reason="not_an_image"
        ) from None
    except (OSError, SyntaxError, EOFError, ValueError) as exc:
        raise MalformedInput(
            f"The {pil_format} header is truncated or corrupt: {exc}", reason="truncated_image"
        ) from None
    with image:
        yield image


def _check_pixels(size: tuple[int, int], max_megapixels: float) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise MalformedInput(
            f"The image declares a size of {width}x{height}.", reason="not_an_image"
        )
    if width * height > max_megapixels * 1_000_000:
        raise PayloadTooLarge(
            f"The image declares {width}x{height} = {width * height / 1e6:.1f} megapixels; "
            f"the limit is {max_megapixels:g}.",
            reason="image_too_large",
        )


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(str(exc), reason="image_too_large") from None
    except (OSError, SyntaxError, EOFError, ValueError) as exc:
        raise MalformedInput(
            f"The image data is truncated or corrupt: {exc}", reason="truncated_image"
        ) from None


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # Broken EXIF blocks are common in the wild and say nothing about the pixels.
        return image


def _to_rgb(image: Image.Image) -> RGBImage:
    if image.mode.startswith("I;16"):
        # 16-bit greyscale PNG: Pillow's own conversion would clip, keep the top byte.
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        if int(np.asarray(rgba.getchannel("A")).min()) < 255:
            raise InvalidInput(
                "The image has transparent pixels; send an opaque photo.",
                reason="alpha_channel",
            )
        image = rgba
    return np.array(image.convert("RGB"), dtype=np.uint8)

"""Photos as phones send them: EXIF with a GPS position, an XMP packet and a comment."""

from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image

GPS = {
    ExifTags.GPS.GPSLatitudeRef: "N",
    ExifTags.GPS.GPSLatitude: (39.0, 54.0, 27.0),
    ExifTags.GPS.GPSLongitudeRef: "E",
    ExifTags.GPS.GPSLongitude: (116.0, 23.0, 30.0),
}


def with_gps(data: bytes) -> bytes:
    """`data` (any image) as a JPEG that tells where and with what it was taken."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[ExifTags.Base.BodySerialNumber] = "SN-0042"
    exif[ExifTags.Base.GPSInfo] = GPS
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").save(
            out,
            "JPEG",
            quality=95,
            exif=exif,
            comment=b"taken at home",
            xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>home</x:xmpmeta>",
        )
    sent = out.getvalue()
    with Image.open(io.BytesIO(sent)) as check:  # the test image really carries it all
        assert check.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert "xmp" in check.info
        assert "comment" in check.info
    return sent


def assert_no_metadata(stored: bytes) -> None:
    with Image.open(io.BytesIO(stored)) as image:
        exif = image.getexif()
        assert not exif.get_ifd(ExifTags.IFD.GPSInfo)
        assert len(exif) == 0, dict(exif)
        assert not {"exif", "xmp", "comment", "XML:com.adobe.xmp"} & set(image.info)
    assert b"PhoneCo" not in stored
    assert b"SN-0042" not in stored
    assert b"home" not in stored


def pixel_gap(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two images' RGB pixels (same size required)."""
    with Image.open(io.BytesIO(a)) as first, Image.open(io.BytesIO(b)) as second:
        x = np.asarray(first.convert("RGB"), dtype=np.int16)
        y = np.asarray(second.convert("RGB"), dtype=np.int16)
    assert x.shape == y.shape
    return float(np.abs(x - y).mean())

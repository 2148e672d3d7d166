"""Which codec a forwarded track uses: one the publisher offers and its viewers accept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiortc import RTCRtpSender

from actors.media import sdp

RTX_MIME = "video/rtx"


def _h264_matches(offered: sdp.Codec, local: Any) -> bool:
    def key(params: dict[str, Any]) -> tuple[str, str]:
        mode = str(params.get("packetization-mode", "0"))
        level_id = str(params.get("profile-level-id", "42e01f")).lower()
        return mode, level_id[:4]  # profile_idc + constraint flags; the level may differ

    return key(offered.parameters) == key(local.parameters)


def codec_preferences(kind: str, offered: Sequence[sdp.Codec], allowed: Sequence[str]) -> list[Any]:
    """Capabilities pinning one forwardable codec (+ RTX), in the offerer's order.

    Empty when the offer has none we forward. Pinning one codec means a
    publisher sends exactly what its viewers will be offered.
    """
    local = RTCRtpSender.getCapabilities(kind).codecs
    wanted = {name.lower() for name in allowed}
    for codec in offered:
        if codec.name.lower() not in wanted:
            continue
        for capability in local:
            if capability.mimeType.lower() != codec.mime_type.lower():
                continue
            if codec.name.lower() == "h264" and not _h264_matches(codec, capability):
                continue
            rtx = [c for c in local if c.mimeType.lower() == RTX_MIME] if kind == "video" else []
            return [capability, *rtx]
    return []

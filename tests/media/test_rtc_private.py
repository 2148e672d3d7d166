"""The aiortc/aioice private details the forwarder relies on are still there."""

from __future__ import annotations

from typing import Any

import aioice.ice
import aiortc.rtcrtpreceiver
import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender

from actors import rtc
from infra.errors import ConfigError


async def test_this_aiortc_has_every_private_detail_we_use() -> None:
    assert await rtc.missing_private_api() == []
    await rtc.check_private_api()


@pytest.mark.parametrize(
    ("target", "name", "reported"),
    [
        (RTCRtpSender, "_send_keyframe", "sender_keyframe_hook"),
        (RTCRtpReceiver, "_send_rtcp_pli", "receiver_send_pli"),
        (aiortc.rtcrtpreceiver, "decoder_worker", "decoder_worker"),
        (aioice.ice, "get_host_addresses", "host_addresses"),
    ],
)
async def test_a_renamed_detail_is_reported(
    monkeypatch: pytest.MonkeyPatch, target: object, name: str, reported: str
) -> None:
    monkeypatch.delattr(target, name)
    assert reported in await rtc.missing_private_api()
    with pytest.raises(ConfigError):
        await rtc.check_private_api()


async def test_a_changed_decoder_worker_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def decoder_worker(loop: object, input_q: object, output_q: object) -> None: ...

    monkeypatch.setattr(aiortc.rtcrtpreceiver, "decoder_worker", decoder_worker)
    assert await rtc.missing_private_api() == ["decoder_worker"]


async def test_a_renamed_instance_attribute_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    original = RTCRtpReceiver.__init__

    def renamed(self: RTCRtpReceiver, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._RTCRtpReceiver__jobs = self._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
        del self._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]

    monkeypatch.setattr(RTCRtpReceiver, "__init__", renamed)
    assert await rtc.missing_private_api() == ["receiver_decoder_queue"]

"""The aiortc/aioice private details the forwarder relies on are still there."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aioice.ice
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import (
    RTCConfiguration,
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)

from actors.media.aiortc import rtc
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
        (aioice.ice.Connection, "query_consent", "consent_check"),
        (RTCRtpSender, "_retransmit", "sender_retransmit"),
        (aiortc.rtcrtpsender, "random", "sender_rtcp_random"),
        (aiortc.rtcrtpreceiver, "random", "receiver_rtcp_random"),
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


@pytest.mark.parametrize(
    ("cls", "reported"),
    [
        (RTCRtpReceiver, "receiver_decoder_queue"),
        (RTCRtpReceiver, "receiver_jitter_buffer"),
        (RTCRtpSender, "sender_rtp_history"),
        (RTCRtpSender, "sender_packet_count"),
        (RTCRtpSender, "sender_octet_count"),
        (RTCRtpSender, "sender_ntp_timestamp"),
        (RTCRtpSender, "sender_rtp_timestamp"),
        (RTCDtlsTransport, "transport_tx_srtp"),
        (RTCDtlsTransport, "transport_tx_packets"),
        (RTCDtlsTransport, "transport_tx_bytes"),
    ],
)
async def test_a_renamed_instance_attribute_is_reported(
    monkeypatch: pytest.MonkeyPatch, cls: type, reported: str
) -> None:
    original = cls.__init__  # type: ignore[misc]
    name = rtc.PRIVATE_API[reported]

    def renamed(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        setattr(self, name + "_renamed", getattr(self, name))
        delattr(self, name)

    monkeypatch.setattr(cls, "__init__", renamed)
    assert await rtc.missing_private_api() == [reported]


@pytest.mark.parametrize("reported", ["transport_state", "ice_connection", "ice_nominated"])
async def test_a_renamed_transport_attribute_is_reported(reported: str) -> None:
    # aiortc's own close() needs these, so they are taken away only while checking.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    dtls = pc.addTransceiver("video").sender.transport
    ice = dtls.transport
    connection = getattr(ice, rtc.PRIVATE_API["ice_connection"])
    owner = {"transport_state": dtls, "ice_connection": ice, "ice_nominated": connection}
    name = rtc.PRIVATE_API[reported]
    value = getattr(owner[reported], name)
    delattr(owner[reported], name)
    try:
        assert rtc._missing_transport_api(dtls) == [reported]
    finally:
        setattr(owner[reported], name, value)
        await pc.close()


async def test_a_changed_dtls_state_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # The forwarder sends only while the state is aiortc's State.CONNECTED.
    original = RTCDtlsTransport.__init__

    def with_string_state(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._state = "new"

    monkeypatch.setattr(RTCDtlsTransport, "__init__", with_string_state)
    assert await rtc.missing_private_api() == ["transport_state"]


async def test_an_rtcp_loop_that_waits_otherwise_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # actors.media.aiortc.rtcp_ticks relies on the loop's wait being `0.5 + random.random()`.
    async def _run_rtcp(self: Any) -> None:
        await asyncio.sleep(random.uniform(0.5, 1.5))

    monkeypatch.setattr(RTCRtpReceiver, "_run_rtcp", _run_rtcp)
    assert await rtc.missing_private_api() == ["receiver_rtcp_random"]
    monkeypatch.delattr(RTCRtpSender, "_run_rtcp")
    assert "sender_rtcp_random" in await rtc.missing_private_api()

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


# Names are read from the registry: outside actors/media/aiortc none is spelt out
# (tests/test_private_api.py), so what is taken away is what the registry names.
@pytest.mark.parametrize(
    ("target", "reported"),
    [
        (RTCRtpSender, "sender_keyframe_hook"),
        (RTCRtpReceiver, "receiver_send_pli"),
        (aiortc.rtcrtpreceiver, "receiver_decoder_worker"),
        (aioice.ice, "host_addresses"),
        (aioice.ice.Connection, "consent_check"),
        (RTCRtpSender, "sender_retransmit"),
        (aiortc.rtcrtpsender, "sender_rtcp_random"),
        (aiortc.rtcrtpreceiver, "receiver_rtcp_random"),
        (RTCRtpSender, "rtcp_send"),
        (RTCRtpReceiver, "rtcp_send"),
        (RTCDtlsTransport, "transport_rtp_in"),
        (aioice.ice.Connection, "ice_component_candidates"),
        (aioice.ice.Connection, "ice_data_in"),
        (aioice.ice, "stun_protocol"),
    ],
)
async def test_a_renamed_detail_is_reported(
    monkeypatch: pytest.MonkeyPatch, target: object, reported: str
) -> None:
    monkeypatch.delattr(target, rtc.PRIVATE_API[reported])
    assert reported in await rtc.missing_private_api()
    with pytest.raises(ConfigError):
        await rtc.check_private_api()


async def test_a_changed_decoder_worker_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def decoder_worker(loop: object, input_q: object, output_q: object) -> None: ...

    monkeypatch.setattr(
        aiortc.rtcrtpreceiver, rtc.PRIVATE_API["receiver_decoder_worker"], decoder_worker
    )
    assert await rtc.missing_private_api() == ["receiver_decoder_worker"]


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


@pytest.mark.parametrize(
    "reported",
    [
        "transport_state",
        "ice_connection",
        "ice_nominated",
        "ice_protocols",
        "ice_consent_task",
        "ice_local_username",
    ],
)
async def test_a_renamed_transport_attribute_is_reported(reported: str) -> None:
    # aiortc's own close() needs these, so they are taken away only while checking.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    dtls = pc.addTransceiver("video").sender.transport
    ice = dtls.transport
    connection = getattr(ice, rtc.PRIVATE_API["ice_connection"])
    owner = {
        "transport_state": dtls,
        "ice_connection": ice,
        "ice_nominated": connection,
        "ice_protocols": connection,
        "ice_consent_task": connection,
        "ice_local_username": connection,
    }
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
        setattr(self, rtc.PRIVATE_API["transport_state"], "new")

    monkeypatch.setattr(RTCDtlsTransport, "__init__", with_string_state)
    assert await rtc.missing_private_api() == ["transport_state"]


async def test_an_rtcp_loop_that_waits_otherwise_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # actors.media.aiortc.rtcp_ticks relies on the loop's wait being `0.5 + random.random()`.
    async def run_rtcp(self: Any) -> None:
        await asyncio.sleep(random.uniform(0.5, 1.5))

    monkeypatch.setattr(RTCRtpReceiver, rtc.PRIVATE_API["rtcp_loop"], run_rtcp)
    assert await rtc.missing_private_api() == ["receiver_rtcp_random"]
    monkeypatch.delattr(RTCRtpSender, rtc.PRIVATE_API["rtcp_loop"])
    assert "sender_rtcp_random" in await rtc.missing_private_api()


async def test_a_changed_stun_protocol_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # actors.media.aiortc.udp_mux subclasses it and routes its STUN transactions.
    protocol = getattr(aioice.ice, rtc.PRIVATE_API["stun_protocol"])

    async def request(self: Any, request: Any, addr: Any) -> Any: ...

    monkeypatch.setattr(protocol, "request", request)
    assert await rtc.missing_private_api() == ["stun_protocol"]

"""The embedded coturn with TURN REST credentials: who may allocate, where a relay may send.

Real coturn (`make coturn`), real aioice TURN clients, loopback only: the allowed peer
network is narrowed to 127.0.0.1/32 so that "elsewhere" is another loopback address.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioice import turn as aioice_turn
from aioice.stun import TransactionFailed

from infra import services
from infra.processes import ManagedProcess
from infra.settings import Settings
from infra.stack import isolated_settings
from infra.turn import coturn_config, ice_servers, rest_credential


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


class _Echo(_Inbox):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        super().datagram_received(data, addr)
        assert self.transport is not None
        self.transport.sendto(data, addr)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    state = tmp_path_factory.mktemp("turn")
    base = isolated_settings(state)
    settings = base.model_copy(
        update={"turn": base.turn.model_copy(update={"allowed_peer_networks": ("127.0.0.1/32",)})}
    )
    process: ManagedProcess = services.turn_process(settings)
    process.start()
    try:
        process.wait_healthy(lambda: services.turn_healthy(settings), 20)
        yield settings
    finally:
        process.stop()


def _server(settings: Settings) -> tuple[str, int]:
    return settings.turn.listen_address, settings.turn.port


async def _allocate(
    settings: Settings, username: str, password: str, transport: str = "udp"
) -> tuple[aioice_turn.TurnTransport, _Inbox]:
    return await asyncio.wait_for(
        aioice_turn.create_turn_endpoint(
            _Inbox, _server(settings), username, password, transport=transport
        ),
        10,
    )


async def _echo_at(host: str) -> tuple[asyncio.DatagramTransport, _Echo]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(_Echo, local_addr=(host, 0))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_minted_credential_relays_to_a_media_address(
    relay: Settings, transport: str
) -> None:
    server = ice_servers(relay.turn, "s-3f2a")[0]
    assert server.username is not None
    assert server.username.endswith(":s-3f2a")
    assert server.credential is not None
    echo_transport, echo = await _echo_at("127.0.0.1")
    allocation, inbox = await _allocate(relay, server.username, server.credential, transport)
    try:
        relayed = allocation.get_extra_info("sockname")
        assert relayed[0] == relay.turn.relay_address
        assert relay.turn.relay_min_port <= relayed[1] <= relay.turn.relay_max_port
        allocation.sendto(b"ping", echo_transport.get_extra_info("sockname"))
        data, source = await asyncio.wait_for(echo.received.get(), 5)
        # The media side sees the relay's address, never the client's.
        assert (data, source) == (b"ping", tuple(relayed))
        data, _ = await asyncio.wait_for(inbox.received.get(), 5)
        assert data == b"ping"
    finally:
        allocation.close()
        echo_transport.close()


async def test_expired_and_forged_credentials_allocate_nothing(relay: Settings) -> None:
    secret = relay.turn.shared_secret.get_secret_value()
    expired = rest_credential(secret, "s-1", 60, now=time.time() - 3600)
    forged = rest_credential("not-the-shared-secret-at-all-0123456789", "s-1", 600)
    for username, password in (expired, forged):
        with pytest.raises(TransactionFailed) as refused:
            await _allocate(relay, username, password)
        assert refused.value.response.attributes["ERROR-CODE"][0] == 401


async def test_a_relay_sends_nowhere_outside_the_allowed_networks(relay: Settings) -> None:
    username, password = rest_credential(relay.turn.shared_secret.get_secret_value(), "s-2", 600)
    elsewhere_transport, elsewhere = await _echo_at("127.0.0.5")
    allocation, _inbox = await _allocate(relay, username, password)
    try:
        protocol = allocation._TurnTransport__inner_protocol  # type: ignore[attr-defined]
        with pytest.raises(TransactionFailed) as refused:
            await protocol.send_data(b"probe", elsewhere_transport.get_extra_info("sockname"))
        assert refused.value.response.attributes["ERROR-CODE"][0] == 403
        await asyncio.sleep(0.5)
        assert elsewhere.received.empty()
    finally:
        allocation.close()
        elsewhere_transport.close()


def test_the_config_keeps_the_secret_off_the_command_line(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    process = services.turn_process(settings)
    secret = settings.turn.shared_secret.get_secret_value()
    assert all(secret not in arg for arg in process.argv)
    config = tmp_path / "turn" / "turnserver.conf"
    assert config.stat().st_mode & 0o077 == 0
    text = coturn_config(settings.turn, tmp_path)
    assert f"static-auth-secret={secret}" in text
    assert "allowed-peer-ip=127.0.0.0-127.255.255.255" in text
    assert "denied-peer-ip=0.0.0.0-255.255.255.255" in text

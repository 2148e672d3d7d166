"""WHIP/WHEP response details that need no peer: ICE-server Link headers and their validation."""

from __future__ import annotations

import re
import time

import pytest
from pydantic import ValidationError

from actors.media.sessions import MediaSession, new_etag, new_session_id
from api.media_http import created
from infra.settings import Settings
from infra.settings.media import MediaSettings
from infra.turn import rest_credential


def test_link_headers_name_the_configured_ice_servers() -> None:
    servers = ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"]
    settings = Settings(media={"ice_servers": servers}, turn={"embedded": False})
    session = MediaSession(
        new_session_id(), "whip", "candidate:e:c", "e", "r", "c", "camera", "s", new_etag()
    )
    response = created("v=0\r\n", session, "/v1/whip/sessions", settings)
    assert response.status_code == 201
    assert response.headers["location"] == f"/v1/whip/sessions/{session.id}"
    assert response.headers["link"] == (
        '<stun:127.0.0.1:3478>; rel="ice-server", '
        '<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"'
    )
    assert "Link" in response.headers["access-control-expose-headers"]


def test_turn_links_carry_a_fresh_credential_for_a_pseudonym() -> None:
    # RFC 9725 section 4.6: username, credential and credential-type on each TURN link.
    settings = Settings(turn={"urls": ["turn:127.0.0.1:3478?transport=tcp"]})
    session = MediaSession(
        new_session_id(), "whip", "candidate:e:c-77", "e", "r", "c-77", "camera", "s", new_etag()
    )
    link = created("v=0\r\n", session, "/v1/whip/sessions", settings).headers["link"]
    match = re.fullmatch(
        r'<turn:127\.0\.0\.1:3478\?transport=tcp>; rel="ice-server"; username="(\d+):(\w+)";'
        r' credential="([^"]+)"; credential-type="password"',
        link,
    )
    assert match is not None, link
    expiry, subject, credential = int(match[1]), match[2], match[3]
    assert time.time() + settings.turn.credential_ttl_s - 60 < expiry
    assert "c-77" not in subject
    assert (f"{expiry}:{subject}", credential) == rest_credential(
        settings.turn.shared_secret.get_secret_value(),
        subject,
        settings.turn.credential_ttl_s,
        now=expiry - settings.turn.credential_ttl_s,
    )


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1/", "stun:127.0.0.1>; rel=x", 'turn:a"b', "stun:a,b"]
)
def test_ice_servers_that_would_break_a_link_header_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        MediaSettings(ice_servers=(url,))


def test_no_ice_server_by_default() -> None:
    assert MediaSettings().ice_servers == ()

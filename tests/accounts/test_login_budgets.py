"""Login budgets that no stranger can spend for someone else (issue #22, finding 2).

Sources are loopback addresses; through a trusted proxy the clients are loopback
addresses in X-Forwarded-For. Each test uses addresses of its own, since budgets live
in the one Redis of the test session.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from ipaddress import ip_network

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from actors.accounts.sources import source_group
from api.client_address import forwarded_client
from infra.errors import MalformedInput
from infra.processes import free_port
from infra.settings import Settings
from infra.stack import LocalStack
from tests.accounts.test_login import runtime_of
from tests.conftest import http_client
from tests.support.factories import PASSWORD, new_exam
from tests.support.serve import served_gateway

PROXY = "127.0.0.21"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def proxied(stack: LocalStack, app: FastAPI) -> AsyncIterator[Settings]:
    """A second gateway that trusts PROXY (and only it) about X-Forwarded-For."""
    settings = stack.settings.model_copy(
        update={"gateway_port": free_port(), "trusted_proxies": [f"{PROXY}/32"]}
    )
    async with served_gateway(settings):
        yield settings


def _login(exam: str, number: str) -> dict[str, str]:
    return {"exam_no": exam, "candidate_no": number}


async def _staff_member(app: FastAPI) -> str:
    username = f"staff-{secrets.token_hex(4)}"
    await runtime_of(app).staff.create(username, PASSWORD, "proctor", None)
    return username


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["reason"] == "login_rate_limited"
    assert int(response.headers["retry-after"]) >= 1


async def test_through_a_trusted_proxy_each_client_has_its_own_budget(
    client: httpx.AsyncClient, app: FastAPI, proxied: Settings, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["8001"]}, with_proctors=False)
    async with http_client(proxied, source=PROXY) as proxy:
        guesser = {"x-forwarded-for": "127.0.1.1"}
        for attempt in range(settings.login_failures_per_ip):
            wrong = await proxy.post(
                "/v1/sessions", json=_login(world.exam_id, f"x{attempt}"), headers=guesser
            )
            assert wrong.status_code == 401, wrong.text
        _refused(
            await proxy.post("/v1/sessions", json=_login(world.exam_id, "8001"), headers=guesser)
        )
        # What the guesser writes left of the proxy's own entry is not believed.
        spoofed = {"x-forwarded-for": "127.0.1.77, 127.0.1.1"}
        _refused(
            await proxy.post("/v1/sessions", json=_login(world.exam_id, "8001"), headers=spoofed)
        )
        # Another client behind the same proxy logs in.
        other = {"x-forwarded-for": "127.0.1.2"}
        valid = await proxy.post("/v1/sessions", json=_login(world.exam_id, "8001"), headers=other)
        assert valid.status_code == 201, valid.text
        bad = await proxy.post(
            "/v1/sessions", json=_login(world.exam_id, "8001"), headers={"x-forwarded-for": "a"}
        )
        assert bad.status_code == 400
        assert bad.json()["reason"] == "invalid_forwarded_for"


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["8101"]}, with_proctors=False)
    async with http_client(settings, source="127.0.0.22") as guesser:
        for attempt in range(settings.login_failures_per_ip):
            wrong = await guesser.post(
                "/v1/sessions",
                json=_login(world.exam_id, f"x{attempt}"),
                headers={"x-forwarded-for": f"127.0.2.{attempt + 1}"},
            )
            assert wrong.status_code == 401, wrong.text
        _refused(
            await guesser.post(
                "/v1/sessions",
                json=_login(world.exam_id, "8101"),
                headers={"x-forwarded-for": "127.0.2.200"},
            )
        )


async def test_a_strangers_wrong_passwords_do_not_stop_the_staff_member(
    app: FastAPI, settings: Settings
) -> None:
    username = await _staff_member(app)
    wrong = {"username": username, "password": "not the password"}
    async with http_client(settings, source="127.0.0.23") as stranger:
        for _ in range(settings.login_failures_per_candidate):
            answer = await stranger.post("/v1/staff/sessions", json=wrong)
            assert answer.status_code == 401, answer.text
        # The stranger's source is delayed, even with the right password...
        right = {"username": username, "password": PASSWORD}
        _refused(await stranger.post("/v1/staff/sessions", json=right))
    # ...while the owner, elsewhere, logs in.
    async with http_client(settings, source="127.0.0.24") as owner:
        answer = await owner.post("/v1/staff/sessions", json=right)
        assert answer.status_code == 201, answer.text


async def test_failing_sources_do_not_stop_the_valid_candidates_of_an_exam(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["8201"]}, with_proctors=False)
    per_source = settings.login_failures_per_ip
    sources = -(-settings.login_failures_per_exam // per_source)

    async def guess(index: int) -> list[int]:
        async with http_client(settings, source=f"127.0.3.{index + 1}") as guesser:
            return [
                (
                    await guesser.post(
                        "/v1/sessions", json=_login(world.exam_id, f"g{index}x{attempt}")
                    )
                ).status_code
                for attempt in range(per_source)
            ]

    statuses = await asyncio.gather(*(guess(index) for index in range(sources)))
    assert {code for codes in statuses for code in codes} == {401}
    async with http_client(settings, source=f"127.0.3.{sources + 1}") as candidate:
        valid = await candidate.post("/v1/sessions", json=_login(world.exam_id, "8201"))
        assert valid.status_code == 201, valid.text
    # The exam is under attack now: a new source gets one failure there, then waits.
    async with http_client(settings, source=f"127.0.3.{sources + 2}") as late:
        wrong = await late.post("/v1/sessions", json=_login(world.exam_id, "late"))
        assert wrong.status_code == 401
        _refused(await late.post("/v1/sessions", json=_login(world.exam_id, "8201")))


async def test_the_bound_on_one_pair_holds_whatever_the_source(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    # A candidate pair: locked after its failures from many sources, answered as wrong.
    world = await new_exam(client, runtime_of(app), {"r1": ["8301"]}, with_proctors=False)
    runtime = runtime_of(app)
    cid = runtime.exams.candidate_id(world.exam_id, "8301")
    for index in range(settings.login_failures_per_candidate):
        await runtime.sessions.record_failure(f"127.0.4.{index + 1}", world.exam_id, cid)
    async with http_client(settings, source="127.0.4.100") as fresh:
        locked = await fresh.post("/v1/sessions", json=_login(world.exam_id, "8301"))
        assert locked.status_code == 401
        assert locked.json()["reason"] == "wrong_credentials"

    # A staff account: guesses spread over many sources reach its ceiling, and then
    # every source without a past login waits, the right password included.
    username = await _staff_member(app)
    async with http_client(settings, source="127.0.5.200") as owner:
        right = {"username": username, "password": PASSWORD}
        assert (await owner.post("/v1/staff/sessions", json=right)).status_code == 201
    per_source = settings.login_failures_per_candidate
    sources = -(-settings.login_failures_per_account // per_source)
    wrong = {"username": username, "password": "not the password"}
    for index in range(sources):
        async with http_client(settings, source=f"127.0.5.{index + 1}") as guesser:
            for _ in range(per_source):
                answer = await guesser.post("/v1/staff/sessions", json=wrong)
                assert answer.status_code == 401, answer.text
    async with http_client(settings, source="127.0.5.201") as fresh:
        _refused(await fresh.post("/v1/staff/sessions", json=right))
    # The owner's own source is spared the account's delay.
    async with http_client(settings, source="127.0.5.200") as owner:
        assert (await owner.post("/v1/staff/sessions", json=right)).status_code == 201


def test_ipv6_sources_are_grouped_by_their_64() -> None:
    assert source_group("2001:db8:1:2:aaaa::1") == source_group("2001:db8:1:2:ffff:1:2:3")
    assert source_group("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_group("2001:db8:1:3::1") != source_group("2001:db8:1:2::1")
    assert source_group("::1") == source_group("::2")
    # IPv4 is not grouped; an IPv4-mapped IPv6 address is its IPv4 address.
    assert source_group("127.0.0.5") != source_group("127.0.0.6")
    assert source_group("::ffff:127.0.0.5") == "127.0.0.5"
    assert source_group("unknown") == "unknown"


def test_the_client_is_the_rightmost_hop_outside_the_trusted_proxies() -> None:
    trusted = [ip_network("127.0.0.16/29"), ip_network("::1/128")]
    # Peer untrusted: the header is not read at all.
    assert forwarded_client("127.0.0.30", ["127.0.1.1"], trusted) == "127.0.0.30"
    # Two trusted proxies in a row; the client's own entries (left) are never believed.
    chain = ["127.0.1.66, 127.0.1.1", "127.0.0.17"]
    assert forwarded_client("127.0.0.18", chain, trusted) == "127.0.1.1"
    assert forwarded_client("::1", ["[::ffff:127.0.1.3]:4711"], trusted) == "127.0.1.3"
    assert forwarded_client("127.0.0.18", ["127.0.1.4:80"], trusted) == "127.0.1.4"
    # Only trusted hops: the leftmost is the client.
    assert forwarded_client("127.0.0.18", ["127.0.0.17"], trusted) == "127.0.0.17"
    assert forwarded_client("127.0.0.18", [], trusted) == "127.0.0.18"
    # Garbage is read only where a trusted hop vouches for it, and then refused.
    assert forwarded_client("127.0.0.18", ["junk, 127.0.1.5"], trusted) == "127.0.1.5"
    with pytest.raises(MalformedInput) as refused:
        forwarded_client("127.0.0.18", ["junk"], trusted)
    assert refused.value.reason == "invalid_forwarded_for"

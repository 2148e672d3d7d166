"""A media session's URL answers its owner only: real WHIP and WHEP sessions of one exam
are 404 to the candidates, proctors and organisers of another exam, of another room, and
to the other candidates of the same room; and they live on untouched.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from actors.media.shard import shard_name
from tests.accounts.test_login import runtime_of
from tests.support import webrtc
from tests.support.factories import candidate_login, joined_candidate, new_exam
from tests.support.wait import until

TRICKLE = {"content-type": "application/trickle-ice-sdpfrag"}


def _fragment(pc_sdp: str) -> str:
    """A well-formed trickle fragment for the peer's own ICE session (loopback only)."""
    ufrag = next(
        line.split(":", 1)[1] for line in pc_sdp.splitlines() if line.startswith("a=ice-ufrag:")
    )
    return (
        f"a=ice-ufrag:{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
    )


async def test_real_media_sessions_refuse_every_caller_but_their_owner(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    plane = runtime.media

    async def reporting() -> bool:
        return bool(await plane.router.loads([shard_name(0)]))

    await until(reporting, within=60, every=0.1)
    mine = await new_exam(client, runtime, {"r1": ["1001", "1003"], "r2": ["1002"]})
    other = await new_exam(client, runtime, {"r9": ["9001"]})
    owner = await joined_candidate(client, mine.exam_id, "1001")
    proctor = mine.proctors["r1"]
    strangers = {
        "candidate of another exam": await candidate_login(client, other.exam_id, "9001"),
        "proctor of another exam": other.proctors["r9"],
        "organiser of another exam": other.organiser,
        "candidate of another room": await joined_candidate(client, mine.exam_id, "1002"),
        "proctor of another room": mine.proctors["r2"],
        "candidate of the same room": await joined_candidate(client, mine.exam_id, "1003"),
        "organiser of the same exam": mine.organiser,
    }
    peers: list[webrtc.Sender | webrtc.Receiver] = []
    try:
        publisher = await webrtc.whip_publish(client, "/v1/whip/me/camera", owner)
        peers.append(publisher)
        assert publisher.response.status_code == 201, publisher.response.text
        cid = mine.candidate_ids["1001"]
        url = f"/v1/whep/exams/{mine.exam_id}/rooms/r1/candidates/{cid}"
        viewer = await webrtc.whep_watch(client, url, proctor)
        peers.append(viewer)
        assert viewer.response.status_code == 201, viewer.response.text
        await until(lambda: len(viewer.indices) >= 10, within=30)

        assert publisher.pc.localDescription is not None
        assert viewer.pc.localDescription is not None
        # The viewer first: ending the camera would end it too.
        sessions = {
            "WHEP viewer": (
                viewer.location,
                viewer.response.headers["etag"],
                _fragment(viewer.pc.localDescription.sdp),
                proctor,
            ),
            "WHIP camera": (
                publisher.location,
                publisher.response.headers["etag"],
                _fragment(publisher.pc.localDescription.sdp),
                owner,
            ),
        }
        failures = []
        for label, (location, etag, fragment, _) in sessions.items():
            session_id = location.rsplit("/", 1)[1]
            record = await plane.sessions.get(session_id)
            assert record is not None
            for who, headers in strangers.items():
                # The real ETag and a good fragment: only the owner check stands in the way.
                patched = await client.patch(
                    location, content=fragment, headers={**headers, **TRICKLE, "if-match": etag}
                )
                deleted = await client.delete(location, headers=headers)
                for method, response in (("PATCH", patched), ("DELETE", deleted)):
                    reason = response.json().get("reason") if response.content else None
                    if (response.status_code, reason) != (404, "unknown_session"):
                        failures.append(
                            f"{method} {label} as {who}: {response.status_code} {reason}"
                        )
            if await plane.sessions.get(session_id) != record:
                failures.append(f"{label}: the session record changed or is gone")
        assert failures == [], "\n".join(failures)

        # Both sessions live on: the proctor still receives the camera...
        seen = len(viewer.indices)
        await until(lambda: len(viewer.indices) >= seen + 10, within=30)
        assert not viewer.ended
        # ...and the owners still manage them.
        for location, etag, fragment, headers in sessions.values():
            patched = await client.patch(
                location, content=fragment, headers={**headers, **TRICKLE, "if-match": etag}
            )
            assert patched.status_code == 204, patched.text
        for location, _, _, headers in sessions.values():
            assert (await client.delete(location, headers=headers)).status_code == 200
        assert await plane.sessions.get(publisher.session_id) is None
    finally:
        for peer in peers:
            await peer.close()

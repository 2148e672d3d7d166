"""The simulated candidate's and proctor's exam day, every step timed.

A candidate: login → consent → version check → network check → (1:1 face
verification against the face the organiser enrolled, liveness challenge) → join →
(WHIP publish of a camera that shows a real face, plus audio) → heartbeats → client
logs and a crash report → photo upload → exit. A proctor: login → room event stream →
WHEP watch of the room's publishing candidates, counting what arrives (and sampling
each track's bitrate and loss) → talk-back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp

from loadtests import webrtc
from loadtests.presence import PresenceSocket
from loadtests.scenario import Assets, Scenario

MAX_EVENTS = 100_000
# A face step refused with 503 (the verifier's bounded queue is full), or a WHIP/WHEP
# offer refused with 503 (a loaded media shard), is asked again after a pause, as the
# candidate app and the proctor console do, this many times at most.
BUSY_ATTEMPTS = 6
BUSY_PAUSE_S = 1.0
WATCH_RETRY_S = 0.5
# A watched camera that shows no frame this long after its WHEP answer is asked again.
FIRST_FRAME_S = 15.0
# A published camera whose connection is not up this long after its WHIP answer is
# ended (DELETE) and published again, as WHIP clients do when ICE or DTLS fails.
CONNECT_S = 10.0
# Every watched track's bitrate and loss is sampled this often, for the report's charts.
TRACK_SAMPLE_S = 2.0
MAX_TRACK_SAMPLES = 200_000
OfferedSession = TypeVar("OfferedSession", webrtc.WhipSession, webrtc.WhepSession)


@dataclass
class Step:
    actor: str
    step: str
    start: float
    seconds: float
    ok: bool
    reason: str = ""


@dataclass
class Recorder:
    epoch: float = field(default_factory=time.time)
    steps: list[Step] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    incidents_raised: Counter[str] = field(default_factory=Counter)
    incidents_expected: Counter[str] = field(default_factory=Counter)
    online: list[tuple[float, int]] = field(default_factory=list)
    # step -> offers made again: after a 503, or a session that never connected
    busy_retries: Counter[str] = field(default_factory=Counter)
    # camera connections lost mid-exam (and published again), by the state they were in
    connections_lost: Counter[str] = field(default_factory=Counter)
    loop_lag: list[float] = field(default_factory=list)  # seconds the generator's loop was late
    # per watched track every TRACK_SAMPLE_S: {"t", "room", "candidate", "kbps", "loss_pct"}
    track_samples: list[dict[str, Any]] = field(default_factory=list)
    _online_now: int = 0

    async def timed(self, actor: str, step: str, call: Awaitable[tuple[bool, str]]) -> bool:
        began = time.time()
        try:
            ok, reason = await call
        except webrtc.MediaRefused as exc:
            ok, reason = False, f"http_{exc.status} {exc.reason}".strip()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, reason = False, type(exc).__name__
        self.steps.append(Step(actor, step, began - self.epoch, time.time() - began, ok, reason))
        return ok

    def presence(self, delta: int) -> None:
        self._online_now += delta
        self.online.append((time.time() - self.epoch, self._online_now))


async def _within(seconds: float, done: Callable[[], bool], stop: asyncio.Event | None) -> bool:
    """Poll `done` until it holds, `seconds` pass or `stop` is set; its last answer.

    Polled: frames are counted in aiortc's decoder thread, where no asyncio.Event may
    be set, and a poll leaves no handler behind on a peer connection.
    """
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline and not (stop and stop.is_set()):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return done()


async def _first_frame(session: webrtc.WhepSession, stop: asyncio.Event) -> bool:
    """Whether a frame arrives within `FIRST_FRAME_S` (or before the run stops)."""
    return await _within(FIRST_FRAME_S, lambda: session.stats.frames > 0, stop)


async def _connected(session: webrtc.WhipSession) -> bool:
    """Whether the published session's connection comes up within `CONNECT_S`."""
    pc = session.pc
    await _within(CONNECT_S, lambda: pc.connectionState in ("connected", "failed", "closed"), None)
    return pc.connectionState == "connected"


async def _offered(
    recorder: Recorder, step: str, offer: Callable[[], Awaitable[OfferedSession]]
) -> OfferedSession:
    """`offer()` (a WHIP or WHEP offer), made again after a 503 from a loaded media
    shard, as players do, up to `BUSY_ATTEMPTS` times; the report counts the retries."""
    retries = 0
    while True:
        try:
            return await offer()
        except webrtc.MediaRefused as exc:
            if exc.status != 503 or retries == BUSY_ATTEMPTS:
                raise
            retries += 1
            recorder.busy_retries[step] += 1
            await asyncio.sleep(_busy_pause(exc.retry_after, retries))


def _busy_pause(retry_after: float | None, attempt: int) -> float:
    """How long a client waits after a 503: the server's Retry-After when it sent one
    (RFC 9725 clients honour it, and so does the app), else a growing pause; jittered, so
    that refused clients do not all come back at the same moment."""
    base = retry_after if retry_after is not None else BUSY_PAUSE_S * attempt
    return min(base, 10.0) * random.uniform(0.75, 1.5)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    """The Retry-After of a refusal, in seconds (the form our servers send), else None."""
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


async def _status(response: aiohttp.ClientResponse, expected: int) -> tuple[bool, str]:
    if response.status == expected:
        await response.read()
        return True, ""
    try:
        body = await response.json(content_type=None)
        reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    except (ValueError, aiohttp.ClientError):
        reason = ""
    return False, f"{response.status} {reason}".strip()


@dataclass
class Candidate:
    number: str
    scenario: Scenario
    assets: Assets
    recorder: Recorder
    media: bool
    switch_face_at: float | None = None
    token: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    publisher: webrtc.WhipSession | None = None
    presence: PresenceSocket | None = None  # heartbeats on it, else by HTTP POST
    retry_after: float | None = None  # of the last face step refused

    @property
    def name(self) -> str:
        return f"candidate-{self.number}"

    async def run(
        self, http: aiohttp.ClientSession, duration: float, heartbeat_every: float
    ) -> None:
        step = self.recorder.timed
        if not await step(self.name, "login", self._login(http)):
            return
        for name, call in self._before_join(http):
            if not await step(self.name, name, call()):
                return
        if not await step(
            self.name, "join", self._post(http, "/v1/me/join", {"network": "wifi"}, 200)
        ):
            return
        self.recorder.presence(+1)
        try:
            if self.media:
                await self._publish(http, "whip_publish", "a")
            await self._heartbeats(http, duration, heartbeat_every)
            if self.presence is not None:
                await self.presence.close()  # the app closes it as the candidate leaves
            await step(self.name, "client_logs", self._logs(http))
            await step(self.name, "photo_upload", self._photo(http))
        finally:
            if self.presence is not None:
                await self.presence.close()
            if self.publisher is not None:
                await self.publisher.close(http, self.headers)
                self.publisher = None
            self.recorder.presence(-1)
        await step(self.name, "exit", self._exit(http))

    def _before_join(
        self, http: aiohttp.ClientSession
    ) -> list[tuple[str, Callable[[], Awaitable[tuple[bool, str]]]]]:
        steps: list[tuple[str, Callable[[], Awaitable[tuple[bool, str]]]]] = [
            ("consent", lambda: self._post(http, "/v1/me/consent", {"policy_version": "1"}, 204)),
            ("version_check", lambda: self._version_check(http)),
            ("network_check", lambda: self._get(http, "/v1/me/network-advice?network=wifi")),
        ]
        if self.media:
            steps += [
                ("verify", lambda: self._patiently("verify", lambda: self._verify(http))),
                ("liveness", lambda: self._patiently("liveness", lambda: self._liveness(http))),
            ]
        return steps

    async def _patiently(
        self, step: str, call: Callable[[], Awaitable[tuple[bool, str]]]
    ) -> tuple[bool, str]:
        """`call`, asked again after a pause while the answer is 503 (busy), as the app
        does; the report counts those retries per step."""
        ok, reason = await call()
        for attempt in range(1, BUSY_ATTEMPTS):
            if ok or not reason.startswith("503"):
                break
            self.recorder.busy_retries[step] += 1
            await asyncio.sleep(_busy_pause(self.retry_after, attempt))
            ok, reason = await call()
        return ok, reason

    async def _answer(self, response: aiohttp.ClientResponse, expected: int) -> tuple[bool, str]:
        """`_status`, keeping a refusal's Retry-After for `_patiently`."""
        self.retry_after = _retry_after(response)
        return await _status(response, expected)

    async def _login(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        body = {"exam_no": self.scenario.exam_id, "candidate_no": self.number}
        async with http.post("/v1/sessions", json=body) as response:
            if response.status != 201:
                return await _status(response, 201)
            self.token = (await response.json())["token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}
        return True, ""

    async def _post(
        self, http: aiohttp.ClientSession, path: str, body: Any, expected: int
    ) -> tuple[bool, str]:
        async with http.post(path, json=body, headers=self.headers) as response:
            return await _status(response, expected)

    async def _get(self, http: aiohttp.ClientSession, path: str) -> tuple[bool, str]:
        async with http.get(path, headers=self.headers) as response:
            return await _status(response, 200)

    async def _image(
        self, http: aiohttp.ClientSession, method: str, path: str, image: bytes, expected: int
    ) -> tuple[bool, str]:
        headers = {**self.headers, "Content-Type": "image/jpeg"}
        async with http.request(method, path, data=image, headers=headers) as response:
            return await self._answer(response, expected)

    async def _version_check(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        body = {"platform": "windows", "version": "1.0.0", "device_id": f"device-{self.number}"}
        return await self._post(http, "/v1/updates/check", body, 200)

    async def _verify(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        headers = {**self.headers, "Content-Type": "image/jpeg"}
        async with http.post(
            "/v1/me/verification", data=self.assets.live_jpeg, headers=headers
        ) as response:
            if response.status != 200:
                return await self._answer(response, 200)
            answer = await response.json()
        return bool(answer.get("match")), "" if answer.get("match") else "no_match"

    async def _liveness(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        async with http.post("/v1/me/liveness/challenges", headers=self.headers) as response:
            if response.status != 201:
                return await self._answer(response, 201)
            challenge = await response.json()
        frames = self.assets.liveness.get(challenge["movement"])
        if frames is None:
            return False, f"no frames for {challenge['movement']}"
        body = {"frames": [base64.b64encode(f).decode() for f in frames]}
        async with http.post(
            f"/v1/me/liveness/challenges/{challenge['nonce']}", json=body, headers=self.headers
        ) as response:
            if response.status != 200:
                return await self._answer(response, 200)
            result = await response.json()
        return bool(result.get("passed")), str(result.get("reason", ""))

    async def _publish(self, http: aiohttp.ClientSession, step: str, showing: str | None) -> None:
        """Publish the camera (showing face `showing`) as `self.publisher`, timed as `step`."""

        async def publish() -> tuple[bool, str]:
            """Timed until the camera's connection is up, not just answered."""
            for attempt in range(BUSY_ATTEMPTS + 1):
                session = await _offered(
                    self.recorder,
                    step,
                    lambda: webrtc.whip_publish(
                        http,
                        "/v1/whip/me/camera",
                        self.headers,
                        self.scenario.hosts,
                        self.assets.clips,
                        showing,
                    ),
                )
                if await _connected(session):
                    self.publisher = session
                    return True, ""
                await session.close(http, self.headers)
                if attempt < BUSY_ATTEMPTS:
                    self.recorder.busy_retries[step] += 1
            return False, "not_connected"

        await self.recorder.timed(self.name, step, publish())

    async def _keep_publishing(self, http: aiohttp.ClientSession) -> None:
        """A camera whose connection failed, or was closed by the server, is ended and
        published again, as the app does (and as a media shard's restart requires)."""
        publisher = self.publisher
        if publisher is None or publisher.pc.connectionState not in ("failed", "closed"):
            return
        self.publisher = None
        self.recorder.connections_lost[publisher.pc.connectionState] += 1
        showing = publisher.camera.showing if publisher.camera else "a"
        await publisher.close(http, self.headers)
        await self._publish(http, "whip_republish", showing)

    async def _heartbeats(
        self,
        http: aiohttp.ClientSession,
        duration: float,
        every: float,
    ) -> None:
        end = time.monotonic() + duration
        began = time.monotonic()
        for _ in range(int(duration / every) + 2):
            if time.monotonic() >= end:
                return
            await self._keep_publishing(http)
            publisher = self.publisher
            switch = self.switch_face_at
            if (
                publisher
                and publisher.camera
                and switch is not None
                and time.monotonic() - began >= switch
            ):
                publisher.camera.show("b")
                self.switch_face_at = None
            beat = (
                self.presence.beat(self.headers)
                if self.presence is not None
                else self._post(http, "/v1/me/heartbeat", {}, 200)
            )
            await self.recorder.timed(self.name, "heartbeat", beat)
            await asyncio.sleep(min(every, max(0.0, end - time.monotonic())))

    async def _logs(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        now = datetime.now(UTC).isoformat()
        device = {
            "device_id": f"device-{self.number}",
            "os": "windows",
            "os_version": "11",
            "model": "laptop",
        }
        common = {**device, "time": now, "app_version": "1.0.0"}
        records = [
            {"id": uuid.uuid4().hex, "kind": "log", "level": "info", "message": "joined", **common},
            {
                "id": uuid.uuid4().hex,
                "kind": "crash",
                "level": "fatal",
                "message": "renderer crashed",
                "stack": "at render (app.js:10)",
                **common,
            },
        ]
        headers = {**self.headers, "Content-Type": "application/x-ndjson"}
        data = "\n".join(json.dumps(r) for r in records)
        async with http.post("/v1/logs", data=data, headers=headers) as response:
            return await _status(response, 202)

    async def _photo(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        return await self._image(http, "POST", "/v1/uploads/photos", self.assets.photo_jpeg, 201)

    async def _exit(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        async with http.delete("/v1/sessions/current", headers=self.headers) as response:
            return await _status(response, 204)


@dataclass
class Proctor:
    room: str
    username: str
    password: str
    scenario: Scenario
    recorder: Recorder
    watch: list[str] = field(default_factory=list)  # candidate ids publishing in this room
    headers: dict[str, str] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    present: dict[str, asyncio.Event] = field(default_factory=dict)  # watched cid -> seen
    sessions: list[tuple[str, webrtc.WhepSession]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"proctor-{self.room}"

    async def run(self, http: aiohttp.ClientSession, duration: float, stop: asyncio.Event) -> None:
        if not await self.recorder.timed(self.name, "staff_login", self._login(http)):
            return
        stream = asyncio.ensure_future(self._events(http, stop))
        sessions = self.sessions
        sampling = asyncio.ensure_future(self._sample_tracks(stop))

        async def attach(cid: str) -> tuple[bool, str]:
            """Watch the camera until its first frame (404 until the candidate has
            published it). A session that shows nothing for `FIRST_FRAME_S` is dropped
            and asked for again, as a player does when its connection never comes up."""
            url = f"/v1/whep/exams/{self.scenario.exam_id}/rooms/{self.room}/candidates/{cid}"
            busy = 0
            while True:
                try:
                    session = await _offered(
                        self.recorder,
                        "whep_watch",
                        lambda: webrtc.whep_watch(http, url, self.headers, self.scenario.hosts),
                    )
                except webrtc.MediaRefused as exc:
                    if stop.is_set() or exc.status != 404:
                        raise
                    await asyncio.sleep(WATCH_RETRY_S)
                    continue
                if await _first_frame(session, stop) or stop.is_set() or busy == BUSY_ATTEMPTS:
                    sessions.append((cid, session))
                    return True, ""
                busy += 1
                self.recorder.busy_retries["whep_watch"] += 1
                await session.close(http, self.headers)

        async def watch(cid: str) -> None:
            """As a console tile: once the room's events show the candidate present,
            watch their camera; `whep_watch` times that part."""
            present = asyncio.ensure_future(self.present[cid].wait())
            ended = asyncio.ensure_future(stop.wait())
            await asyncio.wait({present, ended}, return_when=asyncio.FIRST_COMPLETED)
            present.cancel()
            ended.cancel()
            if self.present[cid].is_set():
                await self.recorder.timed(self.name, "whep_watch", attach(cid))

        self.present = {cid: asyncio.Event() for cid in self.watch}
        await asyncio.gather(*(watch(cid) for cid in self.watch))
        await stop.wait()
        await sampling
        for cid, session in sessions:
            rtp = await session.rtp()
            elapsed = max(1e-6, time.monotonic() - session.started)
            self.recorder.tracks.append({
                "room": self.room, "candidate": cid, "frames": session.stats.frames,
                "audio_frames": session.stats.audio_frames, "freezes": session.stats.freezes,
                "first_frame_s": session.stats.first_frame_s, "packets": rtp["packets"],
                "lost": rtp["lost"], "kbps": round(rtp["bytes"] * 8 / elapsed / 1000, 1),
                "kinds": sorted(session.stats.tracks),
            })  # fmt: skip
            await session.close(http, self.headers)
        stream.cancel()

    async def _sample_tracks(self, stop: asyncio.Event) -> None:
        """Each watched track's bitrate and loss over the last interval, every
        `TRACK_SAMPLE_S` until the run stops (and once as it stops)."""
        last: dict[int, tuple[float, int, int, int]] = {}  # session -> (when, packets, lost, bytes)
        while len(self.recorder.track_samples) < MAX_TRACK_SAMPLES:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TRACK_SAMPLE_S)
            for cid, session in list(self.sessions):
                rtp = await session.rtp()
                now = time.monotonic()
                since, packets, lost, sent = last.get(id(session), (session.started, 0, 0, 0))
                last[id(session)] = (now, rtp["packets"], rtp["lost"], rtp["bytes"])
                got, missed = rtp["packets"] - packets, rtp["lost"] - lost
                loss = round(100 * missed / (got + missed), 2) if got + missed > 0 else 0.0
                self.recorder.track_samples.append({
                    "t": round(time.time() - self.recorder.epoch, 3), "room": self.room,
                    "candidate": cid,
                    "kbps": round((rtp["bytes"] - sent) * 8 / max(1e-6, now - since) / 1000, 1),
                    "loss_pct": loss,
                })  # fmt: skip
            if stop.is_set():
                return

    async def _login(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        body = {"username": self.username, "password": self.password}
        async with http.post("/v1/staff/sessions", json=body) as response:
            if response.status != 201:
                return await _status(response, 201)
            self.headers = {"Authorization": f"Bearer {(await response.json())['token']}"}
        return True, ""

    async def _events(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        url = f"/v1/exams/{self.scenario.exam_id}/rooms/{self.room}/events"
        last = ""
        for _attempt in range(100):  # reconnects, resuming where it stopped
            if stop.is_set():
                return
            headers = {**self.headers, **({"Last-Event-ID": last} if last else {})}
            try:
                async with http.get(
                    url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)
                ) as response:
                    fields: dict[str, str] = {}
                    async for raw in response.content:
                        line = raw.decode().rstrip("\r\n")
                        if line == "" and "data" in fields:
                            last = fields.get("id", last)
                            self._seen(fields.get("event", "message"), json.loads(fields["data"]))
                            fields = {}
                        elif line and not line.startswith(":"):
                            name, _, value = line.partition(":")
                            fields[name] = value.removeprefix(" ")
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(random.uniform(0.5, 1.5))

    def _seen(self, kind: str, data: dict[str, Any]) -> None:
        if sum(self.events.values()) >= MAX_EVENTS:
            return
        self.events[kind] += 1
        seen = self.present.get(str(data.get("cid")))
        if seen is not None and kind in ("joined", "heartbeat"):
            seen.set()
        if kind == "incident":
            self.recorder.incidents_raised[str(data.get("incident"))] += 1

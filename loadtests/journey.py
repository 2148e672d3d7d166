"""The simulated candidate's and proctor's exam day, every step timed.

A candidate: login → consent → version check → network check → (biometric consent, 1:1 face
verification against the face the organiser enrolled, liveness challenge) → join →
(WHIP publish of a camera that shows a real face, plus audio) → heartbeats → client
logs and a crash report → photo upload → exit. A proctor: login → room event stream →
WHEP watch of the room's publishing candidates, counting what arrives (and sampling
each track's bitrate and loss) → talk-back to the room when its candidates listen.
A candidate given behaviours (loadtests.behaviours) also does them at set points of its
stay, each timed as a step and counted as an outcome; a camera honours the room's
`reconnect` by publishing again at once, told as the app is told: in a beat's answer on
its presence socket, or by `GET /v1/me/room` after an HTTP beat.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp

from loadtests import webrtc
from loadtests.behaviours import AT, AWAY_S, UNSUPPORTED, Outcomes
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
# A `network_switch` moves to this loopback address, as from Wi-Fi to cellular.
SWITCH_HOSTS = ("127.0.0.5",)
# A `talkback` listener waits this long (fraction of its stay) for the proctor's voice.
TALKBACK_WAIT = 0.6
# A `face_fail` gives up after this many verifications without a review (the exam's
# `face_attempts` is at most 10).
FACE_ATTEMPTS_MAX = 10
HAND = {"kind": "hand"}
BIOMETRIC, ALLOW = "/v1/me/consents/biometric", {"allow": True}
RECONNECT = "reconnect"  # the journal event of a media drain (cluster.drain)
OfferedSession = TypeVar("OfferedSession", webrtc.WhipSession, webrtc.WhepSession)

# The step a request is sent for (set by `Recorder.timed`): where `GatewayBusy` counts
# the requests it sent again.
CURRENT_STEP: ContextVar[str] = ContextVar("current_step", default="setup")
GATEWAY_BUSY = "gateway_busy"  # api.limits.BUSY
GATEWAY_BUSY_PATIENCE_S = 60.0  # as the pages (web/common/http.js)
DOOR_PAUSE_MAX_S = 8.0

# A wait may end this much before its deadline (the loop's clock resolution): what is due
# by then counts as due, so that an early wake does not spend a turn doing nothing.
EARLY_WAKE_S = 0.01


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
    behaviours: Outcomes = field(default_factory=Outcomes)
    # The share that ran these candidates: where, how many, its CPU (see loadtests.parts)
    share: dict[str, Any] = field(default_factory=dict)
    # Per share merged in: that share's row and its own loop lag (see fleet.merge)
    shares: list[tuple[dict[str, Any], list[float]]] = field(default_factory=list)
    # The `reconnect` events (room/id) this share's cameras were told of.
    reconnects_told: set[str] = field(default_factory=set)
    arrived: int = 0  # candidates whose arrival time has come (their journey has begun)
    _online_now: int = 0

    async def timed(self, actor: str, step: str, call: Awaitable[tuple[bool, str]]) -> bool:
        began = time.time()
        current = CURRENT_STEP.set(step)
        try:
            ok, reason = await call
        except webrtc.MediaRefused as exc:
            ok, reason = False, f"http_{exc.status} {exc.reason}".strip()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, reason = False, type(exc).__name__
        finally:
            CURRENT_STEP.reset(current)
        self.steps.append(Step(actor, step, began - self.epoch, time.time() - began, ok, reason))
        return ok

    @property
    def in_rooms(self) -> int:
        return self._online_now

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


class GatewayBusy:
    """An aiohttp client middleware: a request a full gateway refused at the door (503
    `gateway_busy`: nothing ran) is sent again as it was, as the pages do
    (`web/common/http.js`): for up to `GATEWAY_BUSY_PATIENCE_S`, first after the
    Retry-After, then twice as long at each refusal (`door_pause`). `retries` counts
    those per step (`CURRENT_STEP`); the step's time includes the waits."""

    def __init__(self, retries: Counter[str]) -> None:
        self.retries = retries

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        began = time.monotonic()
        response = await handler(request)
        attempt = 1
        while await _refused_at_the_door(response):
            pause = door_pause(_retry_after(response), attempt)
            if time.monotonic() + pause - began > GATEWAY_BUSY_PATIENCE_S:
                break
            self.retries[CURRENT_STEP.get()] += 1
            response.release()
            await asyncio.sleep(pause)
            response = await handler(request)
            attempt += 1
        return response


def door_pause(retry_after: float | None, attempt: int) -> float:
    """The wait before sending a request refused as `gateway_busy` again: the Retry-After
    (else 1 s), doubled at each refusal up to `DOOR_PAUSE_MAX_S`, plus up to half as much
    again, so that a refused crowd thins out instead of coming back together."""
    first = retry_after if retry_after is not None and retry_after > 0 else 1.0
    doubled: float = first * 2.0 ** (attempt - 1)
    return min(doubled, DOOR_PAUSE_MAX_S) * random.uniform(1.0, 1.5)


async def _refused_at_the_door(response: aiohttp.ClientResponse) -> bool:
    if response.status != 503:
        return False
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return False
    return isinstance(body, dict) and body.get("reason") == GATEWAY_BUSY


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
    behaviours: tuple[str, ...] = ()  # see loadtests.behaviours
    switch_hosts: tuple[str, ...] = SWITCH_HOSTS  # the network a `network_switch` moves to
    # Set when the room is told to reconnect (a media drain): the camera is published again.
    reconnect_asked: asyncio.Event = field(default_factory=asyncio.Event)
    reconnect_seen: str | None = None  # the last `reconnect` id heard of
    # When the candidate asked to join (Unix ms): a `reconnect` journaled after it is for
    # this stay's media, one before it is not (the page keeps the join's event id alike).
    joined_ms: int = 0
    extra: dict[str, tuple[webrtc.WhipSession | webrtc.WhepSession, dict[str, str]]] = field(
        default_factory=dict
    )  # screen, side, talkback listener -> (session, the headers that end it)
    listening: asyncio.Task[None] | None = None
    face_answer: dict[str, Any] = field(default_factory=dict)

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
        if "face_fail" in self.behaviours:
            ok = await step(self.name, "face_fail", self._face_fail(http))
            self._outcome("face_fail", ok)
        self.joined_ms = int(time.time() * 1000)
        joined = await step(
            self.name, "join", self._post(http, "/v1/me/join", {"network": "wifi"}, 200)
        )
        if "late" in self.behaviours:
            self._outcome("late", joined)
        if not joined:
            return
        self.recorder.presence(+1)
        if self.presence is not None:
            self.presence.on_reconnect = self._told
        try:
            if self.media:
                await self._publish(http, "whip_publish", "a")
                await self._extras(http, duration)
            await self._heartbeats(http, duration, heartbeat_every)
            if self.presence is not None:
                await self.presence.close()  # the app closes it as the candidate leaves
            await step(self.name, "client_logs", self._logs(http))
            await step(self.name, "photo_upload", self._photo(http))
        finally:
            await self._end_media(http)
            self.recorder.presence(-1)
        await step(self.name, "exit", self._exit(http))

    def _outcome(self, behaviour: str, ok: bool) -> None:
        """Count the behaviour by the step just timed (its reason when it failed)."""
        reason = "" if ok else self.recorder.steps[-1].reason
        if reason.split(" ", 1)[0] in ("404", "405"):
            reason = UNSUPPORTED
        self.recorder.behaviours.record(behaviour, ok, reason)

    async def _end_media(self, http: aiohttp.ClientSession) -> None:
        if self.presence is not None:
            await self.presence.close()
        if self.listening is not None:
            self.listening.cancel()
            await asyncio.gather(self.listening, return_exceptions=True)
            self.listening = None
        for session, headers in self.extra.values():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                await session.close(http, headers)
        self.extra.clear()
        if self.publisher is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                await self.publisher.close(http, self.headers)
            self.publisher = None

    async def _extras(self, http: aiohttp.ClientSession, duration: float) -> None:
        """The media behaviours that start with the camera: a shared screen, a paired side
        camera, and (in the background, since the proctor may not talk yet) talk-back."""
        if "screen_share" in self.behaviours:
            ok = await self.recorder.timed(
                self.name, "screen_share", self._publish_extra(http, "screen", self.headers)
            )
            self._outcome("screen_share", ok)
        if "side_camera" in self.behaviours:
            ok = await self.recorder.timed(self.name, "side_camera", self._side_camera(http))
            self._outcome("side_camera", ok)
        if "talkback" in self.behaviours:
            self.listening = asyncio.ensure_future(
                self._listen_talkback(http, TALKBACK_WAIT * duration)
            )

    async def _publish_extra(
        self, http: aiohttp.ClientSession, source: str, headers: dict[str, str]
    ) -> tuple[bool, str]:
        """Publish `source` (a screen, a phone's view: an empty frame, no audio) until its
        connection is up."""
        session = await _offered(
            self.recorder,
            source,
            lambda: webrtc.whip_publish(
                http, f"/v1/whip/me/{source}", headers, self.scenario.hosts,
                self.assets.clips, None, audio=False,
            ),
        )  # fmt: skip
        self.extra[source] = (session, headers)
        return (True, "") if await _connected(session) else (False, "not_connected")

    async def _side_camera(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        """Pair a phone: the candidate asks for a token (the QR code), the phone publishes
        `side` with it and its own device id."""
        async with http.post("/v1/me/pairing", headers=self.headers) as response:
            if response.status != 201:
                return await _status(response, 201)
            token = (await response.json())["token"]
        phone = {"Authorization": f"Bearer {token}", "Examday-Device": secrets.token_urlsafe(24)}
        return await self._publish_extra(http, "side", phone)

    async def _listen_talkback(self, http: aiohttp.ClientSession, within: float) -> None:
        async def listen() -> tuple[bool, str]:
            """Until the proctor's voice arrives (404 while nobody talks to the room)."""
            deadline = time.monotonic() + within
            while True:
                try:
                    session = await _offered(
                        self.recorder,
                        "talkback_listen",
                        lambda: webrtc.whep_watch(
                            http, "/v1/whep/me/talkback", self.headers, self.scenario.hosts,
                            ("audio",),
                        ),
                    )  # fmt: skip
                except webrtc.MediaRefused as exc:
                    if exc.status != 404 or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(WATCH_RETRY_S)
                    continue
                break
            self.extra["talkback"] = (session, self.headers)
            heard = await _within(
                max(1.0, deadline - time.monotonic()), lambda: session.stats.audio_frames > 0, None
            )
            return (True, "") if heard else (False, "no_audio")

        ok = await self.recorder.timed(self.name, "talkback_listen", listen())
        self._outcome("talkback", ok)

    async def _face_fail(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        """Show another person's face until the last attempt fails: the server then opens
        a manual review for the room's proctors (status `review`)."""
        headers = {**self.headers, "Content-Type": "image/jpeg"}
        for _attempt in range(FACE_ATTEMPTS_MAX):

            async def verify() -> tuple[bool, str]:
                async with http.post(
                    "/v1/me/verification", data=self.assets.other_jpeg, headers=headers
                ) as response:
                    if response.status != 200:
                        return await self._answer(response, 200)
                    self.face_answer = await response.json()
                return True, ""

            ok, reason = await self._patiently("face_fail", verify)
            if not ok:
                return False, reason
            answer = self.face_answer
            if answer.get("match"):
                return False, "matched"
            if answer.get("status") == "review":
                return True, ""
            if not answer.get("attempts_left"):
                return False, f"no_review {answer.get('status')}"
        return False, "too_many_attempts"

    def _before_join(
        self, http: aiohttp.ClientSession
    ) -> list[tuple[str, Callable[[], Awaitable[tuple[bool, str]]]]]:
        steps: list[tuple[str, Callable[[], Awaitable[tuple[bool, str]]]]] = [
            ("consent", lambda: self._post(http, "/v1/me/consent", {"policy_version": "1"}, 204)),
            ("version_check", lambda: self._version_check(http)),
            ("network_check", lambda: self._get(http, "/v1/me/network-advice?network=wifi")),
        ]
        if self.media or "face_fail" in self.behaviours:
            # Face templates are compared only with the separate biometric consent.
            steps.append(("biometric_consent", lambda: self._post(http, BIOMETRIC, ALLOW, 204)))
        if self.media and "face_fail" not in self.behaviours:
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
        began = time.monotonic()
        end = began + duration
        due = sorted((began + AT[name] * duration, name) for name in self.behaviours if name in AT)
        # A beat each `every`, never sooner: a wake for a behaviour or a `reconnect` does not
        # beat again (the server counts beats per minute, as the app's own timer keeps them).
        next_beat = began
        # Bounded: a beat each `every`, and a wake for each behaviour or `reconnect`, each
        # of them twice over (a timer may wake a little early: `EARLY_WAKE_S` covers it).
        for _ in range(2 * (int(duration / every) + 8 + 2 * len(due))):
            # Behaviours come first: one that a long one before it (an ICE restart on a
            # loaded machine) pushed past the stay's end still happens, late, not never.
            while due and due[0][0] <= time.monotonic() + EARLY_WAKE_S:
                await self._act(http, due.pop(0)[1], duration)
            if self.reconnect_asked.is_set():  # told during the stay: done, even if late
                await self._reconnect_as_asked(http)
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
            if time.monotonic() + EARLY_WAKE_S >= next_beat:
                beat = (
                    self.presence.beat(self.headers)
                    if self.presence is not None
                    else self._post(http, "/v1/me/heartbeat", {}, 200)
                )
                await self.recorder.timed(self.name, "heartbeat", beat)
                # From the answer, as the app's timer: beats that left `every` apart may
                # arrive closer together, under the server's minimum interval.
                next_beat = time.monotonic() + every
                if self.presence is None and self.media:
                    await self._read_room(http)
            # Until the next beat, the next behaviour, or the server's `reconnect`.
            wake = min([next_beat, end] + [at for at, _ in due[:1]])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.reconnect_asked.wait(), max(0.0, wake - time.monotonic())
                )

    async def _act(self, http: aiohttp.ClientSession, behaviour: str, duration: float) -> None:
        step = self.recorder.timed
        if behaviour == "raise_hand":
            ok = await step(self.name, "raise_hand", self._post(http, "/v1/me/help", HAND, 201))
        elif behaviour == "network_switch":
            ok = await step(self.name, "ice_restart", self._switch_network(http))
        elif behaviour == "reconnect":
            ok = await step(self.name, "reconnect", self._drop_and_republish(http))
        else:
            ok = await step(self.name, "leave_return", self._leave_and_return(http, duration))
        self._outcome(behaviour, ok)

    async def _switch_network(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        """Wi-Fi to cellular: the camera's session moves by an ICE restart and goes on."""
        if self.publisher is None:
            return False, "no_camera"
        await self.publisher.restart_ice(http, self.headers, self.switch_hosts)
        return True, ""

    async def _drop_and_republish(self, http: aiohttp.ClientSession) -> tuple[bool, str]:
        """The camera's connection is lost (closed here, no DELETE: the network went) and
        published again, as the app does; the new session replaces the old one."""
        if self.publisher is None:
            return False, "no_camera"
        lost, self.publisher = self.publisher, None
        await lost.pc.close()
        return await self._republish(http, lost)

    async def _republish(
        self, http: aiohttp.ClientSession, old: webrtc.WhipSession
    ) -> tuple[bool, str]:
        await self._publish(http, "whip_republish", old.camera.showing if old.camera else "a")
        return (True, "") if self.publisher is not None else (False, "not_republished")

    def _told(self, reconnect: dict[str, Any]) -> None:
        """The server's `reconnect` (a media drain), heard on the candidate's channel."""
        told = str(reconnect.get("id", ""))
        if not self.media or told == self.reconnect_seen:
            return
        self.reconnect_seen = told
        if reconnect.get("plane", "media") == "media":
            rooms = self.scenario.rooms.items()
            room = next((room for room, numbers in rooms if self.number in numbers), "")
            self.recorder.reconnects_told.add(f"{room}/{told}")
            self.reconnect_asked.set()

    async def _read_room(self, http: aiohttp.ClientSession) -> None:
        """What the app reads after an HTTP beat: the room's last `reconnect` for us, told
        when it was journaled after the join (by the stream id's milliseconds: the
        generator's clock against Redis's, one machine here) and not heard of already."""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ValueError):
            async with http.get("/v1/me/room", headers=self.headers) as response:
                if response.status != 200:
                    return
                told = (await response.json()).get("reconnect")
            if told is not None and int(str(told.get("id", "0")).split("-")[0]) > self.joined_ms:
                self._told(told)

    async def _reconnect_as_asked(self, http: aiohttp.ClientSession) -> None:
        """The room was told to reconnect (its media shard drains): publish again now,
        not when the shard stops under the camera."""
        self.reconnect_asked.clear()
        if self.publisher is None:
            return
        old, self.publisher = self.publisher, None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            await old.close(http, self.headers)
        ok = await self.recorder.timed(self.name, "server_reconnect", self._republish(http, old))
        self._outcome("server_reconnect", ok)

    async def _leave_and_return(
        self, http: aiohttp.ClientSession, duration: float
    ) -> tuple[bool, str]:
        """Log out (media ended, as the app does), stay away a moment, log in and join
        again, camera included."""
        showing = self.publisher.camera.showing if self.publisher and self.publisher.camera else "a"
        await self._end_media(http)
        ok, reason = await self._exit(http)
        if not ok:
            return False, f"leave {reason}"
        self.recorder.presence(-1)
        await asyncio.sleep(min(AWAY_S, duration / 10))
        ok, reason = await self._login(http)
        if ok:
            ok, reason = await self._post(http, "/v1/me/consent", {"policy_version": "1"}, 204)
        if ok:
            self.joined_ms = int(time.time() * 1000)
            ok, reason = await self._post(http, "/v1/me/join", {"network": "wifi"}, 200)
        self.recorder.presence(+1)  # balanced by the departure, whatever happened
        if not ok:
            return False, f"return {reason}"
        if self.media:
            await self._publish(http, "whip_publish", showing)
            if self.publisher is None:
                return False, "camera_not_back"
        return True, ""

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
    # Talk to the whole room (a tone, by WHIP talkback) for its `talkback` listeners.
    talkback: webrtc.Clips | None = None

    @property
    def name(self) -> str:
        return f"proctor-{self.room}"

    async def run(self, http: aiohttp.ClientSession, duration: float, stop: asyncio.Event) -> None:
        if not await self.recorder.timed(self.name, "staff_login", self._login(http)):
            return
        stream = asyncio.ensure_future(self._events(http, stop))
        talking: list[webrtc.WhipSession] = []
        if self.talkback is not None:
            await self.recorder.timed(self.name, "talkback_publish", self._talk(http, talking))
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
        for voice in talking:
            await voice.close(http, self.headers)
        stream.cancel()

    async def _talk(
        self, http: aiohttp.ClientSession, talking: list[webrtc.WhipSession]
    ) -> tuple[bool, str]:
        assert self.talkback is not None
        clips = self.talkback
        url = f"/v1/whip/exams/{self.scenario.exam_id}/rooms/{self.room}/talkback"
        session = await _offered(
            self.recorder,
            "talkback_publish",
            lambda: webrtc.whip_publish(
                http, url, self.headers, self.scenario.hosts, clips, None, video=False
            ),
        )
        talking.append(session)
        return (True, "") if await _connected(session) else (False, "not_connected")

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
        await follow_events(http, url, self.headers, stop, self._seen)

    def _seen(self, kind: str, data: dict[str, Any]) -> None:
        if sum(self.events.values()) >= MAX_EVENTS:
            return
        self.events[kind] += 1
        seen = self.present.get(str(data.get("cid")))
        if seen is not None and kind in ("joined", "heartbeat"):
            seen.set()
        if kind == "incident":
            self.recorder.incidents_raised[str(data.get("incident"))] += 1


async def follow_events(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    stop: asyncio.Event,
    seen: Callable[[str, dict[str, Any]], None],
) -> None:
    """A room's event stream (SSE) until `stop`, each event to `seen(kind, data)`;
    reconnected where it stopped (`Last-Event-ID`) when it ends."""
    last = ""
    for _attempt in range(100):
        if stop.is_set():
            return
        asked = {**headers, **({"Last-Event-ID": last} if last else {})}
        try:
            async with http.get(
                url, headers=asked, timeout=aiohttp.ClientTimeout(total=None)
            ) as response:
                fields: dict[str, str] = {}
                async for raw in response.content:
                    line = raw.decode().rstrip("\r\n")
                    if line == "" and "data" in fields:
                        last = fields.get("id", last)
                        seen(fields.get("event", "message"), json.loads(fields["data"]))
                        fields = {}
                    elif line and not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
        except (aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(random.uniform(0.5, 1.5))

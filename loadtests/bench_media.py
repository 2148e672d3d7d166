"""CPU cost of forwarding one publisher to many viewers: aiortc's MediaRelay vs ours.

Both run, one after the other, in a separate SFU process whose CPU time alone
is measured; the synthetic publisher and viewers live in this process:

- relay: aiortc's examples' way, `MediaRelay`: the publisher's track is
  decoded once and re-encoded for every viewer;
- forward: `actors.media.sfu.Forwarder`, each RTP packet rewritten and sent on to
  every viewer (no recording, as in the figures before: frames are then not
  even assembled);
- with `--recording`, also forward-recording: the same while the publisher is
  recorded (frames assembled, segments muxed, then thrown away), as camera
  sessions are in production.

The publisher sends pre-encoded 320x240@15fps VP8 (so this process does not
encode either) and the viewers count frames without decoding them. The SFU
process runs the event loop a media shard runs on: Ray gives async actors
uvloop when it is installed (it is, with uvicorn[standard]).

The ways take turns for `--rounds` rounds (relay, forward, relay, forward...),
so that a change in the machine's speed during the run falls on both; the
figures are the median round's, and every round's ratio is printed.

With `--publishers N` (40 when no N is given) it measures ingest instead: the
forwarder's CPU per publisher-second while N publishers (the same clip, no
viewers, no recording) send to it, for each way of receiving UDP, in turns
as above:

- sockets: one ephemeral socket per peer connection (aioice's way, `udp_port` 0);
- port: one UDP port for the shard (`actors.media.aiortc.udp_mux`), its
  socket drained by one reader callback per wakeup (`udp_batch_reads`);
- port-unbatched: the same port read through an asyncio datagram transport,
  one `datagram_received` call per datagram.

    examday bench media [--json] [--viewers 10] [--seconds 8] [--rounds 3] [--recording]
    examday bench media --publishers [N] [--json] [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import multiprocessing
import multiprocessing.connection
import socket
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import psutil
from aiortc import RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from actors.media.aiortc import rtc
from actors.media.session import PublishSession
from actors.media.sfu import Forwarder
from infra.settings.media import MediaSettings
from loadtests.webrtc import FPS, HEIGHT, WIDTH, encode_vp8

LOOPBACK = ("127.0.0.1",)
BITRATE = 500_000  # aiortc's VP8 default, so both ways send alike
GOP = 2 * FPS
TIME_BASE = fractions.Fraction(1, 90000)


def encode_clip(frames: int = 10 * FPS) -> list[bytes]:
    """A moving, noisy 320x240 clip in VP8 at `BITRATE`, a keyframe every `GOP` frames."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]

    def images() -> Iterator[npt.NDArray[np.uint8]]:
        for i in range(frames):
            image = ((x + 4 * i) % 256 + (y // 2) + rng.integers(0, 24, (HEIGHT, WIDTH))) % 256
            channels = [image, (image + 85) % 256, (image + 170) % 256]
            yield np.stack(channels, axis=-1).astype(np.uint8)

    return encode_vp8(images(), bitrate=BITRATE, keyframe_every=GOP)


class ClipTrack(MediaStreamTrack):
    """Sends the pre-encoded clip in a loop, paced at `FPS`: no encoding here."""

    kind = "video"

    def __init__(self, clip: list[bytes]) -> None:
        super().__init__()
        self._clip = clip
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        self._start = self._start or time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._index / FPS - time.monotonic()))
        packet = av.Packet(self._clip[self._index % len(self._clip)])
        packet.pts = self._index * (90000 // FPS)
        packet.time_base = TIME_BASE
        self._index += 1
        return packet


class RelaySfu:
    """aiortc's MediaRelay way, as in its examples: decode once, encode per viewer."""

    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.pcs: list[rtc.ScopedPeerConnection] = []
        self.source: MediaStreamTrack | None = None

    async def publish(self, offer: str) -> str:
        pc = self._pc()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.source = track

        return await self._answer(pc, offer)

    async def subscribe(self, offer: str) -> str:
        assert self.source is not None, "subscribe after the publisher's track arrived"
        pc = self._pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        pc.addTrack(self.relay.subscribe(self.source))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()

    def _pc(self) -> rtc.ScopedPeerConnection:
        pc = rtc.ScopedPeerConnection(LOOPBACK)
        self.pcs.append(pc)
        return pc

    async def _answer(self, pc: rtc.ScopedPeerConnection, offer: str) -> str:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)


async def _discard(data: bytes, index: object) -> None:
    """A segment sink that stores nothing: only the recorder's own work is measured."""


class ForwardSfu:
    def __init__(self, recording: bool = False, **settings: Any) -> None:
        media = MediaSettings(recording_enabled=recording, max_sessions=10_000, **settings)
        self.forwarder = Forwarder(media, segment_sink=_discard)
        self.source = ""

    async def publish(self, offer: str) -> str:
        answer, session = await self.forwarder.publish(offer)
        self.source = session.id
        return answer

    async def subscribe(self, offer: str) -> str:
        answer, _ = await self.forwarder.subscribe(offer, [self.source])
        return answer

    def received(self) -> dict[str, int]:
        """RTP packets received so far, by publisher session."""
        return {
            s.id: sum(t.packets_in for t in s.tracks.values())
            for s in self.forwarder.sessions()
            if isinstance(s, PublishSession)
        }

    async def close(self) -> None:
        await self.forwarder.close()


# Ingest ways: the media settings of each (`udp_port` is filled in by the SFU process).
INGEST_WAYS: dict[str, dict[str, Any]] = {
    "sockets": {"udp_port": 0},
    "port": {"udp_batch_reads": True},
    "port-unbatched": {"udp_batch_reads": False},
}
PORT_SPAN = 64


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK[0], 0))
        return int(sock.getsockname()[1])


def _sfu(mode: str) -> RelaySfu | ForwardSfu:
    if mode == "relay":
        return RelaySfu()
    if mode.startswith("ingest-"):
        settings: dict[str, Any] = {"udp_port": _free_port(), "udp_port_span": PORT_SPAN}
        settings.update(INGEST_WAYS[mode.removeprefix("ingest-")])
        return ForwardSfu(**settings)
    return ForwardSfu(recording=mode == "forward-recording")


async def _serve(mode: str, conn: multiprocessing.connection.Connection) -> None:
    sfu = _sfu(mode)
    loop = asyncio.get_running_loop()
    while True:
        command, argument = await loop.run_in_executor(None, conn.recv)
        if command == "publish":
            conn.send(await sfu.publish(argument))
        elif command == "received":
            conn.send(sfu.received() if isinstance(sfu, ForwardSfu) else {})
        elif command == "sockets":
            conn.send(len(psutil.Process().net_connections(kind="udp")))
        elif command == "stats":
            conn.send(await sfu.forwarder.stats() if isinstance(sfu, ForwardSfu) else {})
        elif command == "subscribe":
            conn.send(await sfu.subscribe(argument))
        elif command == "cpu":
            conn.send(time.process_time())  # every thread of this process: decoders, encoders
        elif command == "stop":
            await sfu.close()
            conn.send(None)
            return


def sfu_process(mode: str, conn: multiprocessing.connection.Connection) -> None:
    try:
        import uvloop
    except ImportError:  # Ray falls back to asyncio's loop too
        asyncio.run(_serve(mode, conn))
    else:
        uvloop.run(_serve(mode, conn))


class Viewer:
    """A viewer that counts the frames it gets, without decoding them."""

    def __init__(self) -> None:
        self.pc = rtc.ScopedPeerConnection(LOOPBACK)
        self.frames = 0
        self.bytes = 0
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        rtc.tap_receiver(transceiver.receiver, self._on_frame, lambda: None)

    def _on_frame(self, codec: Any, frame: Any) -> None:
        self.frames += 1
        self.bytes += len(frame.data)


async def _ask(
    conn: multiprocessing.connection.Connection, command: str, argument: Any = None
) -> Any:
    conn.send((command, argument))
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def _offer(pc: rtc.ScopedPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def _all_receiving(audience: list[Viewer], within: float = 20.0) -> None:
    for _ in range(int(within * 10)):
        if all(viewer.frames for viewer in audience):
            return
        await asyncio.sleep(0.1)


async def _window(conn: multiprocessing.connection.Connection, seconds: float) -> float:
    """CPU seconds the SFU process used during the next `seconds`."""
    before = await _ask(conn, "cpu")
    await asyncio.sleep(seconds)
    return float(await _ask(conn, "cpu")) - float(before)


async def measure(
    mode: str, clip: list[bytes], viewers: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """One way, in a fresh SFU process: publisher alone first, then with `viewers` viewers."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=sfu_process, args=(mode, child))
    process.start()
    publisher = rtc.ScopedPeerConnection(LOOPBACK)
    audience = [Viewer() for _ in range(viewers)]
    try:
        publisher.addTransceiver(ClipTrack(clip), direction="sendonly")
        answer = await _ask(parent, "publish", await _offer(publisher))
        await publisher.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.sleep(warmup)  # connected, media flowing, the relay has its track
        ingest = await _window(parent, seconds / 2)
        for viewer in audience:
            answer = await _ask(parent, "subscribe", await _offer(viewer.pc))
            await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await _all_receiving(audience)
        await asyncio.sleep(warmup)
        frames0, bytes0 = sum(v.frames for v in audience), sum(v.bytes for v in audience)
        total = await _window(parent, seconds)
        frames1, bytes1 = sum(v.frames for v in audience), sum(v.bytes for v in audience)
        await _ask(parent, "stop")
    finally:
        for pc in [publisher, *(v.pc for v in audience)]:
            await pc.close()
        process.join(10)
        if process.is_alive():
            process.kill()
    ingest_per_s = ingest / (seconds / 2)
    return {
        "sfu_cpu_s": round(total, 3),
        # The brief's figure: all the SFU's CPU shared out over the forwarded streams.
        "cpu_per_stream_second": total / (viewers * seconds),
        # Receiving the publisher alone, and what each further viewer adds.
        "ingest_cpu_per_second": round(ingest_per_s, 5),
        "marginal_cpu_per_stream_second": round(
            max(0.0, total / seconds - ingest_per_s) / viewers, 5
        ),
        "delivered_fps_per_viewer": round((frames1 - frames0) / (viewers * seconds), 2),
        "kbps_per_viewer": round(8 * (bytes1 - bytes0) / (viewers * seconds) / 1000, 1),
        "viewers_receiving": sum(1 for v in audience if v.frames),
    }


def run(
    viewers: int = 10,
    seconds: float = 8.0,
    warmup: float = 2.0,
    recording: bool = False,
    rounds: int = 3,
) -> dict[str, Any]:
    """Measure both ways, `rounds` times in turn, with the same publisher and viewers."""
    clip = encode_clip()
    measured: list[tuple[float, dict[str, Any], dict[str, Any]]] = []  # (ratio, relay, forward)
    for _ in range(rounds):
        relay = asyncio.run(measure("relay", clip, viewers, seconds, warmup))
        forward = asyncio.run(measure("forward", clip, viewers, seconds, warmup))
        ratio = _ratio(relay["cpu_per_stream_second"], forward["cpu_per_stream_second"])
        measured.append((ratio, relay, forward))
    ratio, relay, forward = sorted(measured, key=lambda r: r[0])[(rounds - 1) // 2]
    recorded = (
        asyncio.run(measure("forward-recording", clip, viewers, seconds, warmup))
        if recording
        else None
    )
    streams_per_core = _ratio(1.0, forward["cpu_per_stream_second"])
    extra: dict[str, Any] = {}
    if recorded is not None:
        extra["forward_recording"] = recorded
        extra["ratio_recording"] = round(
            _ratio(relay["cpu_per_stream_second"], recorded["cpu_per_stream_second"]), 1
        )
    per_round = [(r, _ratio(1.0, f["cpu_per_stream_second"])) for r, _, f in measured]
    rounded = [way for _, *ways in measured for way in ways]
    for figures in rounded + ([recorded] if recorded else []):
        figures["cpu_per_stream_second"] = round(figures["cpu_per_stream_second"], 5)
    return {
        "stream": f"{WIDTH}x{HEIGHT}@{FPS}fps VP8 ~{BITRATE // 1000} kbps, one publisher",
        "viewers": viewers,
        "seconds": seconds,
        "rounds": rounds,
        "relay_decode_reencode": relay,
        "forward_no_transcode": forward,
        "ratio": round(ratio, 1),
        "ratio_per_round": [round(r, 1) for r, _ in per_round],
        "ratio_marginal": round(
            _ratio(
                relay["marginal_cpu_per_stream_second"],
                forward["marginal_cpu_per_stream_second"],
            ),
            1,
        ),
        "forwarded_streams_per_core": round(streams_per_core),
        "streams_per_core_per_round": [round(streams) for _, streams in per_round],
        "goal_ratio_10": ratio >= 10,
        "goal_100_streams_per_core": streams_per_core >= 100,
        **extra,
    }


async def measure_ingest(
    way: str, clip: list[bytes], publishers: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """One ingest way, in a fresh SFU process: `publishers` publishers, nothing else."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=sfu_process, args=(f"ingest-{way}", child))
    process.start()
    peers = [rtc.ScopedPeerConnection(LOOPBACK) for _ in range(publishers)]
    try:
        for pc in peers:
            pc.addTransceiver(ClipTrack(clip), direction="sendonly")
            answer = await _ask(parent, "publish", await _offer(pc))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        for _ in range(600):  # 60 s at most for every publisher's media to arrive
            if sum(1 for n in (await _ask(parent, "received")).values() if n) == publishers:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(warmup)
        sockets = int(await _ask(parent, "sockets"))
        before = await _ask(parent, "received")
        cpu = await _window(parent, seconds)
        after = await _ask(parent, "received")
        stats = await _ask(parent, "stats")
        await _ask(parent, "stop")
    finally:
        for pc in peers:
            await pc.close()
        process.join(10)
        if process.is_alive():
            process.kill()
    packets = sum(after.values()) - sum(before.values())
    # Per publisher-second of those that sent during the window: on a loaded machine some
    # may not have connected in time; how many did is reported next to the figure.
    sending = sum(1 for session, n in after.items() if n > before.get(session, 0))
    return {
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_publisher_second": round(1000 * cpu / (max(sending, 1) * seconds), 3),
        "cpu_us_per_packet": round(1e6 * cpu / packets, 1) if packets else None,
        "packets_per_second": round(packets / seconds),
        "publishers_sending": sending,
        "udp_sockets": sockets,
        # Sessions closed on the way (never connected in `connect_timeout_s`), mux drops.
        "sessions_closed": publishers - int(stats.get("live_sessions", publishers)),
        **{k: v for k, v in stats.items() if k.startswith("udp_mux_dropped")},
    }


def run_ingest(
    publishers: int = 40, seconds: float = 8.0, warmup: float = 2.0, rounds: int = 3
) -> dict[str, Any]:
    """Each ingest way, `rounds` times in turn, with the same clip; the median round of each."""
    clip = encode_clip()
    measured: dict[str, list[dict[str, Any]]] = {way: [] for way in INGEST_WAYS}
    for _ in range(rounds):
        for way in INGEST_WAYS:
            measured[way].append(
                asyncio.run(measure_ingest(way, clip, publishers, seconds, warmup))
            )
    key = "cpu_ms_per_publisher_second"
    median = {
        way: sorted(runs, key=lambda r: float(r[key]))[(rounds - 1) // 2]
        for way, runs in measured.items()
    }
    per_round = [
        round(_ratio(port[key], sockets[key]), 2)
        for port, sockets in zip(measured["port"], measured["sockets"], strict=True)
    ]
    ratio = _ratio(median["port"][key], median["sockets"][key])
    return {
        "stream": f"{WIDTH}x{HEIGHT}@{FPS}fps VP8 ~{BITRATE // 1000} kbps per publisher",
        "publishers": publishers,
        "seconds": seconds,
        "rounds": rounds,
        "ways": median,
        key + "_per_round": {way: [r[key] for r in runs] for way, runs in measured.items()},
        "ratio_port_to_sockets": round(ratio, 2),
        "ratio_port_unbatched_to_sockets": round(
            _ratio(median["port-unbatched"][key], median["sockets"][key]), 2
        ),
        "ratio_per_round": per_round,
        "ratio_median_of_rounds": round(statistics.median(per_round), 2),
        "goal_3_ms": median["port"][key] <= 3.0,
        "goal_half": ratio <= 0.5,
    }


INGEST_LABELS = {
    "sockets": "one socket per connection",
    "port": "one port, batched reads",
    "port-unbatched": "one port, a call per datagram",
}


def ingest_summary(figures: dict[str, Any]) -> str:
    key = "cpu_ms_per_publisher_second"
    lines = [
        f"ingest: {figures['publishers']} publishers, {figures['stream']}, "
        f"{figures['seconds']} s windows, median of {figures['rounds']} rounds",
        f"  {'':32} {'CPU ms/publisher-s':>19} {'CPU us/packet':>14} {'packets/s':>10} "
        f"{'sending':>8} {'UDP sockets':>12}",
    ]
    for way, label in INGEST_LABELS.items():
        f = figures["ways"][way]
        lines.append(
            f"  {label:32} {f[key]:>19.3f} {f['cpu_us_per_packet'] or 0:>14.1f} "
            f"{f['packets_per_second']:>10} {f['publishers_sending']:>8} {f['udp_sockets']:>12}"
        )
    lines.append(
        f"ratio one port / one socket per connection: {figures['ratio_port_to_sockets']} "
        f"(per round {', '.join(map(str, figures['ratio_per_round']))}); "
        f"unbatched: {figures['ratio_port_unbatched_to_sockets']}"
    )
    lines.append(
        f"goals: one port <= 3 ms: {'met' if figures['goal_3_ms'] else 'NOT met'}; "
        f"at most half the per-connection figure: {'met' if figures['goal_half'] else 'NOT met'}"
    )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def summary(figures: dict[str, Any]) -> str:
    relay, forward = figures["relay_decode_reencode"], figures["forward_no_transcode"]
    lines = [
        f"{figures['stream']}, {figures['viewers']} viewers, {figures['seconds']} s",
        "CPU-seconds per forwarded stream per second:",
        f"  relay (decode + encode per viewer): {relay['cpu_per_stream_second']:.5f}",
        f"  forward (RTP, no transcoding):      {forward['cpu_per_stream_second']:.5f}",
    ]
    if "forward_recording" in figures:
        recorded = figures["forward_recording"]["cpu_per_stream_second"]
        lines.append(f"  forward, publisher recorded:        {recorded:.5f}")
    lines.append(
        f"ratio {figures['ratio']} (marginal {figures['ratio_marginal']}), "
        f"{figures['forwarded_streams_per_core']} forwarded streams per core"
    )
    lines.append(f"ratio per round: {', '.join(map(str, figures['ratio_per_round']))}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="examday bench media", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="turns of both ways (median kept)")
    parser.add_argument(
        "--recording", action="store_true", help="also measure with the publisher recorded"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--publishers",
        type=int,
        nargs="?",
        const=40,
        default=None,
        help="measure ingest CPU per publisher-second with N publishers (default 40) instead",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 15:
        parser.error("--rounds must be between 1 and 15")
    if not 1 <= args.viewers <= 200:
        parser.error("--viewers must be between 1 and 200")
    if not 1 <= args.seconds <= 300:
        parser.error("--seconds must be between 1 and 300")
    if args.publishers is not None:
        if not 1 <= args.publishers <= 500:
            parser.error("--publishers must be between 1 and 500")
        ingest = run_ingest(args.publishers, args.seconds, args.warmup, args.rounds)
        print(json.dumps(ingest) if args.json else ingest_summary(ingest))
        return 0
    figures = run(args.viewers, args.seconds, args.warmup, args.recording, args.rounds)
    print(json.dumps(figures) if args.json else summary(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What real candidates do besides sitting still: each behaviour a fraction of the fleet.

A fleet whose candidates only log in, beat and leave is gentler than exam morning: real
ones share a screen, pair a phone as a side camera, hear a proctor talk back, raise a
hand, move from Wi-Fi to cellular (an ICE restart), lose their camera's connection and
come back, arrive late, fail the face check (a proctor then reviews it), and leave and
return. `examday loadtest --screen-share 0.1 ...` gives each behaviour to that fraction
of the candidates it applies to (the media candidates for the camera-bound ones, the
whole fleet for the others), dealt so that one candidate carries as few as possible;
every behaviour is counted as attempted, succeeded, failed by reason, or unsupported
(the server has no route for it yet).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Behaviour -> (flag help, needs a published camera)
BEHAVIOURS: dict[str, tuple[str, bool]] = {
    "screen_share": ("of the media candidates, also share their screen (WHIP screen)", True),
    "side_camera": ("of the media candidates, pair a side camera by token (WHIP side)", True),
    "talkback": ("of the media candidates, listen to their proctor's talk-back (WHEP)", True),
    "network_switch": ("of the media candidates, change networks mid-exam (ICE restart)", True),
    "reconnect": ("of the media candidates, lose their camera's connection and republish", True),
    "raise_hand": ("of the candidates, raise a hand (POST /v1/me/help)", False),
    "late": ("of the candidates, arrive after the ramp, a quarter into the exam", False),
    "face_fail": ("of the candidates, fail the face check: a proctor's review opens", False),
    "leave_return": ("of the candidates, log out mid-exam and come back", False),
}
# Where in the candidate's stay (fraction of --duration) a timed behaviour happens.
AT: dict[str, float] = {
    "raise_hand": 0.2,
    "network_switch": 0.3,
    "reconnect": 0.45,
    "leave_return": 0.55,
}
LATE_AT = 0.25  # of --duration after the ramp; the late ones stay the rest of the exam
AWAY_S = 3.0  # at most, between leaving and coming back
# Outcome reasons that mean "the server cannot do this yet", not "it failed".
UNSUPPORTED = "unsupported"
SEED = 2028


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def deal(
    fractions: Mapping[str, float], numbers: Sequence[str], media: set[str]
) -> dict[str, tuple[str, ...]]:
    """Candidate number -> its behaviours: each behaviour to `fraction` of the candidates it
    applies to (at least one when the fraction is above 0), those carrying the fewest
    behaviours first (ties broken by a seeded shuffle: runs compare)."""
    dealt: dict[str, list[str]] = defaultdict(list)
    rng = random.Random(SEED)
    for name in BEHAVIOURS:
        fraction = fractions.get(name, 0.0)
        if fraction <= 0:
            continue
        eligible = [n for n in numbers if n in media] if BEHAVIOURS[name][1] else list(numbers)
        count = min(len(eligible), max(1, round(fraction * len(eligible))))
        order = {n: rng.random() for n in eligible}
        chosen = sorted(eligible, key=lambda n: (len(dealt[n]), order[n]))[:count]
        for number in chosen:
            dealt[number].append(name)
    return {number: tuple(names) for number, names in dealt.items() if names}


@dataclass
class Outcomes:
    """Per behaviour: attempted, succeeded, and the rest by reason."""

    attempted: Counter[str] = field(default_factory=Counter)
    succeeded: Counter[str] = field(default_factory=Counter)
    failed: dict[str, Counter[str]] = field(default_factory=dict)

    def record(self, behaviour: str, ok: bool, reason: str = "") -> None:
        self.attempted[behaviour] += 1
        if ok:
            self.succeeded[behaviour] += 1
        else:
            self.failed.setdefault(behaviour, Counter())[reason or "failed"] += 1

    def merge(self, other: Outcomes) -> None:
        self.attempted.update(other.attempted)
        self.succeeded.update(other.succeeded)
        for name, reasons in other.failed.items():
            self.failed.setdefault(name, Counter()).update(reasons)

    def summary(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "attempted": self.attempted[name],
                "succeeded": self.succeeded[name],
                "unsupported": self.failed.get(name, Counter())[UNSUPPORTED],
                "failed": self.attempted[name]
                - self.succeeded[name]
                - self.failed.get(name, Counter())[UNSUPPORTED],
                "failed_by_reason": {
                    r: n for r, n in self.failed.get(name, Counter()).items() if r != UNSUPPORTED
                },
            }
            for name in sorted(self.attempted)
        }

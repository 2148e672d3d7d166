"""Scrubbing personal data out of free text (log messages, stacks, breadcrumbs).

Two kinds of rules. Patterns that find personal data by its shape anywhere:
IP addresses (IPv4 dotted quads, IPv6 in every textual form: full, compressed,
IPv4-mapped, with a zone, in brackets; a port after one stays), e-mail
addresses, phone numbers, bearer tokens, JWTs and examday session tokens, and
values behind a telling label (`token=`, `password:`, `candidate no 1234`,
`name: ...`). And literals a batch knows it carries: the
device id in clear, the caller's token, the candidate's name (and each part of
it), candidate and exam numbers; those are replaced wherever they appear as
whole words, in any case.

A name that appears unlabelled in a batch without a token cannot be found
(there is no named-entity model here); that is the documented limit.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

# (guard, pattern, replacement), applied in order; labelled rules keep their label.
# A rule runs only when one of its guard words is in the lowercased text (a
# C-speed test), since most log lines hold none of them.
_DIGITS = "phone-digits"
_LONG = "long-token"
_LONG_TOKEN = 53  # 32 + "." + 20 characters
_NUMBER_WORDS: tuple[str, ...] = (
    "exam ",
    "exam_",
    "exam-",
    "exam:",
    "exam=",
    "exam#",
    "examn",
    "examid",
)
_NUMBER_WORDS += ("cand", "student", "admission", "ticket")
# IPv6: a run of hex groups with at least two colons (and maybe a dotted IPv4 tail, a
# zone, brackets), kept only if `ipaddress` agrees it is an address: clock times,
# C++ scopes and MAC addresses are not.
_IPV6 = re.compile(
    r"(?<![\w:.\[])(\[)?([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,8}(?:(?:\.\d{1,3}){3})?)"
    r"(%[A-Za-z0-9_.-]+)?(\])?"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|[01]?\d?\d)"
# A dotted quad (leading zeros too), not part of a longer dotted number.
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\d|\.\d)")
_HEX = frozenset("0123456789abcdefABCDEF")


def _ipv6(match: re.Match[str]) -> str:
    opened, candidate, zone, closed = match.groups()
    core = candidate
    tail = ""
    while core and not _is_ipv6(core):
        if core[-1] not in ".:":
            return match.group(0)
        core, tail = core[:-1], core[-1] + tail
    if not core or _HEX.isdisjoint(core):  # "::" alone names no one
        return match.group(0)
    if tail:  # punctuation after the address: the zone and bracket were not the address's
        return f"{opened or ''}[ip]{tail}{zone or ''}{closed or ''}"
    if opened and closed:
        return "[ip]"
    return f"{opened or ''}[ip]{closed or ''}"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_Replacement = str | Callable[[re.Match[str]], str]
_RULES: tuple[tuple[tuple[str, ...], re.Pattern[str], _Replacement], ...] = (
    # Addresses first: IPv6 (whose IPv4-mapped form ends in a dotted quad), then IPv4.
    ((":",), _IPV6, _ipv6),
    ((".",), _IPV4, "[ip]"),
    (("bearer",), re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"), "Bearer [token]"),
    (("eyj",), re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[token]"),
    ((_LONG,), re.compile(r"\b[A-Za-z0-9_-]{32,}\.[A-Za-z0-9_-]{20,}"), "[token]"),
    (
        ("token", "key", "secret", "passw", "pwd", "authoriz", "cookie"),
        re.compile(
            r"(?i)\b((?:access|refresh|session|auth|id)?[_-]?token|api[_-]?key|secret|"
            r"passw(?:or)?d|pwd|authorization|cookie|set-cookie)"
            r"(\"?\s*[:=]\s*\"?|\s+)[^\s\"',;&]{4,}"
        ),
        r"\1\2[redacted]",
    ),
    (
        ("@",),
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
        "[email]",
    ),
    (
        _NUMBER_WORDS,
        re.compile(
            r"(?i)\b((?:exam|candidate|cand|student|admission|ticket)[ _-]?"
            r"(?:no|nr|number|num|id|#)?)(\"?\s*[:=#]?\s*\"?)(?=[A-Za-z0-9-]*\d)[A-Za-z0-9-]{2,32}"
        ),
        r"\1\2[number]",
    ),
    (
        ("name",),
        re.compile(
            r"(?i)\b((?:full|first|last|given|family|sur|user|display)?[_ -]?name)"
            r"(\"?\s*[:=]\s*\"?)[^\"',;&\n\r]{1,64}"
        ),
        r"\1\2[name]",
    ),
    (("+",), re.compile(r"\+\d{1,3}[\s.-]?\(?\d{1,4}\)?(?:[\s.-]?\d){6,12}(?!\d)"), "[phone]"),
    ((_DIGITS,), re.compile(r"(?<![\d.-])1[3-9]\d{9}(?![\d.-])"), "[phone]"),
    (
        (_DIGITS,),
        re.compile(r"(?<![\d.-])\(?\d{3}\)?[\s.-]\d{3,4}[\s.-]\d{4}(?![\d.-])"),
        "[phone]",
    ),
)
_GUARD_WORDS = frozenset(
    word for guard, _, _ in _RULES for word in guard if word not in (_DIGITS, _LONG)
)
_NO_DIGITS = str.maketrans("", "", "0123456789")
_PHONE_DIGITS = 10
_MIN_LITERAL = 2


class Scrubber:
    """Scrubs the generic patterns and, if given, a batch's own literals."""

    def __init__(self, literals: Iterable[tuple[str, str]] = ()) -> None:
        by_value: dict[str, str] = {}
        for value, label in literals:
            cleaned = value.strip()
            if len(cleaned) >= _MIN_LITERAL:
                by_value.setdefault(cleaned.lower(), label)
        self._labels = by_value
        # Compiled on first use: a batch's literals (its token, a name) make a pattern of
        # their own, about 1 ms to compile, and most batches never contain one (a third of
        # a busy ingest shard's sampled time went to compiling patterns nobody used).
        self._literal: re.Pattern[str] | None = None

    @classmethod
    def for_batch(
        cls,
        *,
        device_id: str | None = None,
        token: str | None = None,
        name: str | None = None,
        numbers: Iterable[str] = (),
    ) -> Scrubber:
        literals: list[tuple[str, str]] = []
        if device_id:
            literals.append((device_id, "[device]"))
        if token:
            literals += [(token, "[token]"), *((part, "[token]") for part in token.split("."))]
        if name:
            literals += [(name, "[name]"), *((part, "[name]") for part in name.split())]
        literals += [(number, "[number]") for number in numbers if number]
        return cls(literals)

    def scrub(self, text: str) -> str:
        if not text:
            return text
        lower = text.lower()
        present = {word for word in _GUARD_WORDS if word in lower}
        many_digits = len(text) - len(text.translate(_NO_DIGITS)) >= _PHONE_DIGITS
        if present or many_digits or len(text) >= _LONG_TOKEN:
            for guard, pattern, replacement in _RULES:
                if guard[0] == _DIGITS:
                    if not many_digits:
                        continue
                elif guard[0] == _LONG:
                    if len(text) < _LONG_TOKEN:
                        continue
                elif present.isdisjoint(guard):
                    continue
                text = pattern.sub(replacement, text)
        if any(value in lower for value in self._labels):
            text = self._literal_pattern().sub(self._label_of, text)
        return text

    def _literal_pattern(self) -> re.Pattern[str]:
        if self._literal is None:
            # Longest first, so that a full name wins over its parts.
            alternatives = "|".join(
                re.escape(v) for v in sorted(self._labels, key=len, reverse=True)
            )
            self._literal = re.compile(rf"(?i)(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
        return self._literal

    def _label_of(self, match: re.Match[str]) -> str:
        return self._labels.get(match.group(0).lower(), "[redacted]")

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "api", "core", "infra", "cluster", "loadtests", "ml", "tests")
HOME = ROOT / "core" / "keys.py"

# Spelt in pieces so that this file does not match its own pattern.
PREFIX = "examday" + ":"
# A string literal (plain, f-, r-, b- ...) that opens on a key: a prefix followed by a
# space is a message to a person ("examday: starting ..."), not a key.
KEY_LITERAL = re.compile(r"""(?<![\w])[rRbBfFuU]{0,2}(?:\"\"\"|'''|"|')""" + PREFIX + r"\S")


def strays() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == HOME:
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if KEY_LITERAL.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_pattern_sees_keys_and_skips_messages() -> None:
    assert KEY_LITERAL.search('redis.get(f"' + PREFIX + 'exam:{exam_id}")')
    assert KEY_LITERAL.search("scan(match='" + PREFIX + "exam:*')")
    assert KEY_LITERAL.search('ROOMS = "' + PREFIX + 'media:rooms"')
    assert not KEY_LITERAL.search('print("' + PREFIX + ' starting the cluster")')
    assert not KEY_LITERAL.search("keeps `" + PREFIX + "exam:{id}` (JSON)")


def test_every_key_is_spelt_in_core_keys() -> None:
    found = strays()
    assert not found, "Redis keys spelt outside core/keys.py:\n" + "\n".join(found)

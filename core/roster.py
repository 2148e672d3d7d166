"""Roster CSV: parsed line by line as it streams in, every row checked, reported by line and column.

Columns (by header name, any order): exam_no, candidate_no, name, date_of_birth
(YYYY-MM-DD), room, guardian_consent (may be empty). A quoted field may not span
lines: no column of a roster needs a newline.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date

from core.exam import RosterRow

COLUMNS = ("exam_no", "candidate_no", "name", "date_of_birth", "room", "guardian_consent")
_CANDIDATE = re.compile(r"[0-9A-Za-z]{1,24}")
_ROOM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
MAX_ERRORS_REPORTED = 200


@dataclass
class ParsedRoster:
    rows: list[tuple[int, RosterRow]] = field(default_factory=list)
    errors: list[dict[str, object]] = field(default_factory=list)
    error_count: int = 0

    def error(self, line: int, column: str, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_REPORTED:
            self.errors.append({"line": line, "column": column, "reason": reason})


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    pending = ""
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line.rstrip("\r")
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        yield pending.rstrip("\r")


async def parse(chunks: AsyncIterator[bytes], exam_id: str, max_rows: int) -> ParsedRoster:
    """Check every row; the caller imports only when `errors` is empty (all or nothing)."""
    parsed = ParsedRoster()
    header: list[str] | None = None
    seen: dict[str, int] = {}
    line_no = 0
    try:
        async for line in _lines(chunks):
            line_no += 1
            if not line.strip():
                continue
            try:
                cells = next(csv.reader([line], strict=True))
            except csv.Error:
                parsed.error(line_no, "*", "unbalanced_quotes")
                continue
            if header is None:
                header = [c.strip().lower() for c in cells]
                missing = [c for c in COLUMNS if c not in header]
                if missing or len(set(header)) != len(header):
                    parsed.error(line_no, ",".join(missing) or "*", "bad_header")
                    return parsed
                continue
            if len(parsed.rows) + parsed.error_count >= max_rows:
                parsed.error(line_no, "*", "too_many_rows")
                return parsed
            _check_row(
                parsed,
                line_no,
                dict(zip(header, cells, strict=False)),
                len(cells) == len(header),
                exam_id,
                seen,
            )
    except UnicodeDecodeError:
        parsed.error(line_no + 1, "*", "not_utf8")
    if header is None:
        parsed.error(1, "*", "empty_roster")
    return parsed


def _check_row(
    parsed: ParsedRoster,
    line: int,
    cells: dict[str, str],
    complete: bool,
    exam_id: str,
    seen: dict[str, int],
) -> None:
    if not complete:
        parsed.error(line, "*", "wrong_column_count")
        return
    before = parsed.error_count
    values = {k: v.strip() for k, v in cells.items()}
    if values["exam_no"] != exam_id:
        parsed.error(line, "exam_no", "other_exam")
    candidate = values["candidate_no"]
    if not _CANDIDATE.fullmatch(candidate):
        parsed.error(line, "candidate_no", "invalid_candidate_no")
    elif candidate in seen:
        parsed.error(line, "candidate_no", f"duplicate_of_line_{seen[candidate]}")
    else:
        seen[candidate] = line
    if not values["name"] or len(values["name"]) > 100:
        parsed.error(line, "name", "invalid_name")
    try:
        born = date.fromisoformat(values["date_of_birth"])
        if born >= date.today() or born.year < 1900:
            parsed.error(line, "date_of_birth", "implausible_date")
    except ValueError:
        parsed.error(line, "date_of_birth", "invalid_date")
    if not _ROOM.fullmatch(values["room"]):
        parsed.error(line, "room", "invalid_room")
    if len(values["guardian_consent"]) > 128:
        parsed.error(line, "guardian_consent", "too_long")
    if parsed.error_count == before:
        parsed.rows.append(
            (
                line,
                RosterRow(
                    exam_no=values["exam_no"],
                    candidate_no=candidate,
                    name=values["name"],
                    date_of_birth=born,
                    room=values["room"],
                    guardian_consent=values["guardian_consent"] or None,
                ),
            )
        )

"""Decoding a client's batch: encoding, format, schema and size, all or nothing.

A batch is a JSON array or NDJSON (one record a line), optionally gzip'd
(`Content-Encoding: gzip`). The gateway checks the media type, inflates the
body only up to the batch limit (a gzip bomb is refused there) and finds the
device to route by; the ingest shard parses and validates every record. Any
malformed line, invalid record or oversized record rejects the whole batch,
naming the lines (for an array: positions).
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

from pydantic import TypeAdapter, ValidationError

from actors.ingest.schema import RecordIn
from infra.errors import (
    InvalidInput,
    MalformedInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from infra.settings.ingest import IngestSettings

NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines"}
)
_ARRAY = TypeAdapter(list[RecordIn])
_DEVICE = re.compile(rb'"device_id"\s*:\s*"([^"\\]{1,128})"')
_MAX_REPORTED = 50
# Enough of a gzip'd batch to find its first record's device id.
_ROUTE_PREFIX = 8192
# Ray passes arguments above 100 KiB through its object store.
_PACK_ABOVE = 64 * 1024
# A line holds the free text plus the record's fields and JSON escaping.
_LINE_OVERHEAD = 4096


def coding_of(encoding: str) -> str:
    """'identity' or 'gzip' (as sent by clients); 415 for anything else."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return "identity"
    if coding in ("gzip", "x-gzip"):
        return "gzip"
    raise UnsupportedMediaType(
        "Content-Encoding must be gzip or identity", reason="unsupported_encoding"
    )


def decompress(body: bytes, coding: str, limit: int) -> bytes:
    """The batch inflated, never past `limit` bytes: a gzip bomb stops there.

    `coding` is 'identity', 'gzip', or 'zlib' (how the gateway packs a large plain body).
    """
    if coding == "identity":
        if len(body) > limit:
            raise PayloadTooLarge(
                f"the batch is over {limit} bytes", reason="batch_too_large", limit=limit
            )
        return body
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise MalformedInput("the body is not valid gzip", reason="bad_gzip") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            f"the batch decompresses to more than {limit} bytes",
            reason="decompressed_too_large",
            limit=limit,
        )
    if not inflater.eof or inflater.unused_data:
        raise MalformedInput("the gzip stream is truncated or has trailing data", reason="bad_gzip")
    return data


def route_device(body: bytes, coding: str, limit: int) -> str:
    """The device id to route a batch by, inflating only its first kilobytes if gzip'd."""
    if coding == "identity":
        if len(body) > limit:
            decompress(body, coding, limit)  # the 413
        return first_device(body)
    try:
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, _ROUTE_PREFIX)
    except zlib.error:
        raise MalformedInput("the body is not valid gzip", reason="bad_gzip") from None
    return first_device(head) or first_device(decompress(body, coding, limit))


def pack(body: bytes, coding: str) -> tuple[bytes, str]:
    """What crosses to the shard: large plain bodies compressed (Ray copies big arguments
    through its object store, which costs more than a fast deflate)."""
    if coding == "identity" and len(body) > _PACK_ABOVE:
        return zlib.compress(body, 1), "zlib"
    return body, coding


def media_kind(content_type: str) -> str:
    """'json' (an array) or 'ndjson'; 415 for anything else."""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        return "json"
    if media in NDJSON_TYPES:
        return "ndjson"
    raise UnsupportedMediaType(
        "send records as application/json (an array) or application/x-ndjson",
        reason="json_or_ndjson_required",
    )


def first_device(data: bytes) -> str:
    """The device id of the first record (routing only: the shard checks every record)."""
    found = _DEVICE.search(data)
    return found.group(1).decode(errors="replace") if found else ""


def decode(data: bytes, kind: str, limits: IngestSettings) -> list[RecordIn]:
    """The batch's records, or the 4xx that rejects it whole."""
    numbered = _array(data, limits) if kind == "json" else _ndjson(data, limits)
    if not numbered:
        raise InvalidInput("the batch holds no records", reason="empty_batch")
    too_large = [n for n, r in numbered if r.text_bytes() > limits.max_record_bytes]
    if too_large:
        raise PayloadTooLarge(
            f"records over {limits.max_record_bytes} bytes of text",
            reason="record_too_large",
            lines=too_large[:_MAX_REPORTED],
            limit=limits.max_record_bytes,
        )
    if len({record.device_id for _, record in numbered}) > 1:
        raise InvalidInput("one batch comes from one device", reason="mixed_devices")
    return [record for _, record in numbered]


def _too_many(count: int, limits: IngestSettings) -> None:
    if count > limits.max_batch_records:
        raise PayloadTooLarge(
            f"a batch holds at most {limits.max_batch_records} records",
            reason="too_many_records",
            limit=limits.max_batch_records,
        )


def _ndjson(data: bytes, limits: IngestSettings) -> list[tuple[int, RecordIn]]:
    lines = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    _too_many(len(lines), limits)
    if all(len(line) <= limits.max_record_bytes + _LINE_OVERHEAD for _, line in lines):
        # The common case in one call into the validator; line by line only to say what is wrong.
        try:
            joined = _ARRAY.validate_json(b"[" + b",".join(line for _, line in lines) + b"]")
            return [(number, rec) for (number, _), rec in zip(lines, joined, strict=True)]
        except ValidationError:
            pass
    malformed: list[int] = []
    oversized: list[int] = []
    invalid: list[dict[str, Any]] = []
    records: list[tuple[int, RecordIn]] = []
    for number, line in lines:
        if len(line) > limits.max_record_bytes + _LINE_OVERHEAD:
            oversized.append(number)
            continue
        try:
            records.append((number, RecordIn.model_validate_json(line)))
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                malformed.append(number)
            else:
                invalid += _errors(number, exc)
    _refuse(malformed, oversized, invalid, limits)
    return records


def _array(data: bytes, limits: IngestSettings) -> list[tuple[int, RecordIn]]:
    try:
        records = _ARRAY.validate_json(data)
    except ValidationError:
        _explain_array(data, limits)
        raise
    _too_many(len(records), limits)
    return list(enumerate(records, 1))


def _explain_array(data: bytes, limits: IngestSettings) -> None:
    """Raise the 4xx that says what is wrong with an array batch, and where."""
    try:
        items = json.loads(data)
    except json.JSONDecodeError as exc:
        _refuse([exc.lineno], [], [], limits)
    except UnicodeDecodeError:
        _refuse([1], [], [], limits)
    if not isinstance(items, list):
        raise InvalidInput("a JSON batch is an array of records", reason="batch_not_array")
    _too_many(len(items), limits)
    invalid: list[dict[str, Any]] = []
    for number, item in enumerate(items, 1):
        try:
            RecordIn.model_validate(item)
        except ValidationError as exc:
            invalid += _errors(number, exc)
    _refuse([], [], invalid, limits)


def _errors(number: int, exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"line": number, "field": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _refuse(
    malformed: list[int],
    oversized: list[int],
    invalid: list[dict[str, Any]],
    limits: IngestSettings,
) -> None:
    if malformed:
        raise MalformedInput(
            "some lines are not valid JSON; nothing was stored",
            reason="malformed_lines",
            lines=malformed[:_MAX_REPORTED],
            line_count=len(malformed),
        )
    if oversized:
        raise PayloadTooLarge(
            f"records over {limits.max_record_bytes} bytes of text",
            reason="record_too_large",
            lines=oversized[:_MAX_REPORTED],
            limit=limits.max_record_bytes,
        )
    if invalid:
        raise InvalidInput(
            "some records do not match the schema; nothing was stored",
            reason="invalid_records",
            errors=invalid[:_MAX_REPORTED],
            lines=sorted({e["line"] for e in invalid})[:_MAX_REPORTED],
        )

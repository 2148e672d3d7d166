"""The Redis names under which infra's mechanisms keep their state, handed in by their owner.

infra sits below the platform's one keys module (`core.keys`, where every
`examday:` key is spelt), so it cannot spell a key itself: the data-key ring, the
regional store (an exam's region, its legal holds, the residency audit stream)
and the deletion-receipt chain each receive these names when they are built,
from `core.keys.STATE_NAMES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StateNames:
    # exam id -> the hash of that exam's wrapped data keys (one field per version)
    data_key: Callable[[str], str]
    # a SCAN pattern matching every `data_key`, and the exam id back from one
    data_keys_pattern: str
    exam_of_data_key: Callable[[str], str]
    # exam id -> the stored exam record (JSON; infra reads only its `region`)
    exam_record: Callable[[str], str]
    # exam id -> the set of subjects under a legal hold (`*`: the whole exam)
    held_subjects: Callable[[str], str]
    # region -> the stream of residency audit events
    audit_events: Callable[[str], str]
    # region -> the prefix of the deletion-receipt chain's head, index and lock
    audit_log: Callable[[str], str]

"""CPU priority of our processes when a node is saturated: live media first, bulk work last.

Ray starts every worker process at niceness 15 (`RAY_worker_niceness`) and
drivers at 0, so on a saturated node the gateway (a driver, at 0) got about
28 times the CPU of a media shard or a face verifier (CFS weights 1024 and
36). In the capacity runs that starved the media shards' event loops, whose
late answers to ICE consent checks closed candidates' cameras, and left face
verification a minute behind. Our nodes start their workers at 0
(`WORKER_NICENESS_ENV`), and each actor then takes the niceness of its
`Priority`: live media and presence as the gateway; face verification and
log ingestion, which queue and push back, below; retention last:
a login storm cannot queue the way verification can.

A process may always raise its niceness; lowering it needs CAP_SYS_NICE, so
on a node that still starts workers at 15 an unprivileged actor stays there,
and says so once in its log.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

WORKER_NICENESS_ENV: Final = {"RAY_worker_niceness": "0"}


class Priority(enum.IntEnum):
    """Niceness by role (lower runs first)."""

    LIVE = 0  # media and room shards, the shard controller, verifier routing, update checks
    QUEUED = 10  # queued work that answers 503 when full: face verification, log ingestion
    BULK = 15  # retention sweeps and exports; face monitoring samples (a verifier's lane)


def adopt_priority(priority: Priority) -> None:
    """Move every thread of this process to `priority`'s niceness where allowed.

    Linux keeps a niceness per thread, and Ray's threads (and an async actor's
    event loop thread) exist before an actor's `__init__` runs, so each is set;
    threads started later inherit it.
    """
    for entry in Path("/proc/self/task").iterdir():
        thread_id = int(entry.name)
        try:
            os.setpriority(os.PRIO_PROCESS, thread_id, int(priority))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except PermissionError:
            logger.warning(
                "cannot lower niceness to %d (no CAP_SYS_NICE): start Ray workers with %s",
                int(priority),
                WORKER_NICENESS_ENV,
            )
            break


def adopt_thread_priority(priority: Priority) -> None:
    """Move the calling thread alone to `priority`'s niceness where allowed.

    For a process whose threads serve different callers: the face verifier runs
    candidates' checks on one model thread and monitoring samples on another
    (`actors.face.batcher`), and the second yields first.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), int(priority))
    except PermissionError:
        logger.warning(
            "cannot lower a thread's niceness to %d (no CAP_SYS_NICE): start Ray workers with %s",
            int(priority),
            WORKER_NICENESS_ENV,
        )

"""JSON log lines that carry the current trace and span ids, so a log line and the
request's spans are found together (in Loki, Elasticsearch, or grep).

`configure_logging` is called by `infra.telemetry.setup_tracing`, which the
gateway and every actor already call once at start, so one switch
(`EXAMDAY_OPS__LOG_FORMAT`) covers the gateway process and the Ray workers:
there each actor's stderr is its worker's `.err` file in the Ray session's logs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from opentelemetry import trace

from infra.settings import Settings

# Attributes every LogRecord has; anything else was passed in `extra=` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_UVICORN_ERROR = "uvicorn.error"
# uvicorn gives its loggers handlers of their own; in JSON mode they go through the root's.
_UVICORN = ("uvicorn", _UVICORN_ERROR)
# uvicorn's access log names the raw path (exam and candidate ids) and the client's
# address; `api.request_telemetry.RequestTelemetry` writes the route template
# instead. uvicorn writes access lines only while this logger has a handler
# somewhere up its chain.
_ACCESS = "uvicorn.access"
# uvicorn's lines for each WebSocket (accepted, refused, opened, closed) are the access
# log's for sockets: the client's address and the raw path, one pair per candidate.
_CONNECTION_LINES = ("connection open", "connection closed")
# INFO of these names peer addresses and URLs (ICE pairs, presigned links): a
# candidate's IP address is personal data, so they say only what goes wrong.
_QUIET = ("aioice", "aiortc", "httpx", "httpcore", "botocore", "aiobotocore", "urllib3")


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "component": self.component,
            "msg": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = f"{context.trace_id:032x}"
            line["span_id"] = f"{context.span_id:016x}"
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value if isinstance(value, (str, int, float, bool)) else repr(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing JSON lines; its own class so that it is installed once."""

    def __init__(self, component: str, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter(component))


def json_handler(component: str, stream: Any = None) -> logging.Handler:
    """A stream handler (stderr by default) writing JSON lines."""
    return JsonHandler(component, stream)


def log_format(settings: Settings) -> str:
    """`json` or `text`: as set, else JSON everywhere but in test runs, whose output
    people read on failure."""
    chosen = settings.ops.log_format
    if chosen is not None:
        return chosen
    return "text" if settings.env == "test" else "json"


class WithoutConnectionLines(logging.Filter):
    """Drops uvicorn's per-WebSocket lines, as `--no-access-log` drops its per-request ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        return not isinstance(message, str) or not (
            message.startswith('%s - "WebSocket ') or message in _CONNECTION_LINES
        )


def configure_logging(settings: Settings, component: str) -> bool:
    """In JSON mode, make this process's root logger write JSON lines to stderr at
    `EXAMDAY_OPS__LOG_LEVEL`; idempotent. Text mode leaves logging as the host
    (uvicorn, Ray, pytest) set it, less uvicorn's per-WebSocket lines, which name
    clients' addresses. Returns whether JSON lines are on."""
    uvicorn_error = logging.getLogger(_UVICORN_ERROR)
    if not any(isinstance(f, WithoutConnectionLines) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(WithoutConnectionLines())
    if log_format(settings) != "json":
        return False
    root = logging.getLogger()
    root.setLevel(settings.ops.log_level.upper())
    if any(isinstance(h, JsonHandler) for h in root.handlers):
        return True
    for handler in list(root.handlers):
        # A plain console handler would write each record a second time, as text.
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout):
            root.removeHandler(handler)
    root.addHandler(JsonHandler(component, sys.stderr))
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger(_ACCESS)
    access.handlers.clear()
    access.propagate = False
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    return True

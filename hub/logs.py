"""Logging setup: every line carries the request id (or ``-`` outside a request)."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections import OrderedDict
from datetime import UTC, datetime

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Who the current request or socket event is for, when known (never the token itself).
tenant_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant_id", default=None)
user_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)

_CONTEXT_ATTRS = {"request_id", "tenant_id", "user_id"}
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message"} | _CONTEXT_ATTRS


def bind_caller(tenant_id: str, user_id: str) -> tuple[contextvars.Token[str | None], ...]:
    """Put the caller in every log line of the current context; undo with :func:`unbind`."""
    return (tenant_var.set(tenant_id), user_var.set(user_id))


def unbind(tokens: tuple[contextvars.Token[str | None], ...]) -> None:
    tenant_token, user_token = tokens
    tenant_var.reset(tenant_token)
    user_var.reset(user_token)


class RequestIdFilter(logging.Filter):
    """Stamp each record with the request id, tenant and user of the context that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        # A record may name the caller itself (extra=...), e.g. the request summary line.
        if getattr(record, "tenant_id", None) is None:
            record.tenant_id = tenant_var.get()
            record.user_id = user_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra=`` fields kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        for key in ("tenant_id", "user_id"):
            if getattr(record, key, None) is not None:
                entry[key] = getattr(record, key)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once for the process (CLI entry points call this)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our own request logging says.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


class ThrottledLog:
    """At most one line per key (a socket, a peer) per interval.

    For what clients cause: a client that sends 1,000 malformed frames a second must not
    write 1,000 lines a second. At most ``max_keys`` keys are remembered, the oldest
    forgotten first.
    """

    def __init__(
        self, logger: logging.Logger, *, interval_seconds: float = 60.0, max_keys: int = 10_000
    ) -> None:
        self._logger = logger
        self._interval = interval_seconds
        self._max_keys = max_keys
        self._last: OrderedDict[str, float] = OrderedDict()

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self._max_keys:
            self._last.popitem(last=False)
        self._logger.warning(message, *args)

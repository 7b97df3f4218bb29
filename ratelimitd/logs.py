"""One JSON object per log line, so log pipelines parse events without regexes."""

from __future__ import annotations

import json
import logging
import sys
import time

# Fields a log call may attach with `extra={...}`; they become keys of the JSON line.
EXTRA_FIELDS = ("request_id", "api", "domain", "code", "peer")


def request_id(metadata: object) -> str | None:
    """The caller's request id from gRPC metadata (`x-request-id`, as Envoy and most proxies send it)."""
    try:
        for key, value in metadata or ():  # type: ignore[attr-defined]
            if key in ("x-request-id", "request-id"):
                return str(value)[:128]
    except (TypeError, ValueError):
        return None
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for extra in EXTRA_FIELDS:
            value = getattr(record, extra, None)
            if value is not None:
                event[extra] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

"""Shared helpers for the Python interop programs (CloudEvents Python SDK 2.x).

Events are read and written in the CloudEvents JSON event format, decoded and
encoded by the SDK's ``cloudevents.core.formats.json.JSONFormat``.
"""

import base64
import json
import sys
import threading

from cloudevents.core.formats.json import JSONFormat

FORMAT = JSONFormat()


def read_events(path):
    """Read one JSON event or an array of them; return SDK event objects."""
    raw = sys.stdin.buffer.read() if path in (None, "", "-") else open(path, "rb").read()
    doc = json.loads(raw)
    items = doc if isinstance(doc, list) else [doc]
    return [FORMAT.read(None, json.dumps(item).encode("utf-8")) for item in items]


def event_to_json(event):
    """The event in the JSON event format, as a dict, written by the SDK."""
    return json.loads(FORMAT.write(event))


class Output:
    """Writes one JSON object per line to stdout or a file, flushed per line."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self._f = sys.stdout if path in (None, "", "-") else open(path, "a", encoding="utf-8")

    def write(self, obj):
        line = json.dumps(obj, ensure_ascii=False, default=_default)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


def _default(o):
    if isinstance(o, (bytes, bytearray)):
        return {"base64": base64.b64encode(o).decode("ascii")}
    return str(o)

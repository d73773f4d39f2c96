"""Events the suite sends, in the CloudEvents JSON event format."""

import base64

# Every byte value, so a lossy text conversion anywhere shows up.
ALL_BYTES = bytes(range(256))

SPECIAL = 'a b%c"d é ü 🌎 100%25'


def make_events(tag, percent=True, v03=True):
    """A set of events under source /interop/<tag>, one per edge case."""
    src = f"/interop/{tag}"
    evs = [
        {
            "specversion": "1.0",
            "id": f"{tag}-rich",
            "source": src,
            "type": "com.example.interop.rich",
            "time": "2024-02-29T23:59:58.123456+05:30",
            "subject": "subject-1",
            "dataschema": "https://example.com/schemas/rich.json",
            "datacontenttype": "application/json",
            "comexampleext": "hello",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "data": {"name": "Zoë", "n": [1, 2.5, True, None], "nested": {"a": "b"}},
        },
        {
            "specversion": "1.0",
            "id": f"{tag}-binary",
            "source": src,
            "type": "com.example.interop.binary",
            "time": "2024-01-01T00:00:00Z",
            "datacontenttype": "application/octet-stream",
            "data_base64": base64.b64encode(ALL_BYTES).decode(),
        },
        {
            "specversion": "1.0",
            "id": f"{tag}-text",
            "source": src,
            "type": "com.example.interop.text",
            "time": "2023-12-31T19:00:00-05:00",
            "datacontenttype": "text/plain; charset=utf-8",
            "data": 'Hello, 🌎! 100% "quoted"\nline 2',
        },
    ]
    if percent:
        evs.append(
            {
                "specversion": "1.0",
                "id": f"{tag}-pct {SPECIAL}",
                "source": src,
                "type": "com.example.interop.percent",
                "time": "2024-06-01T12:00:00.5-07:00",
                "subject": f"Zoë \"Q\" 100% {SPECIAL}",
                "datacontenttype": "application/json",
                "comexamplenote": SPECIAL,
                "data": {"ok": True},
            }
        )
    if v03:
        evs.append(
            {
                "specversion": "0.3",
                "id": f"{tag}-v03",
                "source": src,
                "type": "com.example.interop.v03",
                "time": "2024-03-01T10:00:00+01:00",
                "schemaurl": "https://example.com/schemas/v03.json",
                "subject": "subject-03",
                "datacontenttype": "application/json",
                "comexampleext": "zero-three",
                "data": {"v": "0.3"},
            }
        )
    return evs

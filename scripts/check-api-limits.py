"""Provokes the answers of audit-service's limits, which schemathesis's
generated requests never reach, and holds each to the service's OpenAPI
document with schemathesis's own checks (status, headers, content type,
body schema): an answer the document does not describe fails.

Usage: check-api-limits.py AUDIT_URL SLOW_AUDIT_URL
- AUDIT_URL: an audit-service with MAX_STREAM_CLIENTS=1 whose one live-tail
  place is taken;
- SLOW_AUDIT_URL: one with REQUEST_TIMEOUT_MS=1, whose 408 a body that
  stops half way gets.
Run by scripts/check-api.sh."""

import http.client
import json
import pathlib
import sys
import time
import urllib.parse

import requests

import schemathesis

CONFIG = pathlib.Path(__file__).resolve().parent / "schemathesis.toml"

EVENT = {
    "specversion": "1.0",
    "id": "check-api-limits-1",
    "source": "/check-api",
    "type": "check.limits",
}


def provoke(schema, base_url: str, method: str, path: str, expected: int, **case) -> dict:
    """Sends one hand-made request; its answer must have `expected` status
    and pass every check against the document."""
    operation = schema[path][method]
    made = operation.Case(**case)
    response = made.call(base_url=base_url, timeout=30)
    if response.status_code != expected:
        sys.exit(
            f"check-api-limits: {method} {path} answered {response.status_code}, "
            f"not {expected}: {response.text[:300]}"
        )
    made.validate_response(response)
    print(f"check-api-limits: {method} {path} -> {expected}, as documented")
    return response


def slow_upload(schema, base_url: str) -> None:
    """`POST /` whose body stops half way: the answer, once the request
    timeout has passed, must be the documented 408. Sent with http.client,
    which reads an answer before the body is complete; checked with
    schemathesis like the others."""
    body = json.dumps(EVENT).encode()
    url = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.putrequest("POST", "/")
    connection.putheader("Content-Type", "application/cloudevents+json")
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    connection.send(body[: len(body) // 2])
    start = time.monotonic()
    answer = connection.getresponse()
    content = answer.read()
    elapsed = time.monotonic() - start
    connection.close()
    if answer.status != 408:
        sys.exit(f"check-api-limits: a half-sent POST / answered {answer.status}, not 408: {content[:300]!r}")
    made = schema["/"]["POST"].Case(body=EVENT, media_type="application/cloudevents+json")
    request = requests.Request("POST", f"{base_url}/", data=body[: len(body) // 2]).prepare()
    headers = {}
    for name, value in answer.getheaders():
        headers.setdefault(name.lower(), []).append(value)
    response = schemathesis.Response(
        status_code=answer.status,
        headers=headers,
        content=content,
        request=request,
        elapsed=elapsed,
        verify=False,
        message=answer.reason,
    )
    made.validate_response(response)
    print("check-api-limits: POST / (half a body) -> 408, as documented")


def main() -> int:
    audit_url, slow_url = sys.argv[1], sys.argv[2]
    config = schemathesis.Config.from_path(CONFIG)
    schema = schemathesis.openapi.from_url(f"{audit_url}/openapi.json", config=config)

    # The live tail's one place is taken.
    response = provoke(schema, audit_url, "GET", "/v1/events/stream", 503)
    if not response.headers.get("retry-after"):
        sys.exit("check-api-limits: the live tail's 503 has no Retry-After")

    # Binary-mode attributes past 64 KiB of headers.
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "check-api-limits-431",
        "ce-source": "/check-api",
        "ce-type": "check.limits",
    }
    headers.update({f"ce-x{n}": "a" * 1000 for n in range(70)})
    provoke(schema, audit_url, "POST", "/", 431, headers=headers, body="{}", media_type="application/json")

    # A filter that is not CESQL: where the mistake is.
    response = provoke(
        schema, audit_url, "GET", "/v1/events", 400, query={"filter": "type = "}
    )
    problem = response.json()
    if not {"column", "offset"} <= problem.keys():
        sys.exit(f"check-api-limits: a bad filter's problem lacks column/offset: {problem}")

    # A body that never finishes arriving.
    slow_upload(schema, slow_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())

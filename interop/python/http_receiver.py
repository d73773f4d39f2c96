#!/usr/bin/env python3
"""Receive CloudEvents over HTTP, decode each request with the Python SDK's
HTTP binding (cloudevents.core.bindings.http.from_http, binary or structured)
and write every event as one JSON line; keep going."""

import argparse
import base64
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings import http as cehttp

from ceio import FORMAT, Output, event_to_json


def make_handler(out, status):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            meta = {
                "method": "POST",
                "path": self.path,
                "content_type": headers.get("content-type", ""),
                "ce_headers": {k: v for k, v in headers.items() if k.startswith("ce-")},
                "body_base64": base64.b64encode(body).decode("ascii"),
            }
            try:
                # Only the CloudEvents-relevant headers go to the SDK; it treats
                # every header it gets as a possible attribute source.
                msg_headers = {k: v for k, v in headers.items() if k.startswith("ce-") or k == "content-type"}
                event = cehttp.from_http(cehttp.HTTPMessage(headers=msg_headers, body=body), FORMAT)
                line = {"event": event_to_json(event), "meta": meta}
                code = status
            except Exception as e:  # report, answer 400, keep serving
                line = {"error": f"{type(e).__name__}: {e}", "meta": meta}
                code = 400
            out.write(line)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt, *args):
            sys.stderr.write("http_receiver: " + (fmt % args) + "\n")

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--addr", default="127.0.0.1:8181")
    p.add_argument("--out", default="-")
    p.add_argument("--status", type=int, default=202)
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    srv = ThreadingHTTPServer((host, int(port)), make_handler(Output(a.out), a.status))
    sys.stderr.write(f"http_receiver listening on {a.addr}\n")
    srv.serve_forever()


if __name__ == "__main__":
    main()

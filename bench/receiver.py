#!/usr/bin/env python3
"""A webhook receiver for the events bench: answers 200 to every POST and counts the events.

Usage: bench/receiver.py PORT  (prints the counts on SIGTERM)."""
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

received = {"requests": 0, "events": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        received["requests"] += 1
        try:
            received["events"] += len(json.loads(body).get("events", [None]))
        except ValueError:
            pass
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    print(json.dumps(received), flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()

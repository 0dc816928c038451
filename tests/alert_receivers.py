"""Real local receivers for the notifier's tests: an HTTP webhook server and an SMTP server.

The HTTP receiver answers each POST by a scripted behaviour (`ok`, `fail` = 500,
`hang` = no answer until released or the client gives up, then the connection
is closed without a response) and records what it got and what it answered.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    body: dict
    headers: dict
    answered: int | None  # the status sent back; None: no response (hung, then dropped)


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    script: deque = field(default_factory=deque)  # behaviours for the next requests; empty = ok
    received: list[Received] = field(default_factory=list)
    hanging: threading.Event = field(default_factory=threading.Event)  # set while a request hangs
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def delivered(self) -> list[dict]:
        """Bodies answered 2xx, in order."""
        with self.lock:
            return [r.body for r in self.received if r.answered is not None and 200 <= r.answered < 300]

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met in {timeout}s; got {self.received}")
            time.sleep(0.02)


def start_receiver() -> Receiver:
    holder: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            rec: Receiver = holder["r"]
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with rec.lock:
                behaviour = rec.script.popleft() if rec.script else "ok"
            entry = Received(self.path, body, dict(self.headers), None)
            if behaviour == "hang":
                rec.hanging.set()
                rec.release.wait(60)
                with rec.lock:
                    rec.received.append(entry)
                self.close_connection = True
                return
            status = 500 if behaviour == "fail" else 200
            entry.answered = status
            self.send_response(status)
            payload = b"ok" if status == 200 else b"receiver failure"
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            with rec.lock:
                rec.received.append(entry)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["r"] = rec = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return rec


def stop_receiver(rec: Receiver) -> None:
    rec.release.set()
    rec.server.shutdown()
    rec.server.server_close()

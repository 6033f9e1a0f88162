"""A fault-injecting HTTP proxy for tests, on 127.0.0.1 in front of fake-gcs-server.

Point the official client at the proxy (``STORAGE_EMULATOR_HOST=proxy.url``) and add rules. A
rule matches requests by method, target (path + query, URL-decoded) and, optionally, body (the
multipart upload body carries the object name), and fires on chosen occurrences (``nth``) or
with a probability drawn from a seeded RNG, up to ``max_injections`` times. What it does:

``status``         answer with ``status`` (429/500/503/408/403 ...) and a GCS-style JSON error;
                   the request never reaches the server
``reset``          close the connection with a TCP RST before forwarding anything
``stall``          hold the connection ``stall_s`` seconds, then drop it, never forwarding (a
                   client with a shorter timeout gives up first)
``cut``            forward, then send the status line, headers (full Content-Length) and only
                   ``cut_after`` bytes of the body, then close
``lost_response``  forward (the server applies the write), then reset the connection before
                   any byte of the response: "the response was lost after a successful write"
``delay``          hold the request unforwarded (the client times out and retries), then deliver
                   it *late*: ``release="after_retry"`` forwards it once the retry (the next request
                   with the same method for the same object) has been answered, so the late write
                   meets the object the retry created; ``release="before_retry"`` forwards it when
                   the retry arrives and lets the retry through only after the late write was
                   applied, so the retry meets it. ``stall_s`` bounds the hold either way. The late
                   answer goes to a client that gave up; :meth:`FaultProxy.delayed` says what the
                   server answered it

Every request is logged (method, target, object name, what happened) and every rule counts what
it matched and injected, so a test can prove a fault was really hit (injected == observed). With
``GENBATCH_FAULTS_INJECT=0`` (``tests/injection.py``, read per request) no rule fires: every request
is forwarded untouched and every ``injected`` count stays 0.
Responses are rewritten so links the emulator hands out (media links, upload sessions) point
back at the proxy, and every later request goes through it too.

:class:`ClientObserver` is the other half of the proof: inside a test process it records every
HTTP attempt the client made (the status it got, or the exception), so "what the client saw and
retried" can be compared with what the proxy injected.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tests.injection import injection_enabled

ACTIONS = ("status", "reset", "stall", "cut", "lost_response", "delay")
RELEASES = ("after_retry", "before_retry")
RETRYABLE_STATUSES = (408, 429, 500, 502, 503, 504)
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "content-length", "host"}
_OBJECT_PATH = re.compile(r"^/(?:download/)?storage/v1/b/([^/?]+)/o/([^?]+)")
_LIST_PATH = re.compile(r"^/storage/v1/b/([^/?]+)/o/?(?:\?|$)")
_BODY_NAME = re.compile(rb'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_BODY_SCAN = 64 * 1024


@dataclass
class Rule:
    """Which requests to hit and how; counters are filled in by the proxy."""

    action: str
    method: str = ".*"
    path: str = ".*"
    body: str | None = None
    nth: Sequence[int] = ()
    probability: float = 0.0
    seed: int = 0
    max_injections: int | None = None
    status: int = 503
    stall_s: float = 5.0
    cut_after: int = 0
    release: str = "after_retry"
    name: str = ""
    matched: int = 0
    injected: int = 0
    hits: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; one of {ACTIONS}")
        if self.release not in RELEASES:
            raise ValueError(f"unknown release {self.release!r}; one of {RELEASES}")
        if not self.nth and not self.probability:
            raise ValueError(f"rule {self.name or self.action!r} never fires: give nth=(...) or probability>0")
        self._method = re.compile(self.method, re.IGNORECASE)
        self._path = re.compile(self.path)
        self._body = re.compile(self.body.encode("utf-8")) if self.body is not None else None
        self._rng = random.Random(self.seed)
        self.name = self.name or f"{self.action}{'-' + str(self.status) if self.action == 'status' else ''}"

    @property
    def kind(self) -> str:
        """``http-503`` for status rules, else the action name."""
        return f"http-{self.status}" if self.action == "status" else self.action

    def matches(self, method: str, target: str, body: bytes) -> bool:
        if not self._method.fullmatch(method) or not self._path.search(target):
            return False
        return self._body is None or bool(self._body.search(body[:_BODY_SCAN]))

    def fires(self) -> bool:
        """Called once per matching request (under the proxy lock): count it, decide."""
        self.matched += 1
        if self.max_injections is not None and self.injected >= self.max_injections:
            return False
        if self.nth:
            return self.matched in self.nth
        return self._rng.random() < self.probability


@dataclass
class Held:
    """A request a ``delay`` rule holds, and what became of it when it was delivered late."""

    method: str
    object: str | None
    rule: str
    release: str
    released: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    late_status: int | None = None  # the server's answer to the late delivery
    released_by: str = ""  # "retry" or "timeout"


@dataclass
class RequestRecord:
    method: str
    target: str
    object: str | None
    outcome: str  # "forwarded <status>" or the injected kind
    rule: str | None = None
    at: float = field(default_factory=time.monotonic)


def object_name(method: str, target: str, body: bytes) -> str | None:
    """The object a request is about: from the path, the ``name=`` query, or the upload metadata."""
    path, _, query = target.partition("?")
    m = _OBJECT_PATH.match(path)
    if m:
        return urllib.parse.unquote(m.group(2))
    params = urllib.parse.parse_qs(query)
    if "name" in params:
        return params["name"][0]
    if path.startswith("/upload/"):
        found = _BODY_NAME.search(body[:_BODY_SCAN])
        if found:
            return str(json.loads(b'"' + found.group(1) + b'"'))
    if _LIST_PATH.match(path + ("?" if query else "")):
        return "list:" + params.get("prefix", [""])[0]
    return None


class FaultProxy:
    """``with FaultProxy(emulator.url) as proxy: proxy.add(Rule(...)); ...``"""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0,
                 rules: Sequence[Rule] = (), upstream_timeout_s: float = 30.0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise ValueError(f"upstream must look like http://HOST:PORT, got {upstream!r}")
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.host = host
        self._port = port
        self.upstream_timeout_s = upstream_timeout_s
        self.rules: list[Rule] = list(rules)
        self.requests: list[RequestRecord] = []
        self.handler_errors: list[str] = []  # exceptions in the proxy itself (not injected faults)
        self.held: list[Held] = []  # requests ``delay`` rules held, in order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The value for STORAGE_EMULATOR_HOST."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        handler = type("Handler", (_Handler,), {"owner": self})
        server = _Server((self.host, self._port), handler)
        server.owner = self
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._stop.clear()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled handlers
        with self._lock:
            for held in self.held:
                held.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- rules and figures --------------------------------------------------------------------
    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop every rule and the request log (between scenarios on one proxy)."""
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self.held.clear()

    def injected(self) -> Counter[str]:
        """Injections per fault kind (``http-503``, ``reset``, ...), over all rules."""
        with self._lock:
            out: Counter[str] = Counter()
            for r in self.rules:
                out[r.kind] += r.injected
            return +out

    @property
    def total_injected(self) -> int:
        with self._lock:
            return sum(r.injected for r in self.rules)

    def requests_for(self, name: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.object == name]

    def _decide(self, method: str, target: str, body: bytes) -> Rule | None:
        """The rule that fires on this request, if any; with injection off none does (rules still count
        matches), so a fault test run with ``GENBATCH_FAULTS_INJECT=0`` sees no fault and must fail."""
        chosen = None
        inject = injection_enabled()  # read per request: a test may switch injection off mid-session
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, target, body) and rule.fires() and inject and chosen is None:
                    chosen = rule
            if chosen is not None:
                chosen.injected += 1
                chosen.hits.append({"occurrence": chosen.matched, "method": method,
                                    "object": object_name(method, target, body)})
        return chosen

    def delayed(self, timeout_s: float = 30.0) -> list[Held]:
        """Every held request, after waiting (up to ``timeout_s``) for each to be delivered late."""
        with self._lock:
            held = list(self.held)
        deadline = time.monotonic() + timeout_s
        for h in held:
            h.done.wait(max(0.0, deadline - time.monotonic()))
        return held

    def _pending_hold(self, method: str, name: str | None) -> Held | None:
        """A held request for the same object (and method) still waiting for its retry."""
        if name is None:
            return None
        with self._lock:
            return next((h for h in self.held if h.object == name and h.method == method
                         and not h.released.is_set()), None)

    def _log(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)

    def _rewrite(self, data: bytes) -> bytes:
        return data.replace(f"{self.upstream_host}:{self.upstream_port}".encode(), f"{self.host}:{self.port}".encode())


class _Server(ThreadingHTTPServer):
    owner: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer is normal here; anything else is recorded, not printed."""
        import sys
        import traceback

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        with self.owner._lock:
            self.owner.handler_errors.append("".join(traceback.format_exception(exc))[-2000:])


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    timeout = 120
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    # -- one request -----------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.owner
        body = self._read_body()
        method, target = self.command, self.path
        decoded = urllib.parse.unquote(target)
        name = object_name(method, target, body)
        waiting = proxy._pending_hold(method, name)  # this request is the retry of a held one
        if waiting is not None and waiting.release == "before_retry":
            waiting.released_by = "retry"
            waiting.released.set()
            waiting.done.wait(proxy.upstream_timeout_s)  # the late write lands first
        rule = proxy._decide(method, decoded, body)
        if rule is not None and rule.action == "delay":
            self._hold_then_forward(rule, method, target, body, name)
            return
        try:
            self._answer(rule, method, target, body, name)
        finally:
            if waiting is not None and waiting.release == "after_retry":
                waiting.released_by = "retry"
                waiting.released.set()  # the retry has been answered: deliver the held one now

    def _hold_then_forward(self, rule: Rule, method: str, target: str, body: bytes, name: str | None) -> None:
        proxy = self.owner
        held = Held(method, name, rule.name, rule.release)
        with proxy._lock:
            proxy.held.append(held)
        proxy._log(RequestRecord(method, target, name, "delay (held)", rule.name))
        try:
            if not held.released.wait(rule.stall_s):
                held.released_by = "timeout"
            try:
                status, reason, headers, data = self._forward(method, target, body)
            except OSError as exc:
                proxy._log(RequestRecord(method, target, name, f"delay (late, upstream-error {type(exc).__name__})",
                                         rule.name))
                self._abort()
                return
            held.late_status = status
            proxy._log(RequestRecord(method, target, name, f"delay (late, server said {status})", rule.name))
        finally:
            held.done.set()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client gave up long ago; the answer goes nowhere
            self.send_response(status, reason)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def _answer(self, rule: Rule | None, method: str, target: str, body: bytes, name: str | None) -> None:
        proxy = self.owner
        if rule is not None and rule.action in ("status", "reset", "stall"):
            proxy._log(RequestRecord(method, target, name, rule.kind, rule.name))
            if rule.action == "status":
                self._send_error_status(rule.status)
            elif rule.action == "reset":
                self._abort()
            else:
                proxy._stop.wait(rule.stall_s)
                self._abort()
            return
        try:
            status, reason, headers, data = self._forward(method, target, body)
        except OSError as exc:
            proxy._log(RequestRecord(method, target, name, f"upstream-error {type(exc).__name__}"))
            self._send_error_status(502, f"fault proxy could not reach the upstream: {exc}")
            return
        if rule is not None and rule.action == "lost_response":
            proxy._log(RequestRecord(method, target, name, f"{rule.kind} (server said {status})", rule.name))
            self._abort()
            return
        proxy._log(RequestRecord(method, target, name,
                                 f"forwarded {status}" if rule is None else f"{rule.kind} (server said {status})",
                                 None if rule is None else rule.name))
        self.send_response(status, reason)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method == "HEAD":
            return
        if rule is not None and rule.action == "cut":
            self.wfile.write(data[: rule.cut_after])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_WR)
            return
        self.wfile.write(data)

    def _forward(self, method: str, target: str, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        proxy = self.owner
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout_s)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
            conn.request(method, target, body=body if body or method in ("POST", "PUT", "PATCH") else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = [(k, proxy._rewrite(v.encode("latin-1")).decode("latin-1")) for k, v in resp.getheaders()
                   if k.lower() not in _HOP_BY_HOP]
            return resp.status, resp.reason, out, proxy._rewrite(data)
        finally:
            conn.close()

    def _send_error_status(self, status: int, message: str | None = None) -> None:
        text = message or f"injected by the fault proxy: HTTP {status}"
        payload = json.dumps({"error": {"code": status, "message": text,
                                        "errors": [{"message": text, "reason": "injected"}]}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _abort(self) -> None:
        """Close with a TCP RST: the client sees a reset, not an orderly end of stream."""
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for stream in (self.wfile, self.rfile):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        with contextlib.suppress(OSError):
            sock.close()  # the last reference: the kernel sends the RST now
        # The base class flushes and closes these after the handler returns: give it harmless ones.
        self.wfile = io.BytesIO()
        self.rfile = io.BytesIO()


# --------------------------------------------------------------------------- the client's view


@dataclass
class Attempt:
    method: str
    url: str
    outcome: str  # "200", "412", or an exception class name

    @property
    def failed(self) -> bool:
        """A transient failure the client retries (a retryable status or a transport error)."""
        return not self.outcome.isdigit() or int(self.outcome) in RETRYABLE_STATUSES

    @property
    def kind(self) -> str:
        """``http-503`` for a status, ``connection`` for any transport error (reset, cut, stall...)."""
        return f"http-{self.outcome}" if self.outcome.isdigit() else "connection"


class ClientObserver:
    """Record every HTTP attempt ``requests`` makes in this process (status or exception).

    ``with ClientObserver() as seen: ...`` patches ``requests.Session.send`` (the one place each
    attempt passes, retries included, and where a non-streamed body is read) and, for streamed
    downloads, the response's raw stream, so a body cut short counts as a failed attempt too.
    """

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._saved: Any = None

    def __enter__(self) -> Self:
        import requests

        observer = self
        original = requests.Session.send
        self._saved = original

        def send(session: Any, request: Any, **kwargs: Any) -> Any:
            try:
                response = original(session, request, **kwargs)
            except BaseException as exc:
                observer._add(Attempt(request.method, request.url, type(exc).__name__))
                raise
            attempt = Attempt(request.method, request.url, str(response.status_code))
            observer._add(attempt)
            if kwargs.get("stream") and response.raw is not None:
                observer._watch_stream(response.raw, attempt)
            return response

        requests.Session.send = send  # type: ignore[method-assign,assignment]
        return self

    def _watch_stream(self, raw: Any, attempt: Attempt) -> None:
        """A streamed body that breaks off turns the attempt into a failure."""
        real_stream, real_read = raw.stream, raw.read

        def fail(exc: BaseException) -> None:
            with self._lock:
                attempt.outcome = type(exc).__name__

        def stream(*args: Any, **kwargs: Any) -> Iterator[bytes]:
            try:
                yield from real_stream(*args, **kwargs)
            except BaseException as exc:
                fail(exc)
                raise

        def read(*args: Any, **kwargs: Any) -> bytes:
            try:
                data: bytes = real_read(*args, **kwargs)
                return data
            except BaseException as exc:
                fail(exc)
                raise

        raw.stream, raw.read = stream, read

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        import requests

        requests.Session.send = self._saved  # type: ignore[method-assign]

    def _add(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    @property
    def failures(self) -> list[Attempt]:
        with self._lock:
            return [a for a in self.attempts if a.failed]

    def observed(self) -> Counter[str]:
        """Failed attempts per kind: ``http-503``... and ``connection`` for transport errors."""
        return Counter(a.kind for a in self.failures)

    def count(self, outcome: str) -> int:
        with self._lock:
            return sum(1 for a in self.attempts if a.outcome == outcome)


def expected_observation(injected: Counter[str]) -> Counter[str]:
    """What the client should see for what the proxy injected: every transport fault is a
    ``connection`` failure, every status its own code."""
    out: Counter[str] = Counter()
    for kind, n in injected.items():
        out[kind if kind.startswith("http-") else "connection"] += n
    return +out


@contextlib.contextmanager
def proxied(upstream: str, rules: Sequence[Rule] = ()) -> Iterator[FaultProxy]:
    """A started proxy for the block (a convenience for one-off scripts)."""
    with FaultProxy(upstream, rules=rules) as proxy:
        yield proxy

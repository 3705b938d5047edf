"""Broken HTTP framing against the real gateway process (gunicorn, uvicorn workers with the gateway's
protocol, a2wsgi, Falcon): raw bytes over a socket, since an HTTP client library would normalise them.
Each request gets a 4xx or a closed connection, never a 5xx, never a wait past ANSWER_SECONDS, and the
gateway answers a normal request afterwards. The gateway's RPC services are not running: every request
here is one the gateway must settle without them (a 503 would fail the test).

Which layer answers what:
- the HTTP parser (httptools under uvicorn; services/gateway/hold/framing.py GatewayHttpProtocol): a
  request line or header it cannot parse (no colon, a space in a name, obs-fold, NUL or a bare CR, a
  non-ASCII method, a raw space or non-ASCII byte in the target), a Content-Length that is not digits,
  repeated, or sent with Transfer-Encoding, a transfer coding list not ending in chunked, a chunk size
  that is not hex or overflows, chunk data longer than its size, a bad chunk extension or trailer:
  400 {"error", "field": "request"} (in the head) or "body" (in a body), and the connection closes.
  Its limits, which httptools lacks: a URL over 8 KiB 414 "url"; one header over 8 KiB, more than 100,
  or a head over 64 KiB 431 "headers"; a Transfer-Encoding other than exactly "chunked" 400
  "Transfer-Encoding" (gzip and the like would reach the app still encoded).
- the body reader (framing.whole_body, before the app): a body the client cut short (its connection
  closed before the Content-Length or the last chunk, or a chunk size larger than what came) gets no
  answer, and the app never sees the request (its access line has no status); a body past the largest
  any route accepts (1 MiB: the web UI's forms and import) 413 "body". A chunked body reaches the app
  whole, with its length.
- the app (Falcon): whatever arrives whole: its per-route limits (GAZE_MAX_BODY_BYTES: 413 "body",
  chunked or not), the JSON or form (400 naming the field), percent-encoding in the path and query
  (404 naming slug or job_id, 400 naming the query field; without a session UI pages redirect to /login).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.stack import NO_RATE_LIMITS, _free_port

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
MAX_BODY = 4096          # GAZE_MAX_BODY_BYTES of this gateway: small, so "past it" is cheap to send
UI_MAX_BODY = 1024 * 1024   # services/gateway/web/render.py MAX_FORM_BYTES, the largest any route reads
ANSWER_SECONDS = 5
CLOSED = "closed"


# --- the gateway and a raw client -------------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(settings, pool, tmp_path_factory):
    """One gateway process (one worker) on the session's database; its log lines in a file."""
    from services.gateway.stores.admin import AdminStore
    from services.gateway.stores.api_keys import ApiKeyStore

    key = ApiKeyStore(pool, settings.redis_url, settings.redis_prefix).create(f"framing-{uuid.uuid4().hex[:8]}")
    admin = AdminStore(pool)
    session = admin.open_session()
    csrf = admin.session(session)["csrf_token"]
    run = tmp_path_factory.mktemp("framing")
    port = _free_port()
    env = dict(os.environ, GAZE_DATABASE_URL=settings.database_url, GAZE_AMQP_URI=settings.amqp_uri,
               GAZE_REDIS_PREFIX=settings.redis_prefix, GAZE_BIND=f"127.0.0.1:{port}", GAZE_GATEWAY_WORKERS="1",
               GAZE_RUN_DIR=str(run / "run"), GAZE_MEDIA_ROOT=str(run / "media"), GAZE_LOG_FORMAT="json",
               GAZE_MAX_BODY_BYTES=str(MAX_BODY), **NO_RATE_LIMITS)
    log_path = run / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([GUNICORN, "--config", "python:services.gateway.gunicorn_conf",
                                 "services.gateway.asgi:app"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    gw = Gateway(port, key, session, csrf, log_path)
    try:
        wait_until(gw.healthy, timeout=60, what="the gateway")
        yield gw
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


class Gateway:
    def __init__(self, port, key, session, csrf, log_path):
        self.port, self.key, self.session, self.csrf, self.log_path = port, key, session, csrf, log_path

    def healthy(self):
        try:
            answer = exchange(self.port, b"GET /healthz HTTP/1.1\r\nHost: gaze\r\n\r\n")
        except OSError:
            return False
        return isinstance(answer, tuple) and answer[0] == 200

    def access_lines(self, path):
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("logger") == "gunicorn.access" and entry.get("path") == path:
                    lines.append(entry)
        return lines


def exchange(port, raw: bytes, close_after=False, timeout=ANSWER_SECONDS):
    """Send `raw` (then end the sending side if close_after); the answer as (status, headers, body), or
    CLOSED when the connection closed without one. Fails when neither happens within `timeout`."""
    data, deadline = b"", time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            if close_after:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the server refused while this was still sending: its answer may be there to read
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                raise AssertionError(f"no answer and no close within {timeout}s; got {data[:200]!r}") from None
            if not chunk:
                break
            data += chunk
            answer = _parse(data)
            if answer is not None:
                return answer
    assert not data, f"the connection closed mid-answer: {data[:300]!r}"
    return CLOSED


def _parse(data: bytes):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(body) < length:
        return None
    return int(lines[0].split()[1]), headers, body[:length]


def request(target: bytes, headers=(), body=b"", method=b"POST", version=b"HTTP/1.1") -> bytes:
    return b"\r\n".join([method + b" " + target + b" " + version, b"Host: gaze", *headers]) + b"\r\n\r\n" + body


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


# --- what each route answers a body that arrived whole --------------------------------------------

# A body the app reads whole is refused by the app with a field of its own, without any RPC:
API_BODY = b'{"count": 999}'               # POST /api/v1/generate/<slug>: 400 naming count
FORM_BODY = b"login_token=%ff&csrf_token=%ff"   # a UI form: 400 "form: not UTF-8" naming body
READ = "read"                              # placeholder: the route's answer to its body, read whole


class Target:
    def __init__(self, name, path, body, read, headers_for):
        self.name, self.path, self.body, self.read, self.headers_for = name, path, body, read, headers_for

    def __repr__(self):
        return self.name


def _api_headers(gw):
    return [b"X-API-Key: " + gw.key.encode(), b"Content-Type: application/json"]


def _login_headers(gw):
    return [b"Content-Type: application/x-www-form-urlencoded"]


def _session_headers(gw):
    return [b"Content-Type: application/x-www-form-urlencoded", b"Cookie: gaze_session=" + gw.session.encode()]


TARGETS = [
    Target("api-generate", "/api/v1/generate/{unique}", API_BODY, (400, "count"), _api_headers),
    Target("ui-login", "/login", FORM_BODY, (400, "body"), _login_headers),
    Target("ui-session-post", "/ui/jobs/{uuid}/cancel", FORM_BODY, (400, "body"), _session_headers),
]

TE = b"Transfer-Encoding: chunked"
BODY_CASES = {
    # name: (headers, body given the target's whole body, expected answer, end the sending side after)
    "chunked, whole": ([TE], lambda b: chunked(b), READ, False),
    "chunked in pieces with extensions": ([TE], lambda b: b"%x;name=value\r\n%s\r\n%x;x\r\n%s\r\n0\r\n\r\n" % (
        3, b[:3], len(b) - 3, b[3:]), READ, False),
    "chunked with a trailer": ([TE], lambda b: chunked(b)[:-2] + b"X-Trailer: 1\r\n\r\n", READ, False),
    "Transfer-Encoding: CHUNKED": ([b"Transfer-Encoding: CHUNKED"], lambda b: chunked(b), READ, False),
    "chunk size larger than the data, then EOF": ([TE], lambda b: b"%x\r\n%s" % (len(b) + 50, b), CLOSED, True),
    "chunk size smaller than the data": ([TE], lambda b: b"3\r\n%s\r\n0\r\n\r\n" % b, (400, "body"), False),
    "chunk size not hex": ([TE], lambda b: b"zz\r\n%s\r\n0\r\n\r\n" % b, (400, "body"), False),
    "chunk size negative": ([TE], lambda b: b"-2\r\n%s\r\n0\r\n\r\n" % b, (400, "body"), False),
    "chunk size 2**64-1, then EOF": ([TE], lambda b: b"ffffffffffffffff\r\n%s\r\n0\r\n\r\n" % b, CLOSED, True),
    "chunk size past 64 bits": ([TE], lambda b: b"1" + b"0" * 20 + b"\r\n%s\r\n0\r\n\r\n" % b, (400, "body"), False),
    "no CRLF after a chunk": ([TE], lambda b: b"%x\r\n%s0\r\n\r\n" % (len(b), b), (400, "body"), False),
    "no last chunk, then EOF": ([TE], lambda b: b"%x\r\n%s\r\n" % (len(b), b), CLOSED, True),
    "a control character in a chunk extension": ([TE], lambda b: b"%x;\x01\r\n%s\r\n0\r\n\r\n" % (len(b), b),
                                                  (400, "body"), False),
    "a trailer without a colon": ([TE], lambda b: chunked(b)[:-2] + b"no colon here\r\n\r\n", (400, "body"), False),
    "Content-Length and Transfer-Encoding": ([b"Content-Length: 2", TE], lambda b: chunked(b), (400, "request"),
                                             False),
    "two different Content-Lengths": ([b"Content-Length: 2", b"Content-Length: 3"], lambda b: b"{} ",
                                      (400, "request"), False),
    "Content-Length as a list": ([b"Content-Length: 2, 2"], lambda b: b"{}", (400, "request"), False),
    "Content-Length not a number": ([b"Content-Length: abc"], lambda b: b"{}", (400, "request"), False),
    "Content-Length negative": ([b"Content-Length: -1"], lambda b: b"{}", (400, "request"), False),
    "Content-Length past 64 bits": ([b"Content-Length: 99999999999999999999999"], lambda b: b"{}",
                                    (400, "request"), False),
    "Content-Length larger than the body, then EOF": (["CL+50"], lambda b: b, CLOSED, True),
    "Transfer-Encoding: gzip": ([b"Transfer-Encoding: gzip"], lambda b: b, (400, "Transfer-Encoding"), False),
    "Transfer-Encoding: gzip, chunked": ([b"Transfer-Encoding: gzip, chunked"], lambda b: chunked(b),
                                         (400, "Transfer-Encoding"), False),
    "Transfer-Encoding: chunked, gzip": ([b"Transfer-Encoding: chunked, gzip"], lambda b: chunked(b),
                                         (400, "request"), False),
    "Transfer-Encoding: xchunked": ([b"Transfer-Encoding: xchunked"], lambda b: chunked(b),
                                    (400, "Transfer-Encoding"), False),
    "Transfer-Encoding: chunked twice": ([TE, TE], lambda b: chunked(b), (400, "request"), False),
}


def _resolve(gw, target, case_headers, body):
    path = target.path.format(unique=f"framing-{uuid.uuid4().hex[:12]}", uuid=uuid.uuid4()).encode()
    headers = target.headers_for(gw)
    for header in case_headers:
        headers.append(b"Content-Length: %d" % (len(body) + 50) if header == "CL+50" else header)
    return path, headers


def _assert_answer(answer, expected, target):
    if expected == READ:
        expected = target.read
    if expected == CLOSED:
        assert answer == CLOSED, answer
        return
    assert answer != CLOSED, f"closed without an answer; expected {expected}"
    status, headers, body = answer
    assert status == expected[0], (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = json.loads(body)
    assert doc["field"] == expected[1] and doc["error"], doc


@pytest.mark.parametrize("target", TARGETS, ids=repr)
@pytest.mark.parametrize("case", list(BODY_CASES))
def test_a_body_with_broken_framing_is_refused_or_dropped(gateway, target, case):
    case_headers, body_of, expected, close_after = BODY_CASES[case]
    body = body_of(target.body)
    path, headers = _resolve(gateway, target, case_headers, body)
    answer = exchange(gateway.port, request(path, headers, body), close_after=close_after)
    _assert_answer(answer, expected, target)
    if answer == CLOSED and target.name == "api-generate":
        # the app never acted on the part that came: the request's access line says nobody answered
        line = wait_until(lambda: gateway.access_lines(path.decode()), timeout=ANSWER_SECONDS,
                          what="the access line")
        assert [entry["status"] for entry in line] == ["-"], line
    assert gateway.healthy()


# --- bodies past the limits --------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["content-length", "chunked", "expect-100-continue"])
def test_a_body_past_gaze_max_body_bytes_is_a_413_naming_body(gateway, framing):
    body = b'{"prompt": "' + b"x" * MAX_BODY + b'"}'
    path, headers = _resolve(gateway, TARGETS[0], [], body)
    if framing == "chunked":
        raw = request(path, headers + [TE], chunked(body[:1000], body[1000:]))
    elif framing == "content-length":
        raw = request(path, headers + [b"Content-Length: %d" % len(body)], body)
    else:   # refused on its Content-Length: no "100 Continue" first, no body asked for
        raw = request(path, headers + [b"Content-Length: %d" % len(body), b"Expect: 100-continue"])
    status, _, answer = exchange(gateway.port, raw)
    assert status == 413 and json.loads(answer) == {"error": f"body larger than {MAX_BODY} bytes", "field": "body"}
    assert gateway.healthy()


@pytest.mark.parametrize("target", TARGETS[1:], ids=repr)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_ui_post_past_the_largest_form_is_a_413_naming_body(gateway, target, framing):
    body = b"password=" + b"x" * UI_MAX_BODY
    path, headers = _resolve(gateway, target, [], body)
    if framing == "chunked":
        raw = request(path, headers + [TE], chunked(*(body[i:i + 65536] for i in range(0, len(body), 65536))))
    else:
        raw = request(path, headers + [b"Content-Length: %d" % len(body)], body)
    status, _, answer = exchange(gateway.port, raw)
    assert status == 413 and json.loads(answer) == {"error": f"body larger than {UI_MAX_BODY} bytes", "field": "body"}
    assert gateway.healthy()


# --- the request line and the headers ----------------------------------------------------------------

JOBS = b"/api/v1/jobs?status=bogus"   # with the key: the app's 400 naming status, no RPC


def _head_cases():
    many = [b"X-H%d: v" % i for i in range(101)]
    return {
        "a URL of 8 KiB + 1": (request(JOBS + b"&x=" + b"a" * 8192, method=b"GET"), (414, "url")),
        "a URL of 100 KiB": (request(JOBS + b"&x=" + b"a" * 100_000, method=b"GET"), (414, "url")),
        "a header of 8 KiB + 1": (request(JOBS, [b"X-Long: " + b"a" * 8192], method=b"GET"), (431, "headers")),
        "a header of 100 KiB": (request(JOBS, [b"X-Long: " + b"a" * 100_000], method=b"GET"), (431, "headers")),
        "101 headers": (request(JOBS, many, method=b"GET"), (431, "headers")),
        "a head of 70 KiB in headers under the limit": (
            request(JOBS, [b"X-H%d: " % i + b"a" * 7000 for i in range(10)], method=b"GET"), (431, "headers")),
        "a header without a colon": (request(JOBS, [b"NoColonHere"], method=b"GET"), (400, "request")),
        "a header name with a space": (request(JOBS, [b"Bad Name: v"], method=b"GET"), (400, "request")),
        "a space before the colon": (request(JOBS, [b"X-A : v"], method=b"GET"), (400, "request")),
        "obs-fold continuation line": (request(JOBS, [b"X-A: v", b" continued"], method=b"GET"), (400, "request")),
        "NUL in a header value": (request(JOBS, [b"X-A: a\x00b"], method=b"GET"), (400, "request")),
        "bare CR in a header value": (request(JOBS, [b"X-A: a\rb"], method=b"GET"), (400, "request")),
        "a non-ASCII method": (request(JOBS, method="GÉT".encode()), (400, "request")),
        "NUL in the target": (request(b"/api/v1/job/a\x00b", method=b"GET"), (400, "request")),
        "a space in the target": (request(b"/api/v1/job/a b", method=b"GET"), (400, "request")),
        "a raw non-ASCII byte in the target": (request("/presets/é".encode(), method=b"GET"), (400, "request")),
        "a non-ASCII header value (latin-1)": (request(JOBS, [b"X-A: caf\xe9"], method=b"GET"), "key"),
        "an HTTP/2.0 request line": (request(JOBS, method=b"GET", version=b"HTTP/2.0"), "key"),
        "an HTTP/1.0 request line": (request(JOBS, method=b"GET", version=b"HTTP/1.0"), "key"),
        "an HTTP/0.9 request line": (b"GET " + JOBS + b"\r\n\r\n", (401, "X-API-Key")),
        "an absolute-form URI with another host": (request(b"http://evil.example" + JOBS, method=b"GET"), "key"),
    }


HEAD_CASES = _head_cases()


@pytest.mark.parametrize("case", list(HEAD_CASES))
def test_a_broken_request_line_or_header_is_a_4xx(gateway, case):
    raw, expected = HEAD_CASES[case]
    raw = raw.replace(b"Host: gaze", b"Host: gaze\r\nX-API-Key: " + gateway.key.encode())
    answer = exchange(gateway.port, raw)
    # "key": served as usual, so the app's own 400 for ?status=bogus
    _assert_answer(answer, (400, "status") if expected == "key" else expected, None)
    assert gateway.healthy()


# --- percent-encoding in the path and the query ------------------------------------------------------

PERCENT_CASES = {
    # (method, target, body, needs): expected. needs: "key" the API key, "session" the admin session + CSRF
    ("GET", "/api/v1/job/%zz", "key"): (404, "job_id"),
    ("GET", "/api/v1/job/%00", "key"): (404, "job_id"),
    ("GET", "/api/v1/job/%ff%fe", "key"): (404, "job_id"),
    ("POST", "/api/v1/generate/a%00b", "key"): (404, "slug"),
    ("POST", "/api/v1/generate/a%zzb", "key"): (404, "slug"),
    ("POST", "/api/v1/generate/%c0%af", "key"): (404, "slug"),
    ("POST", "/api/v1/job/%00/cancel", "key"): (404, "job_id"),
    ("GET", "/api/v1/jobs?status=%zz", "key"): (400, "status"),
    ("GET", "/api/v1/jobs?status=%00", "key"): (400, "status"),
    ("GET", "/api/v1/jobs?preset=%ff", "key"): (400, "preset"),
    ("GET", "/api/v1/jobs?preset=a%00b", "key"): (400, "preset"),
    ("GET", "/api/v1/jobs?cursor=%00%ff", "key"): (400, "cursor"),
    ("GET", "/api/v1/presets?api_key=%00", ""): (403, "X-API-Key"),
    ("GET", "/api/v1/presets?api_key=%ff", ""): (403, "X-API-Key"),
    ("GET", "/static/uploads/%zz", ""): (404, None),
    ("GET", "/static/uploads/a%00.png", ""): (404, None),
    ("GET", "/presets/a%00b", "session"): (404, "slug"),
    ("GET", "/presets/%ff/edit", "session"): (404, "slug"),
    ("GET", "/presets/%zz/gallery", "session"): (404, "slug"),
    ("GET", "/ui/jobs?ids=%00", "session"): (404, "job_id"),
    ("GET", "/ui/jobs?status=%ff", "session"): (400, "status"),
    ("GET", "/thumbs/256/%00.png", "session"): (404, None),
    ("POST", "/ui/jobs/%00/cancel", "session"): (404, "job_id"),
    ("POST", "/presets/a%00b/cover", "session"): (404, "slug"),
    ("GET", "/presets/a%00b", ""): (303, None),
    ("GET", "/login?next=%00", ""): (200, None),
    ("GET", "/login?next=/%ff%zz", ""): (200, None),
}


@pytest.mark.parametrize("method, target, needs", list(PERCENT_CASES), ids=" ".join)
def test_bad_percent_encoding_and_nul_in_the_path_and_query_are_4xx(gateway, method, target, needs):
    headers, body = [], b""
    if needs == "key":
        headers.append(b"X-API-Key: " + gateway.key.encode())
        body = b"{}" if method == "POST" else b""
    elif needs == "session":
        headers.append(b"Cookie: gaze_session=" + gateway.session.encode())
        headers.append(b"X-CSRF-Token: " + gateway.csrf.encode())
    if method == "POST":
        headers.append(b"Content-Length: %d" % len(body))
    answer = exchange(gateway.port, request(target.encode(), headers, body, method=method.encode()))
    status, field = PERCENT_CASES[(method, target, needs)]
    assert answer != CLOSED
    assert answer[0] == status, (answer[0], answer[2][:300])
    if field is not None:
        assert json.loads(answer[2])["field"] == field
    assert gateway.healthy()


# --- what the limits leave alone ---------------------------------------------------------------------

def test_large_bodies_and_many_requests_on_one_connection_pass_the_head_limits(gateway):
    """The head limits count the head only: a 200 KiB form sent with its head in one write, then more
    requests on the same connection, each head near the 64 KiB limit, are all answered by the app."""
    form = b"login_token=%ff&x=" + b"a" * 200_000
    big_head = [b"X-H%d: " % i + b"a" * 6000 for i in range(9)]   # 54 KiB of headers, each under 8 KiB
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=ANSWER_SECONDS) as sock:
        for raw, expected in (
                (request(b"/login", _login_headers(gateway) + [b"Content-Length: %d" % len(form)], form), 400),
                (request(b"/healthz", big_head, method=b"GET"), 200),
                (request(b"/login", _login_headers(gateway) + [TE], chunked(form[:70_000], form[70_000:])), 400),
                (request(b"/healthz", big_head, method=b"GET"), 200)):
            sock.sendall(raw)
            data, answer = b"", None
            while answer is None:
                chunk = sock.recv(65536)
                assert chunk, f"closed after {data[:200]!r}"
                data += chunk
                answer = _parse(data)
            assert answer[0] == expected, answer

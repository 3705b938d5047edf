"""The connection to a ComfyUI server (services/generator/backends/comfyui_transport.py), over a stand-in
for its HTTP session: what it asks, and that a cancel touches our prompt and no other. (Against the
ComfyUI-protocol test server: tests/integration/test_comfyui_backend.py.)"""
from __future__ import annotations

import math

import requests

from services.generator.backends.comfyui_prompt import JobClock
from services.generator.backends.comfyui_transport import Connection, queue_ids, websocket_url


class Answer:
    def __init__(self, status=200, body=None):
        self.status_code, self.body = status, body

    def json(self):
        return self.body

    def raise_for_status(self):
        if self.status_code >= 400:
            raise requests.HTTPError(f"HTTP {self.status_code}", response=self)


class Session:
    """What Connection asks of requests.Session: request(), close(). Answers /queue from `running`/`pending`."""

    def __init__(self, running=(), pending=(), refuse=False):
        self.running, self.pending, self.refuse = list(running), list(pending), refuse
        self.calls = []

    def request(self, method, url, timeout, **kwargs):
        self.calls.append((method, url.removeprefix("http://comfy"), kwargs.get("json"), timeout))
        if self.refuse:
            raise requests.ConnectionError("[Errno 111] Connection refused")
        if url.endswith("/queue") and method == "GET":
            return Answer(body={"queue_running": [[0, p] for p in self.running],
                                "queue_pending": [[i, p] for i, p in enumerate(self.pending)]})
        return Answer()

    def close(self):
        pass


def connection(session, deadline=math.inf) -> Connection:
    clock = JobClock(limit_seconds=60)
    clock.deadline = deadline
    server = Connection("http://comfy", "client-1", retry_seconds=1, clock=clock)
    server.http = session
    return server


def posts(session):
    return [(path, body) for method, path, body, _ in session.calls if method == "POST"]


def test_a_waiting_prompt_is_deleted_from_the_queue_and_only_it():
    session = Session(running=["theirs"], pending=["other", "ours"])
    assert connection(session).cancel("ours") == "removed from ComfyUI's queue"
    assert posts(session) == [("/queue", {"delete": ["ours"]})]


def test_a_running_prompt_is_interrupted_by_its_own_id():
    session = Session(running=["ours"], pending=["other"])
    assert connection(session).cancel("ours") == "interrupted on ComfyUI"
    assert posts(session) == [("/interrupt", {"prompt_id": "ours"})]


def test_a_prompt_that_is_gone_is_left_alone_and_so_is_the_one_running_instead():
    session = Session(running=["theirs"])
    assert connection(session).cancel("ours") == "no longer queued or running on ComfyUI"
    assert posts(session) == []


def test_a_silent_server_makes_the_cancel_an_outcome_not_an_error(caplog):
    # the outcome ends up in a job's error: its cause (and the server's URL) only in the log
    assert connection(Session(refuse=True)).cancel("ours") == "not cancelled: ComfyUI did not answer"
    assert "Connection refused" in caplog.text


def test_no_call_waits_past_the_jobs_deadline_but_each_gets_half_a_second():
    session = Session()
    connection(session, deadline=0.0).queue()      # long past
    connection(session).request("GET", "/history/x")
    assert [timeout for *_, timeout in session.calls] == [(5.0, 0.5), (5.0, 30.0)]


def test_a_queue_answer_gives_running_and_pending_ids():
    answer = {"queue_running": [[0, "p-run", {}, {}, []]], "queue_pending": [[1, "p-1"], [2, "p-2"], ["short"]]}
    assert queue_ids(answer) == ({"p-run"}, {"p-1", "p-2"})
    assert queue_ids({}) == (set(), set())


def test_the_websocket_sits_beside_the_http_url():
    assert websocket_url("http://gpu-3:8188") == "ws://gpu-3:8188/ws"
    assert websocket_url("https://comfy.example/base") == "wss://comfy.example/base/ws"

"""The Python client (clients/python, `gaze_client`) against a fake GAZE API in an httpx MockTransport
(tests/gaze_fake.py): requests, answers as typed models, safe retries, one exception class per kind of
answer, waiting on the event stream, downloads; the async client the same way."""
import asyncio
import json

import httpx
import pytest

import gaze_client
from gaze_client import (AlreadyEnded, AsyncClient, AuthenticationError, Client, ConnectionFailed, Conflict, GazeError,
                         Job, JobFailed, NotFound, PermissionDenied, RateLimited, ServerUnavailable, ValidationError,
                         WaitTimeout)
from tests.gaze_fake import BASE, IMAGE, KEY, FakeGaze, answer


def generate_requests(fake):
    return [r for r in fake.requests if r.method == "POST" and "/generate/" in r.url.path]


@pytest.fixture
def fake():
    return FakeGaze()


# --- configuration ------------------------------------------------------------------------------------

def test_url_and_key_come_from_the_environment(monkeypatch, fake):
    monkeypatch.setenv("GAZE_URL", BASE + "/")
    monkeypatch.setenv("GAZE_API_KEY", KEY)
    with Client(http_client=httpx.Client(transport=fake.transport())) as client:
        assert client.base_url == BASE
        assert [p.slug for p in client.presets()] == ["example_01"]
    request = fake.requests[-1]
    assert str(request.url) == BASE + "/api/v1/presets"
    assert request.headers["X-API-Key"] == KEY
    assert request.headers["User-Agent"] == f"gaze-client/{gaze_client.__version__}"


def test_arguments_win_over_the_environment_and_a_bad_url_is_refused(monkeypatch):
    monkeypatch.setenv("GAZE_URL", "http://elsewhere.test")
    assert Client("http://here.test").base_url == "http://here.test"
    monkeypatch.delenv("GAZE_URL")
    assert Client().base_url == "http://localhost:5782"
    with pytest.raises(GazeError, match="http:// or https://"):
        Client("localhost:5782")


# --- answers and errors -------------------------------------------------------------------------------

def test_generate_sends_only_the_fields_given_with_an_idempotency_key_and_returns_typed_jobs(fake):
    with fake.client() as client:
        jobs = client.generate("example_01", 2, seed=7, extra_positive="smiling")
    [post] = generate_requests(fake)
    assert json.loads(post.content) == {"count": 2, "seed": 7, "extra_positive": "smiling"}
    assert post.headers["Idempotency-Key"].startswith("gaze-client-")
    assert [job.id for job in jobs] == list(fake.jobs)
    assert all(isinstance(job, Job) and job.status == "pending" and not job.ended for job in jobs)
    assert jobs[0].model_extra == {"attempts": 1}     # the server's own keys are kept


@pytest.mark.parametrize("status, body, kind, field", [
    (400, {"error": "count: must be at most 20", "field": "count"}, ValidationError, "count"),
    (401, {"error": "missing API key", "field": "X-API-Key"}, AuthenticationError, "X-API-Key"),
    (403, {"error": "invalid API key", "field": "X-API-Key"}, PermissionDenied, "X-API-Key"),
    (404, {"error": "no such preset"}, NotFound, None),
    (413, {"error": "body: too large", "field": "body"}, ValidationError, "body"),
    (422, {"error": "Idempotency-Key: already used", "field": "Idempotency-Key"}, ValidationError, "Idempotency-Key"),
    (500, {"error": "internal error"}, ServerUnavailable, None),
])
def test_each_kind_of_error_answer_has_its_exception(fake, status, body, kind, field):
    fake.failures = [answer(status, body)]
    with fake.client() as client, pytest.raises(kind) as caught:
        client.generate("example_01")
    assert (caught.value.status_code, caught.value.field, caught.value.message) == (status, field, body["error"])
    assert len(fake.requests) == 1    # none of these is retried


def test_an_answer_that_is_not_json_is_still_a_gaze_error(fake):
    fake.failures = [httpx.Response(404, text="<html>not found</html>")]
    with fake.client() as client, pytest.raises(NotFound, match="HTTP 404"):
        client.job("783f0268-ba85-4426-8ca2-6393c844c887")


# --- retries ------------------------------------------------------------------------------------------

def test_generate_retried_after_a_503_sends_the_same_key_and_body(fake):
    fake.failures = [answer(503, {"error": "the message broker is not reachable"}, {"Retry-After": "5"}),
                     httpx.ConnectError("refused"), answer(502), answer(504)]
    with fake.client() as client:
        jobs = client.generate("example_01", 3, seed=1)
    posts = generate_requests(fake)
    assert len(posts) == 5
    assert len({p.headers["Idempotency-Key"] for p in posts}) == 1
    assert len({p.content for p in posts}) == 1
    assert len(jobs) == 3 == len(fake.jobs)


def test_a_given_idempotency_key_is_used(fake):
    with fake.client() as client:
        client.generate("example_01", idempotency_key="my-key-1")
    assert generate_requests(fake)[0].headers["Idempotency-Key"] == "my-key-1"


def test_a_409_still_in_progress_is_retried_for_generate_only(fake):
    busy = answer(409, {"error": "Idempotency-Key: still being processed", "field": "Idempotency-Key"},
                  {"Retry-After": "1"})
    fake.failures = [busy]
    with fake.client() as client:
        assert len(client.generate("example_01")) == 1
        fake.failures = [answer(409, {"error": "conflict"})]
        with pytest.raises(Conflict):
            client.generate("example_01")
    assert len(generate_requests(fake)) == 3


def test_429_waits_as_long_as_retry_after_says_within_the_cap(fake, monkeypatch):
    pauses = []
    monkeypatch.setattr("gaze_client._sync.time.sleep", pauses.append)
    fake.failures = [answer(429, {"error": "too many"}, {"Retry-After": "2"}),
                     answer(429, {"error": "too many"}, {"Retry-After": "100"})]
    with fake.client(backoff_cap=30) as client:
        client.presets()
    assert pauses == [2.0, 30.0]


def test_backoff_without_retry_after_grows_with_jitter_up_to_the_cap(fake, monkeypatch):
    pauses = []
    monkeypatch.setattr("gaze_client._sync.time.sleep", pauses.append)
    fake.failures = [httpx.ConnectError("refused")] * 5
    with fake.client(backoff_cap=3, max_retries=5) as client:
        client.presets()
    bounds = [0.5, 1, 2, 3, 3]
    assert all(bound / 2 <= pause <= bound for pause, bound in zip(pauses, bounds)), pauses


def test_retries_run_out_into_the_clients_own_exceptions(fake):
    fake.failures = [httpx.ConnectError("refused")] * 3
    with fake.client(max_retries=2) as client, pytest.raises(ConnectionFailed, match="after 3 tries") as caught:
        client.presets()
    assert isinstance(caught.value, ServerUnavailable) and not isinstance(caught.value, httpx.HTTPError)
    fake.failures = [answer(429, {"error": "slow down"}, {"Retry-After": "7"})] * 3
    with fake.client(max_retries=2) as client, pytest.raises(RateLimited) as limited:
        client.presets()
    assert limited.value.retry_after == 7.0
    fake.failures = [httpx.ReadTimeout("slow")]
    with fake.client(max_retries=0) as client, pytest.raises(ConnectionFailed, match="timed out"):
        client.presets()


# --- jobs, cancel, wait, events, download, run -------------------------------------------------------

def test_jobs_iterates_over_every_page(fake):
    ids = [fake.add_job(("done", 20)) for _ in range(5)] + [fake.add_job(("failed", None))]
    with fake.client() as client:
        assert [job.id for job in client.jobs(page_size=2)] == ids
        assert [job.id for job in client.jobs("failed")] == ids[5:]
    pages = [r.url.params for r in fake.requests if r.url.path == "/api/v1/jobs"]
    assert [p.get("cursor") for p in pages[:3]] == [None, "2", "4"]
    assert pages[0]["limit"] == "2"


def test_cancel_counts_an_already_cancelled_job_as_success(fake):
    running, done = fake.add_job(("processing", 3)), fake.add_job(("done", 20))
    with fake.client() as client:
        assert client.cancel(running).status == "cancelled"
        assert client.cancel(running).status == "cancelled"       # a retried cancel: 409 cancelled
        with pytest.raises(AlreadyEnded) as ended:
            client.cancel(done)
    assert ended.value.status == "done" and ended.value.status_code == 409


def test_wait_reads_the_jobs_then_follows_the_stream_to_their_end(fake):
    first, second = fake.add_job(), fake.add_job(("pending", None), ("failed", None))
    seen = []
    with fake.client() as client:
        jobs = client.wait([first, second], timeout=5, on_update=seen.append)
        assert client.wait(first).status == "done"           # one job in, one Job out
    assert [(job.id, job.status) for job in jobs] == [(first, "done"), (second, "failed")]
    assert [(job.id, job.status) for job in seen] == [
        (first, "pending"), (second, "pending"), (first, "processing"), (first, "done"), (second, "failed")]
    assert jobs[1].error == "backend exploded"
    paths = [r.url.path for r in fake.requests]
    assert paths[0] == "/api/v1/events" and paths[1:3] == [f"/api/v1/job/{first}", f"/api/v1/job/{second}"]


def test_an_older_state_never_replaces_a_newer_one(fake):
    job_id = fake.add_job(("processing", 10), ("pending", None), ("processing", 5), ("done", 20))
    seen = []
    with fake.client() as client:
        client.wait(job_id, on_update=seen.append)
    assert [(job.status, job.progress and job.progress.value) for job in seen] == [("processing", 10), ("done", 20)]


def test_wait_times_out_with_the_jobs_as_last_seen(fake):
    job_id = fake.add_job(("processing", 3), ("done", 20))
    fake.silent_streams = True
    with fake.client() as client, pytest.raises(WaitTimeout) as caught:
        client.wait([job_id], timeout=0.2)
    assert [job.status for job in caught.value.pending] == ["processing"]


def test_wait_on_an_unknown_job_is_not_found(fake):
    with fake.client() as client, pytest.raises(NotFound):
        client.wait("783f0268-ba85-4426-8ca2-6393c844c887", timeout=1)


def test_events_of_one_job_end_with_it(fake):
    job_id = fake.add_job()
    with fake.client() as client:
        assert [job.status for job in client.events(job_id)] == ["pending", "processing", "done"]


def test_a_broken_job_stream_is_reopened_where_it_left_off(fake):
    """The connection drops after each new event, twice: the client reconnects with Last-Event-ID, skips
    the state the server repeats on a reconnect, and yields each state once, ending with the job."""
    job_id = fake.add_job()
    fake.breaking_streams = 2
    with fake.client() as client:
        assert [job.status for job in client.events(job_id)] == ["pending", "processing", "done"]
    resumes = [r.headers.get("Last-Event-ID") for r in fake.requests if r.url.path.endswith("/events")]
    assert resumes == [None, "0", "1"]


def test_a_job_stream_that_keeps_breaking_gives_up_after_max_retries(fake):
    job_id = fake.add_job(("processing", 3))   # a job whose stream only ever repeats its state, then breaks
    fake.breaking_streams = 100
    with fake.client(max_retries=2) as client, pytest.raises(ConnectionFailed):
        list(client.events(job_id))


def test_async_events_reconnect_too(fake):
    job_id = fake.add_job()
    fake.breaking_streams = 1

    async def statuses():
        async with fake.client(AsyncClient) as client:
            return [job.status async for job in client.events(job_id)]

    assert asyncio.run(statuses()) == ["pending", "processing", "done"]


def test_download_saves_the_image_and_refuses_a_failed_job(fake, tmp_path):
    done, failed = fake.add_job(("done", 20)), fake.add_job(("failed", None))
    with fake.client() as client:
        path = client.download(done, tmp_path / "out")
        assert path.read_bytes() == IMAGE and path.name == f"gen_1_{done[:8]}.png"
        with pytest.raises(JobFailed, match="backend exploded"):
            client.download(failed, tmp_path)
        with pytest.raises(GazeError, match="wait for it"):
            client.download(fake.add_job(("pending", None)), tmp_path)
    image_requests = [r for r in fake.requests if r.url.path.startswith("/static/uploads/")]
    assert len(image_requests) == 1


def test_run_generates_waits_and_downloads(fake, tmp_path):
    with fake.client() as client:
        paths = client.run("example_01", 2, out_dir=tmp_path, seed=3)
        assert sorted(p.name for p in paths) == sorted(p.name for p in tmp_path.iterdir())
        fake.script = [("pending", None), ("failed", None)]
        with pytest.raises(JobFailed) as caught:
            client.run("example_01", out_dir=tmp_path)
    assert caught.value.job.status == "failed" and len(caught.value.jobs) == 1


# --- the async client ---------------------------------------------------------------------------------

def test_the_async_client_does_the_same(fake, tmp_path):
    async def scenario():
        async with fake.client(AsyncClient) as client:
            fake.failures = [answer(503, {"error": "down"}), httpx.ConnectError("refused")]
            jobs = await client.generate("example_01", 2, wait=True, timeout=5)
            assert [job.status for job in jobs] == ["done", "done"]
            assert len({p.headers["Idempotency-Key"] for p in generate_requests(fake)}) == 1
            path = await client.download(jobs[0], tmp_path)
            assert path.read_bytes() == IMAGE
            listed = [job.id async for job in client.jobs(page_size=1)]
            assert listed == [job.id for job in jobs]
            assert [job.status async for job in client.events(jobs[0])] == ["pending", "processing", "done"]
            assert [p.slug for p in await client.presets()] == ["example_01"]
            assert (await client.cancel(fake.add_job(("pending", None)))).status == "cancelled"
            assert len(await client.run("example_01", out_dir=tmp_path / "run")) == 1
            fake.silent_streams = True
            with pytest.raises(WaitTimeout):
                await client.wait(fake.add_job(("pending", None)), timeout=0.2)
            fake.failures = [answer(400, {"error": "seed: must be at least 0", "field": "seed"})]
            with pytest.raises(ValidationError) as caught:
                await client.generate("example_01", seed=-1)
            assert caught.value.field == "seed"
    asyncio.run(scenario())

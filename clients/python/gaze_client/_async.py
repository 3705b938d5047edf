"""The asynchronous client: the same methods as Client, awaited (`jobs` and `events` are async iterators)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import AsyncIterator, Iterable, Optional, Union, overload

import httpx
from httpx_sse import aconnect_sse

from gaze_client import _base, errors
from gaze_client._base import JobRef, OnUpdate
from gaze_client._version import __version__
from gaze_client.models import Cancelled, Job, JobPage, Preset

from gaze_client._sync import STREAM_READ_TIMEOUT


class AsyncClient:
    """A GAZE server's REST API, for asyncio: the same methods as `Client`, awaited; `jobs` and `events` are
    async iterators (close an unfinished `events` with `contextlib.aclosing`).

    `base_url` defaults to $GAZE_URL, then http://localhost:5782; `api_key` to $GAZE_API_KEY. Every request
    is retried on a connection error, 429 (after its Retry-After), 502, 503 and 504, up to `max_retries`
    times with exponential backoff and jitter (at most `backoff_cap` seconds between tries). `generate`
    sends an Idempotency-Key it makes up, so a retry can neither create a second set of jobs nor lose the
    first. Use it as a context manager, or call `close()`.

    `http_client`: an httpx.AsyncClient of your own (proxies, certificates, event hooks); it is not closed here.
    """

    def __init__(self, base_url: Optional[str] = None, api_key: Optional[str] = None, *,
                 timeout: float = _base.DEFAULT_TIMEOUT, max_retries: int = _base.DEFAULT_MAX_RETRIES,
                 backoff_cap: float = _base.DEFAULT_BACKOFF_CAP, http_client: Optional[httpx.AsyncClient] = None):
        self._config = _base.Config.resolve(base_url, api_key, timeout, max_retries, backoff_cap)
        self._headers = self._config.headers(__version__)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)

    @property
    def base_url(self) -> str:
        return self._config.base_url

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # --- HTTP ---------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, retry_conflict: bool = False, headers: Optional[dict] = None,
                 **kwargs) -> httpx.Response:
        config, attempts = self._config, _base.Attempts(self._config)
        while True:
            try:
                response = await self._http.request(method, config.base_url + path,
                                                    headers={**self._headers, **(headers or {})}, **kwargs)
            except httpx.TransportError as exc:
                await asyncio.sleep(attempts.pause_after_error(exc))
                continue
            pause = attempts.pause_after_answer(response, retry_conflict)
            if pause is None:
                _base.raise_for(response)
                return response
            await asyncio.sleep(pause)

    @contextlib.asynccontextmanager
    async def _stream(self, path: str, params: Optional[dict] = None, read: Optional[float] = STREAM_READ_TIMEOUT,
                      headers: Optional[dict] = None):
        """An open server-sent event stream (httpx_sse.EventSource), opened with the same retries as any
        request; a stream that breaks later raises ConnectionFailed."""
        config, attempts = self._config, _base.Attempts(self._config)
        while True:
            stack = contextlib.AsyncExitStack()
            try:
                source = await stack.enter_async_context(aconnect_sse(
                    self._http, "GET", config.base_url + path, params=params, headers={**self._headers, **(headers or {})},
                    timeout=httpx.Timeout(config.timeout, read=read)))
            except httpx.TransportError as exc:
                await asyncio.sleep(attempts.pause_after_error(exc))
                continue
            response = source.response
            if response.status_code == 200:
                break
            async with stack:
                await response.aread()
            pause = attempts.pause_after_answer(response)
            if pause is not None:
                await asyncio.sleep(pause)
                continue
            _base.raise_for(response)
            raise errors.GazeError(f"the server answered {response.status_code} instead of an event stream",
                                   status_code=response.status_code)
        async with stack:
            yield source

    # --- the API ------------------------------------------------------------------------------------

    async def presets(self) -> list[Preset]:
        """Every preset (GET /api/v1/presets)."""
        body = _base.expect_json(await self._request("GET", "/api/v1/presets"))
        return [Preset.model_validate(preset) for preset in body["presets"]]

    async def generate(self, slug: str, count: int = 1, *, seed: Optional[int] = None,
                 extra_positive: Optional[str] = None, extra_negative: Optional[str] = None,
                 checkpoint: Optional[str] = None, width: Optional[int] = None, height: Optional[int] = None,
                 webhook: Optional[str] = None, webhook_events_filter: Optional[list[str]] = None,
                 idempotency_key: Optional[str] = None, wait: bool = False, timeout: Optional[float] = None,
                 on_update: OnUpdate = None) -> list[Job]:
        """Queue `count` images of the preset `slug` (the preset's settings for every field not given); the
        jobs, as they are now or, with `wait=True`, once they have all ended (see `wait`). The request
        carries `idempotency_key` (one made up when not given) on every try."""
        body = _base.generate_body(count, seed, extra_positive, extra_negative, checkpoint, width, height,
                                   webhook, webhook_events_filter)
        key = idempotency_key or _base.new_idempotency_key()
        response = await self._request("POST", _base.generate_path(slug), json=body,
                                 headers={"Idempotency-Key": key}, retry_conflict=True)
        ids = _base.queued_ids(_base.expect_json(response))
        if wait:
            return await self.wait(ids, timeout=timeout, on_update=on_update)
        return list(await asyncio.gather(*(self.job(job_id) for job_id in ids)))

    async def job(self, job: JobRef) -> Job:
        """A job as it is now (GET /api/v1/job/<id>)."""
        return Job.model_validate(_base.expect_json(await self._request("GET", _base.job_path(job))))

    async def jobs(self, status: Optional[str] = None, *, preset: Optional[str] = None, since: Optional[float] = None,
             page_size: Optional[int] = None) -> AsyncIterator[Job]:
        """The API key's jobs, newest first, across every page (fetched as the iteration reaches them)."""
        cursor = None
        while True:
            params = _base.jobs_params(status, preset, since, page_size, cursor)
            page = JobPage.model_validate(_base.expect_json(await self._request("GET", "/api/v1/jobs", params=params)))
            for job in page.jobs:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def cancel(self, job: JobRef) -> Cancelled:
        """Cancel a job that has not ended. A job already cancelled (by an earlier try of this call, or by
        anyone) counts as success; one that ended otherwise raises AlreadyEnded."""
        try:
            body = _base.expect_json(await self._request("POST", _base.job_path(job, "/cancel")))
        except errors.AlreadyEnded as exc:
            if exc.status != "cancelled":
                raise
            body = {"id": _base.job_id(job), "status": "cancelled"}
        return Cancelled.model_validate(body)

    @overload
    async def wait(self, jobs: JobRef, timeout: Optional[float] = None, on_update: OnUpdate = None) -> Job: ...

    @overload
    async def wait(self, jobs: Iterable[JobRef], timeout: Optional[float] = None, on_update: OnUpdate = None) -> list[Job]: ...

    async def wait(self, jobs, timeout=None, on_update=None):
        """The job(s) once ended (done, failed or cancelled), in the order given: one Job for one id, a list
        for a list. Follows the key's event stream (GET /api/v1/events) and reads each job when it opens,
        so no change is missed; jobs of another key are read again every few seconds. `on_update(job)` is
        called with every new state seen. Raises WaitTimeout after `timeout` seconds (None: no limit); a
        failed job is not an error here (see `run`)."""
        ids, single = _base.job_ids(jobs)
        tracker = _base.Tracker(ids, on_update)
        deadline = None if timeout is None else time.monotonic() + timeout
        config, failures = self._config, 0
        while True:
            try:
                outcome = await self._follow(tracker, deadline)
            except httpx.TransportError as exc:     # a read timeout is a silence (see _follow)
                outcome = _base.SILENT if isinstance(exc, httpx.ReadTimeout) else exc
            if outcome is _base.FINISHED:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise tracker.timeout(timeout)
            if outcome is _base.SILENT:
                failures = 0
                continue                            # open the stream again and read the jobs again
            failures += 1                           # the stream broke or the server closed it
            if failures > config.max_retries:
                raise _base.connection_failed(outcome, failures)
            await asyncio.sleep(_base.pause(failures - 1, config.backoff_cap, deadline, time.monotonic()))
        result = tracker.result()
        return result[0] if single else result

    async def _follow(self, tracker: _base.Tracker, deadline: Optional[float]):
        """Open the key's stream, read the jobs, then apply the stream's changes until every job ended
        (FINISHED), RESYNC_SECONDS pass without news or the deadline comes (SILENT), or the server closes
        the stream (a RemoteProtocolError to retry)."""
        window = _base.read_window(deadline, time.monotonic())
        async with self._stream("/api/v1/events", read=window) as source:
            for job_id in tracker.unfinished:       # after the stream opened: nothing falls in between
                tracker.offer(await self.job(job_id))
            synced = time.monotonic()
            if tracker.finished:
                return _base.FINISHED
            async for event in source.aiter_sse():
                if event.event == "status":
                    tracker.offer(event.json())
                if tracker.finished:
                    return _base.FINISHED
                now = time.monotonic()
                if (deadline is not None and now >= deadline) or now - synced >= _base.RESYNC_SECONDS:
                    return _base.SILENT
        return httpx.RemoteProtocolError("the server closed the event stream")

    async def events(self, job: Optional[JobRef] = None, *, preset: Optional[str] = None) -> AsyncIterator[Job]:
        """Server-sent events as Job documents: of one job (its state now, then every change, ending after
        it ends), or with no job, of every job of the API key from now on (`preset` keeps one preset's),
        never ending by itself. A broken stream is reopened with Last-Event-ID (the server then sends the
        job's current state; on the key's stream, changes while it was broken are not replayed); after
        max_retries breaks in a row, ConnectionFailed."""
        path = _base.job_path(job, "/events") if job is not None else "/api/v1/events"
        params = {"preset": preset} if preset else None
        last_id, broken = None, 0
        while True:
            resume = {"Last-Event-ID": last_id} if last_id else None
            try:
                async with self._stream(path, params, headers=resume) as source:
                    async for event in source.aiter_sse():
                        if event.event != "status" or (event.id and event.id == last_id):
                            continue   # after a reconnect the server repeats the state we already have
                        last_id, broken = event.id or last_id, 0
                        update = Job.model_validate(event.json())
                        yield update
                        if job is not None and update.ended:
                            return
            except httpx.TransportError as exc:
                broken += 1
                if broken > self._config.max_retries:
                    raise _base.connection_failed(exc, broken) from exc
            # the stream broke or the server closed it early (a restart): reconnect, resuming
            await asyncio.sleep(_base.retry_delay(broken, self._config.backoff_cap))

    async def download(self, job: JobRef, directory: Union[str, os.PathLike] = ".") -> Path:
        """Save a done job's image in `directory` (made if missing) under its server-side file name; returns
        the file's path. JobFailed for a failed or cancelled job."""
        job = job if isinstance(job, Job) else await self.job(job)
        url, target = _base.image_target(job, directory)
        content = (await self._request("GET", url)).content
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(content)
        partial.replace(target)
        return target

    async def run(self, slug: str, count: int = 1, *, out_dir: Union[str, os.PathLike] = ".",
            timeout: Optional[float] = None, **params) -> list[Path]:
        """generate + wait + download: the image files, one per job. JobFailed when a job failed or was
        cancelled; WaitTimeout after `timeout` seconds."""
        jobs = await self.generate(slug, count, wait=True, timeout=timeout, **params)
        for job in jobs:
            if job.status != "done":
                raise errors.JobFailed(job, jobs)
        return [await self.download(job, out_dir) for job in jobs]

"""gaze_client: the Python client of a GAZE server's REST API, and the `gaze-client` command line.

    from gaze_client import Client

    with Client() as gaze:                      # GAZE_URL and GAZE_API_KEY from the environment
        paths = gaze.run("example_01", count=2, seed=7, out_dir="images")

`AsyncClient` has the same methods for asyncio. Every error is a `GazeError` (see gaze_client.errors).
"""
from gaze_client._async import AsyncClient
from gaze_client._sync import Client
from gaze_client._version import __version__
from gaze_client.errors import (AlreadyEnded, AuthenticationError, Conflict, ConnectionFailed, GazeError, JobFailed,
                                NotFound, PermissionDenied, RateLimited, ServerUnavailable, ValidationError,
                                WaitTimeout)
from gaze_client.models import STATUSES, TERMINAL, Cancelled, Job, JobPage, Preset, Progress, Result

__all__ = [
    "AsyncClient", "Client", "__version__",
    "AlreadyEnded", "AuthenticationError", "Conflict", "ConnectionFailed", "GazeError", "JobFailed", "NotFound",
    "PermissionDenied", "RateLimited", "ServerUnavailable", "ValidationError", "WaitTimeout",
    "STATUSES", "TERMINAL", "Cancelled", "Job", "JobPage", "Preset", "Progress", "Result",
]

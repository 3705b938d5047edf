"""The wire between a replica and its worker process: one stream socket (a socketpair), each message a
4-byte big-endian length followed by a pickled tuple `(kind, *fields)`.

Both ends are GAZE's own processes started from the same code, so pickle is safe here and carries the
PNG bytes without copying them into base64. This module holds no lock and starts no thread: the replica
uses it from green threads over a green socket, the worker from OS threads over a plain one (with its own
lock around `send`).

Replica → worker: ("init", settings dict, replica name) first, then ("job", job_id, spec dict), ("cancel", job_id),
("ping", n), ("health",), ("stop",).
Worker → replica: ("ready", info) | ("fatal", reason) once, then ("started", job_id), ("progress", job_id,
value, max), ("alive", job_id), ("handle", job_id, handle), ("loaded", job_id, checkpoint, seconds, resident),
("done", job_id, png, width, height, metadata, seconds), ("failed", job_id, reason, crashed, detail),
("pong", n), ("health", ok, detail, checkpoints).
"loaded": for this job the backend changed the model it holds to `checkpoint`, which took `seconds` (part of
the job's own `seconds` in "done"); `resident`: the checkpoints it keeps in memory, or None where it cannot tell.
A failure's `reason` is the job's public error (what its client reads: nothing internal), its `detail`
the operator's (services/generator/backends/base.py `Reason`).
"""
from __future__ import annotations

import pickle
import struct

HEADER = struct.Struct(">I")
MAX_MESSAGE = 512 * 1024 * 1024     # a 4096² PNG is far below this; anything larger is a broken stream


class ChannelClosed(Exception):
    """The other end went away (its process exited, or closed the socket)."""


def encode(message: tuple) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def send(sock, message: tuple) -> None:
    try:
        sock.sendall(encode(message))
    except OSError as exc:
        raise ChannelClosed(str(exc)) from None


def receive(sock) -> tuple:
    (size,) = HEADER.unpack(_exactly(sock, HEADER.size))
    if size > MAX_MESSAGE:
        raise ChannelClosed(f"message of {size} bytes: the stream is broken")
    return pickle.loads(_exactly(sock, size))


def _exactly(sock, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        try:
            n = sock.recv_into(view[got:], size - got)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None
        if n == 0:
            raise ChannelClosed("end of stream")
        got += n
    return bytes(buffer)

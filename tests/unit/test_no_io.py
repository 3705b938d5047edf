"""The guard that keeps the unit tests free of I/O (`no_io`: tests/unit/conftest.py, tests/io_guard.py)
refuses what it must, and no more. Each test that provokes a refusal clears the attempts it expected:
left there, they would fail it at teardown, which is the point of the last test."""
import socket
import subprocess
import sys

import psycopg
import pytest
import redis

from tests.io_guard import UnitTestIO


def test_a_tcp_connection_to_localhost_is_refused(no_io):
    with pytest.raises(UnitTestIO, match=r"must not connect to \('127.0.0.1', 6379\)"):
        socket.create_connection(("127.0.0.1", 6379), timeout=1)
    with socket.socket() as sock, pytest.raises(UnitTestIO):
        sock.connect_ex(("127.0.0.1", 5672))
    assert no_io.attempts == ["connect to ('127.0.0.1', 6379)", "connect to ('127.0.0.1', 5672)"]
    no_io.attempts.clear()


def test_a_unix_socket_connection_is_refused(no_io, tmp_path):
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(UnitTestIO, match="must not connect"):
        sock.connect(str(tmp_path / "server.sock"))
    assert len(no_io.attempts) == 1
    no_io.attempts.clear()


def test_postgresql_is_refused_though_libpq_opens_its_sockets_itself(no_io):
    for connect in (psycopg.connect, psycopg.Connection.connect):
        with pytest.raises(UnitTestIO, match="must not connect to PostgreSQL"):
            connect("postgresql://postgres@127.0.0.1:5432/postgres")
    assert len(no_io.attempts) == 2
    no_io.attempts.clear()


def test_a_process_is_refused(no_io):
    with pytest.raises(UnitTestIO, match="must not start a process"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert len(no_io.attempts) == 1
    no_io.attempts.clear()


def test_a_socketpair_and_files_are_allowed(no_io, tmp_path):
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"ping")
        assert right.recv(4) == b"ping"
    (tmp_path / "note.txt").write_text("written")
    assert no_io.attempts == []


def test_an_attempt_the_code_under_test_swallows_is_still_remembered(no_io):
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
    except Exception:
        pass   # as code that serves without its cache would
    assert no_io.attempts == ["connect to ('127.0.0.1', 6379)"]
    assert "unit tests do no I/O" in no_io.report() and "tests/integration" in no_io.report()
    no_io.attempts.clear()   # left there, the fixture fails this test at teardown with that report

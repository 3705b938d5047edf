"""What keeps the unit tests free of I/O (tests/unit/conftest.py installs it around every unit test): a
network connection (TCP, or a Unix socket; to localhost too), a PostgreSQL connection or a new process
is refused with UnitTestIO, and remembered, so that the test fails even when the code under test caught
the error. A socketpair connects nothing and is left alone; so are files.

Hand-written rather than pytest-socket: that plugin resets `socket.socket` after every test to the class
it saw when pytest started, before tests/conftest.py let eventlet patch it, which turns the green
sockets of the integration tests later in the same run back into blocking ones; and it sees neither
libpq's own connections nor an attempt that the code under test swallowed."""
import socket
import subprocess

import psycopg


class UnitTestIO(RuntimeError):
    """Raised where a unit test reaches for I/O. Not an OSError, so that no retry loop in the code under
    test takes it for a server that may come back."""


class IOGuard:
    def __init__(self):
        self.attempts = []

    def install(self, monkeypatch):
        """Refuse I/O until `monkeypatch` undoes it (at the end of the test)."""
        refuse = self.refuse

        def socket_connect(sock, address):
            sock.close()   # the caller never gets the socket back to close it
            refuse(f"connect to {address!r}")

        def database_connect(conninfo="", **kwargs):
            refuse(f"connect to PostgreSQL ({conninfo or kwargs})")

        def start_process(popen, args, *rest):
            refuse(f"start a process {args!r}")

        # socket.socket is eventlet's GreenSocket in the tests (tests/conftest.py): every client connects
        # through it. libpq opens its sockets in C, so PostgreSQL is refused where psycopg calls it.
        monkeypatch.setattr(socket.socket, "connect", socket_connect)
        monkeypatch.setattr(socket.socket, "connect_ex", socket_connect)
        monkeypatch.setattr(psycopg.Connection, "connect", database_connect)
        monkeypatch.setattr(psycopg, "connect", database_connect)
        monkeypatch.setattr(subprocess.Popen, "_execute_child", start_process)

    def refuse(self, attempt):
        self.attempts.append(attempt)
        raise UnitTestIO(f"a unit test must not {attempt}")

    def report(self):
        """Why the test fails: every attempt it made."""
        return ("unit tests do no I/O (tests/unit/conftest.py), and this one tried to:\n  "
                + "\n  ".join(self.attempts)
                + "\nTest it in tests/integration, or give the code a fake (tests/fakes.py).")

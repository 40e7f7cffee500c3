"""Connections close what they open: ``with``, ``close()``, and a dropped connection."""

from __future__ import annotations

import gc
import time
import warnings
from pathlib import Path

import polars as pl

import crmframes as cf
from crmframes.sandbox import CREDS
from tests.conftest import sandbox


def open_client_sockets(port: int) -> int:
    """Established TCP connections from this machine to ``port`` (the client side only).

    The sandbox (uvicorn) drops idle keep-alive connections after 5 s, so a count taken
    within a second shows what the client left open."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, remote, state = line.split()[1:4]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port and int(local.rsplit(":", 1)[1], 16) != port:
                n += 1
    return n


def settled_count(port: int, at_most: int, timeout: float = 1.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        n = open_client_sockets(port)
        if n <= at_most or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


FRAME = pl.DataFrame({"contact_key": [f"k{i}" for i in range(3)], "email": [f"p{i}@example.com" for i in range(3)]})


def test_twenty_submits_with_fresh_connections_leave_no_socket_open():
    with sandbox(time_scale=0.001, job_duration=0.05) as sb, warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # an unclosed transport would warn
        port = int(sb.url.rsplit(":", 1)[1])
        for _ in range(20):
            conn = cf.Dotdigital(*CREDS["dotdigital"], base_url=sb.url)
            frame = pl.DataFrame({"email": ["a@example.com", "b@example.com"]})
            job = frame.crm.submit(conn.contacts(7), progress=False)
            assert job.counts() == {"accepted": 2}
            del conn, job
        assert settled_count(port, 0) == 0


def test_with_block_and_close_close_the_http_client_and_it_reopens_on_use():
    with sandbox(time_scale=0.001, job_duration=0.05) as sb:
        port = int(sb.url.rsplit(":", 1)[1])
        with cf.Dengage(*CREDS["dengage"], base_url=sb.url) as dn:
            assert FRAME.crm.submit(dn.contacts(insert_if_not_exists=True), progress=False).counts() == {"accepted": 3}
            assert open_client_sockets(port) >= 1
        assert settled_count(port, 0) == 0, "the with block closed the client"
        # used again after close: a new client, then close() closes it
        assert FRAME.crm.submit(dn.contacts(), progress=False).counts() == {"accepted": 3}
        assert open_client_sockets(port) >= 1
        dn.close()
        assert settled_count(port, 0) == 0
        dn.close()  # closing twice is harmless

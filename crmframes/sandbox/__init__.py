"""The embedded vendor sandbox: ``with cf.sandbox() as sb: dd = sb.dotdigital()``.

Serves ``Sandbox`` (an ASGI app emulating the five endpoints) with uvicorn on a free
loopback port in a background thread. Imported lazily: ``import crmframes`` does not
load starlette or uvicorn.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from types import TracebackType
from typing import Any

import httpx

from crmframes._errors import ConfigError, CrmError
from crmframes.sandbox._app import CREDS, VARIANTS, Knobs, Sandbox

__all__ = ["CREDS", "VARIANTS", "Knobs", "Sandbox", "ServedSandbox", "sandbox"]


class ServedSandbox:
    """A sandbox served on 127.0.0.1; use as a context manager or call ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        import uvicorn

        self.sandbox = Sandbox(**options)
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            self.sandbox, host=host, port=port, log_level="error", lifespan="off", timeout_graceful_shutdown=1
        )
        _quiet_dropped_answers()
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="crmframes-sandbox", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise CrmError(f"the sandbox did not start on {self.url}")
            time.sleep(0.01)

    def __repr__(self) -> str:
        return f"<crmframes sandbox at {self.url}>"

    def state(self, settled: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """What the account holds. ``settled=True`` first waits for every running import
        to finish: an import whose answer was lost is never polled by the client, yet
        it still lands at the vendor, a little later."""
        deadline = time.monotonic() + timeout
        while True:
            r = httpx.get(self.url + "/_sandbox/state", timeout=10)
            if not settled or r.headers.get("x-sandbox-running-jobs", "0") == "0":
                return r.json()
            if time.monotonic() > deadline:
                raise TimeoutError(f"sandbox imports still running after {timeout} s")
            time.sleep(0.02)

    def config(self, **knobs: Any) -> dict[str, Any]:
        r = httpx.post(self.url + "/_sandbox/config", json=knobs, timeout=10)
        r.raise_for_status()
        return r.json()

    def data_fields(self, **fields: str) -> None:
        """Give the Dotdigital account more contact data fields, ``FIELD="String"`` (or
        Numeric, Date, Boolean), as creating them in Dotdigital does (``POST /v2/data-fields``)."""
        for name, kind in fields.items():
            r = httpx.post(
                self.url + "/v2/data-fields",
                json={"name": name, "type": kind},
                timeout=10,
                auth=(CREDS["dotdigital"][0], CREDS["dotdigital"][1]),
            )
            if r.status_code not in (200, 201) and "NON_UNIQUE" not in r.text:
                raise ConfigError(f"data field {name!r}: {r.text}")

    def connect(self, vendor: str) -> Any:
        """A connection of ``vendor`` (its key, e.g. ``"dotdigital"``) to this sandbox, with the
        sandbox's credentials; ``sb.dotdigital()`` is the same as ``sb.connect("dotdigital")``."""
        from crmframes._connection import connection_class

        return connection_class(vendor)(*CREDS[vendor], base_url=self.url)  # type: ignore[call-arg]

    def __getattr__(self, name: str) -> Any:
        if name in CREDS:
            return lambda: self.connect(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ServedSandbox:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


class _DroppedAnswer(logging.Filter):
    """uvicorn reports an answer the sandbox cut on purpose (``p_drop``); the sandbox already
    logged it in one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _quiet_dropped_answers() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DroppedAnswer) for f in logger.filters):
        logger.addFilter(_DroppedAnswer())


def sandbox(**options: Any) -> ServedSandbox:
    """Start the sandbox on a free loopback port; knobs as in DESIGN §7 (latency, job_duration, …)."""
    return ServedSandbox(**options)


class _CallableModule(sys.modules[__name__].__class__):  # type: ignore[misc]
    """``cf.sandbox(...)`` keeps working after ``import crmframes.sandbox`` rebinds the name."""

    def __call__(self, **options: Any) -> ServedSandbox:
        return sandbox(**options)


sys.modules[__name__].__class__ = _CallableModule

"""One background event-loop thread behind every blocking call (STYLE 5).

All engine work runs on this loop, whoever asks: blocking calls wait on a future, async
twins await the same future from their own loop. So the HTTP clients, budgets and rate
pacers live on one loop and are shared by every job in the process, and blocking calls
work inside Jupyter's already running loop without ``nest_asyncio``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve(lp: asyncio.AbstractEventLoop = _loop) -> None:
                asyncio.set_event_loop(lp)
                lp.call_soon(ready.set)
                lp.run_forever()

            _thread = threading.Thread(target=serve, name="crmframes-engine", daemon=True)
            _thread.start()
            ready.wait()
        return _loop


def current() -> asyncio.AbstractEventLoop | None:
    """The engine loop if one was started (never starts one)."""
    return _loop if _thread is not None and _thread.is_alive() else None


def on_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def start(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the engine loop; returns at once."""
    return asyncio.run_coroutine_threadsafe(coro, loop())


def result(fut: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """``fut.result(timeout)`` that Ctrl-C can interrupt at once: a bare blocking wait only
    sees the signal when it returns, so wait in short slices."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise concurrent.futures.TimeoutError
        try:
            return fut.result(0.1 if left is None else min(0.1, left))
        except concurrent.futures.TimeoutError:
            continue

"""One background event-loop thread behind every blocking call (STYLE 5).

All engine work runs on this loop, whoever asks: blocking calls wait on a future, async
twins await the same future from their own loop. So the HTTP clients, budgets and rate
pacers live on one loop and are shared by every job in the process, and blocking calls
work inside Jupyter's already running loop without ``nest_asyncio``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
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


def on_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def start(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the engine loop; returns at once."""
    return asyncio.run_coroutine_threadsafe(coro, loop())


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Block until ``coro`` is done on the engine loop. Ctrl-C cancels it, then re-raises."""
    if on_loop_thread():
        coro.close()
        raise RuntimeError("a blocking crmframes call was made on the engine's own loop; use the async twin")
    fut = start(coro)
    try:
        return fut.result(timeout)
    except KeyboardInterrupt:
        fut.cancel()
        with contextlib.suppress(BaseException):  # the cancellation we asked for
            fut.result(5)
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the engine loop from any loop (the async twins)."""
    if on_loop_thread():
        return await coro
    return await asyncio.wrap_future(start(coro))

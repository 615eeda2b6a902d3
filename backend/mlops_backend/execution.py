"""Where and when a worker calls ``run()``: one call at a time, a bounded queue, the event loop kept free.

A worker scores one request at a time, as Azure ML's sync workers do. Two places can make the call:

- **inline**, on the event loop, while ``run()`` is fast (the last :data:`FAST_STREAK` calls each
  under :data:`INLINE_LIMIT_S`): nothing is handed between threads, so the fast path stays as
  fast as a plain loop (a hand-off between threads was measured at 28-40 us here, against ~70 us
  of server CPU for a whole echo request); a call is interrupted at the scoring timeout by
  SIGALRM, as before; a call that holds the loop longer than expected is covered by the liveness
  guard (:mod:`mlops_backend.liveness`);
- on the worker's **scoring thread**, once a call took longer: the loop stays free to answer
  liveness, readiness and metrics, to read other requests and to turn away those that waited
  too long, while ``run()`` works. The scoring timeout answers the request at its deadline and
  raises :class:`ScoringTimeout` in the thread at its next Python instruction (a call blocked in C
  code or a system call ends first: its place stays taken until then, and requests meanwhile
  wait or get 503).

The first call is made inline (nothing is known yet). Admission follows Azure's AKS settings:
``max_concurrent`` requests hold a place (one in ``run()``, the others next in line); a request
without one waits for up to ``max_wait_s`` from its arrival, then gets :class:`Busy` (503). A
request whose client has gone before its turn is dropped (:class:`ClientGone`), never run.
"""

from __future__ import annotations

import asyncio
import ctypes
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

#: A call under this many seconds (wall time) may run on the event loop...
INLINE_LIMIT_S = 0.02
#: ... once this many calls in a row were that fast.
FAST_STREAK = 32
#: A request that waited longer than this for its turn is checked for a client that has gone.
GONE_CHECK_S = 0.05
_clock = time.perf_counter
_setitimer = signal.setitimer
_REAL = signal.ITIMER_REAL


class ScoringTimeout(BaseException):
    """Raised inside run() at the scoring timeout (a BaseException: ``except Exception`` won't eat it)."""


class Busy(Exception):
    """No place for the request within the wait allowed: answer 503."""

    def __init__(self, waited_s: float, places: int) -> None:
        super().__init__(f"waited {waited_s * 1000:.0f} ms")
        self.waited_s = waited_s
        self.places = places


class ClientGone(Exception):
    """The client closed its connection before its request's turn: the request is dropped."""


#: What one run() call gave: (value, exception or None, timed out?, seconds it took). A plain tuple:
#: it is made on the fast path.
Outcome = tuple[Any, "BaseException | None", bool, float]


class _Job:
    __slots__ = ("connection", "future", "interrupted", "kwargs", "tag", "timer")

    def __init__(self, kwargs: dict[str, Any], tag: Any, connection: Any, future: asyncio.Future[Outcome]) -> None:
        self.kwargs = kwargs
        self.tag = tag
        self.connection = connection
        self.future = future
        self.interrupted = False
        self.timer: asyncio.TimerHandle | None = None


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


class _ScoringThread:
    """The thread that calls run() once calls are slow; one job at a time, handed over by the loop."""

    def __init__(self, call: Callable[[dict[str, Any], Any], Outcome], loop: asyncio.AbstractEventLoop,
                 done: Callable[[_Job, Outcome], None]) -> None:
        self.call = call
        self.loop = loop
        self.done = done
        self.lock = threading.Lock()
        self.current: _Job | None = None
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name="mlops-scoring", daemon=True)
        self.thread.start()

    def interrupt(self, job: _Job) -> bool:
        """Raise ScoringTimeout in the thread if it is still running ``job``; True if it was."""
        with self.lock:
            if self.current is not job or job.interrupted or self.thread.ident is None:
                return False
            job.interrupted = True
            _set_async_exc(self.thread.ident, ScoringTimeout)
            return True

    def stop(self) -> None:
        """Let the thread end after its current job."""
        self.jobs.put(None)

    def _work(self) -> None:
        block_signals()
        while True:
            try:
                job = self.jobs.get()
                if job is None:
                    return
                self._run(job)
            except ScoringTimeout:  # raised just after its run() had returned: nothing left to interrupt
                continue

    def _run(self, job: _Job) -> None:
        outcome: Outcome | None = None
        try:
            with self.lock:
                self.current = job
            outcome = self.call(job.kwargs, job.tag)
        except ScoringTimeout as exc:
            outcome = (None, exc, True, 0.0)
        finally:
            while True:  # the loop interrupts a job at most once: a late ScoringTimeout lands here, once
                try:
                    with self.lock:
                        self.current = None
                    self.loop.call_soon_threadsafe(self.done, job, outcome or (None, None, True, 0.0))
                    break
                except ScoringTimeout:
                    continue
                except RuntimeError:  # the loop is closed: the server has stopped
                    break


@dataclass(eq=False)
class Executor:
    """Calls a worker's run(): admission, queueing, and the choice between the loop and the thread."""

    run: Callable[..., Any]
    _: KW_ONLY
    max_concurrent: int = 1
    max_wait_s: float = 0.5
    timeout_s: float = 3600.0
    before_run: Callable[[Any], None] | None = None
    #: True for a value of run() that is not finished when run() returns (a streamed response): its request keeps
    #: run()'s place until :meth:`release` (no other run() starts while the script's generator yields).
    keeps_place: Callable[[Any], bool] | None = None
    #: run() may be called on the loop (see the module's docstring).
    inline: bool = field(default=True, init=False)
    fast_streak: int = field(default=0, init=False)
    #: Requests holding a place (being scored or next in line), and requests waiting for one.
    admitted: int = field(default=0, init=False)
    queued: int = field(default=0, init=False)
    #: perf_counter() at which an inline run() began; 0.0 when none runs (read by the liveness guard).
    inline_since: float = field(default=0.0, init=False)
    _waiting: deque[asyncio.Future[None]] = field(default_factory=deque, init=False)
    _ready: deque[_Job] = field(default_factory=deque, init=False)
    _thread: _ScoringThread | None = field(default=None, init=False)
    _thread_busy: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        signal.signal(signal.SIGALRM, self._alarm)

    # -- the fast path ----------------------------------------------------------------------

    @property
    def can_run_inline(self) -> bool:
        """run() may be called on the loop now: calls are fast and nothing is admitted or queued."""
        return self.inline and not self.admitted and not self.queued

    def run_inline(self, kwargs: dict[str, Any], tag: Any, scope: Any) -> Outcome:
        """Call run() now, on the loop (only when :attr:`can_run_inline`); nothing else runs meanwhile.

        Raises:
            Busy: the request already waited longer than allowed (behind calls that held the loop).
            ClientGone: it waited, and its client has gone meanwhile.
        """
        start = _clock()
        waited = start - scope.get("mlops.arrived", start)
        if waited > GONE_CHECK_S:
            if waited > self.max_wait_s:
                raise Busy(waited, self.max_concurrent)
            connection = scope.get("mlops.connection")
            if connection is not None and connection.client_gone():
                raise ClientGone
        if self.before_run is not None:
            self.before_run(tag)
        try:
            self.inline_since = start
            _setitimer(_REAL, self.timeout_s)
            try:
                value = self.run(**kwargs)
            finally:
                _setitimer(_REAL, 0)
                self.inline_since = 0.0
        except ScoringTimeout as exc:
            return None, exc, True, self._observe(_clock() - start)
        except BaseException as exc:  # noqa: BLE001 - the user's code may raise anything, SystemExit included
            return None, exc, False, self._observe(_clock() - start)
        seconds = _clock() - start
        if seconds < INLINE_LIMIT_S:
            self.fast_streak += 1
        else:
            self._observe(seconds)
        return value, None, False, seconds

    def _call_here(self, kwargs: dict[str, Any], tag: Any) -> Outcome:
        """Call run(**kwargs) on this (the scoring) thread."""
        if self.before_run is not None:
            self.before_run(tag)
        start = time.perf_counter()
        try:
            value = self.run(**kwargs)
        except ScoringTimeout as exc:
            return None, exc, True, time.perf_counter() - start
        except BaseException as exc:  # noqa: BLE001 - the user's code may raise anything, SystemExit included
            return None, exc, False, time.perf_counter() - start
        return value, None, False, time.perf_counter() - start

    def _alarm(self, signum: int, frame: Any) -> None:
        if self.inline_since:
            raise ScoringTimeout

    def _observe(self, seconds: float) -> float:
        """Count a call's duration toward the choice of the loop or the thread; return it."""
        if seconds < INLINE_LIMIT_S:
            self.fast_streak += 1
            if not self.inline and self.fast_streak >= FAST_STREAK:
                self.inline = True
        else:
            self.fast_streak = 0
            self.inline = False
        return seconds

    # -- the queue --------------------------------------------------------------------------

    async def submit(self, kwargs: dict[str, Any], tag: Any, scope: Any) -> Outcome:
        """Wait for a place (up to the wait allowed) and for the turn, then run() on the scoring thread.

        Raises:
            Busy: no place came within the wait allowed.
            ClientGone: the client left before the request's turn.
        """
        loop = asyncio.get_running_loop()
        arrived = scope.get("mlops.arrived") or time.perf_counter()
        connection = scope.get("mlops.connection")
        if self.admitted < self.max_concurrent and not self.queued:
            waited = time.perf_counter() - arrived
            if waited > self.max_wait_s:  # it waited already, for an event loop that a call held
                raise Busy(waited, self.max_concurrent)
            self.admitted += 1
        else:
            await self._wait_for_place(loop, arrived)
        future: asyncio.Future[Outcome] = loop.create_future()
        self._ready.append(_Job(kwargs, tag, connection, future))
        self._dispatch(loop)
        return await future

    async def _wait_for_place(self, loop: asyncio.AbstractEventLoop, arrived: float) -> None:
        remaining = arrived + self.max_wait_s - time.perf_counter()
        if remaining <= 0:
            raise Busy(self.max_wait_s - remaining, self.max_concurrent)
        if not self.queued:
            self._waiting.clear()  # only requests that left are in it
        place: asyncio.Future[None] = loop.create_future()
        self._waiting.append(place)
        self.queued += 1
        timer = loop.call_later(remaining, _give_up, place)
        try:
            await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled() and place.exception() is None:
                self._release()  # the place came just as the request was cancelled: pass it on
            raise
        except Busy:
            raise Busy(time.perf_counter() - arrived, self.max_concurrent) from None
        finally:
            self.queued -= 1
            timer.cancel()
            if not place.done():
                place.cancel()

    def _release(self) -> None:
        """A place is free: give it to the first request still waiting, or return it."""
        while self._waiting:
            place = self._waiting.popleft()
            if not place.done():
                place.set_result(None)
                return
        self.admitted -= 1

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the next request in line on the scoring thread, if the thread is free."""
        while self._ready and not self._thread_busy:
            job = self._ready.popleft()
            if job.future.done():  # its request was cancelled meanwhile
                self._release()
                continue
            if job.connection is not None and job.connection.client_gone():
                job.future.set_exception(ClientGone())
                self._release()
                continue
            if self._thread is None:
                self._thread = _ScoringThread(self._call_here, loop, self._finished)
            self._thread_busy = True
            job.timer = loop.call_later(self.timeout_s, self._timed_out, job)
            self._thread.jobs.put(job)

    def _timed_out(self, job: _Job) -> None:
        if self._thread is not None and self._thread.interrupt(job) and not job.future.done():
            job.future.set_result((None, None, True, self.timeout_s))

    def _finished(self, job: _Job, outcome: Outcome) -> None:
        if job.timer is not None:
            job.timer.cancel()
        self._observe(self.timeout_s if outcome[2] else outcome[3])
        if not job.future.done():
            keeps = self.keeps_place is not None and outcome[1] is None and self.keeps_place(outcome[0])
            job.future.set_result(outcome)
            if keeps:  # the thread stays reserved and the place taken until the request calls release()
                return
        self._thread_busy = False
        self._release()
        self._dispatch(asyncio.get_running_loop())

    # -- streamed answers -------------------------------------------------------------------

    def hold(self) -> None:
        """Keep run()'s place for a request whose inline run() returned a stream, until :meth:`release`.

        (A stream from the scoring thread keeps its place already: see :attr:`keeps_place`.)
        """
        self.admitted += 1
        self._thread_busy = True

    def release(self) -> None:
        """A streamed answer is complete (or abandoned): give its place to the next request in line."""
        self._thread_busy = False
        self._release()
        self._dispatch(asyncio.get_running_loop())

    def close(self) -> None:
        """Stop the scoring thread (after its current call)."""
        if self._thread is not None:
            self._thread.stop()


def block_signals() -> None:
    """Keep the process's signals (the scoring alarm, SIGTERM) for the main thread: call first in a helper thread."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM, signal.SIGINT})


def _give_up(place: asyncio.Future[None]) -> None:
    if not place.done():
        place.set_exception(Busy(0.0, 0))

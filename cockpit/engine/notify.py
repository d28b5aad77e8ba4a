"""Notices of what happens during a run: a new best, a streak of crashes, the engine stopping,
the model server going away.

Two parts, one concern each:

- `Notifier` delivers. ``send`` only queues and returns at once; one daemon thread hands each
  notice to the apprise URLs of ``[notify] urls`` and to the local ``[notify] command``. The
  research loop calls it from its main thread, so nothing here may block or raise into it: the
  queue is bounded (when it is full the oldest notice goes), a delivery that fails is reported
  once through ``echo``, and one that hangs is left behind by ``close``.
- `EngineNotices` decides. It is told what the loop decided and what the agent reports, and
  turns the moments worth a notice into ``Notifier.send`` calls; it keeps no other state.

apprise is imported only when URLs are set, so the notify extra is needed only by those who
use it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from cockpit.config import NOTIFY_EVENTS, ConfigError, NotifySettings

__all__ = [
    "COMMAND_TIMEOUT_SECONDS",
    "CRASH_DECISIONS",
    "INSTALL_HINT",
    "LOST_AGENT_STATES",
    "QUEUE_SIZE",
    "READY_AGENT_STATE",
    "EngineNotices",
    "Notice",
    "Notifier",
    "NotifyError",
]

INSTALL_HINT = 'pip install "research-cockpit[notify]"'
COMMAND_TIMEOUT_SECONDS = 30.0  # the longest one run of [notify] command may take
# Notices waiting for the delivery thread; with the rate limit a run makes a few an hour, so
# a full queue means deliveries hang, and then the newest notices are the ones worth keeping.
QUEUE_SIZE = 32
OUTPUT_TAIL_CHARS = 300  # how much of a failing command's output a report quotes
# The experiment decisions that count towards a crash streak (a timeout is recorded as a crash
# with status timeout; "timeout" is accepted too, for callers that pass the status).
CRASH_DECISIONS = frozenset({"crash", "timeout"})
# The agent's health states (`agent.ollama_backend.AgentState` values, as `AgentRecorder`
# writes them to the journal state key ``agent_state``). "bad_reply" is left out of the lost
# ones: one garbled stream says nothing about the server, and the next probe finds it ready.
READY_AGENT_STATE = "ready"
LOST_AGENT_STATES = frozenset({"server_down", "model_missing", "timeout", "error"})

_APPRISE_LOGGER = "apprise"


class NotifyError(ConfigError):
    """``[notify]`` settings that cannot work (apprise missing, a URL it does not know);
    ``str(error)`` is the full message for the user."""


@dataclass(frozen=True)
class Notice:
    """One notification: its kind (one of `NOTIFY_EVENTS`), a one-line title and a body."""

    kind: str
    title: str
    body: str


class _Target(Protocol):
    """Somewhere notices go: an apprise URL or the local command."""

    label: str  # how reports name it; never a password

    def deliver(self, notice: Notice) -> str | None:
        """Deliver ``notice``; None when it went, else what went wrong, in one line."""
        ...

    def cancel(self) -> None:
        """Cut a delivery in progress short (called from another thread by ``close``)."""
        ...


class _WarningsOfThisThread(logging.Handler):
    """Collects apprise's warnings logged by one thread: apprise says why a delivery failed
    only in its log, and other threads (another `Notifier`) may log at the same time."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread_id = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            self.messages.append(record.getMessage())


@contextlib.contextmanager
def _apprise_warnings() -> Iterator[list[str]]:
    """``with _apprise_warnings() as messages:`` collects what apprise logs meanwhile."""
    handler = _WarningsOfThisThread()
    logger = logging.getLogger(_APPRISE_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _redact(url: str) -> str:
    """``url`` with the password of its user part, if any, replaced by ``****``."""
    try:
        parts = urlsplit(url)
        if not parts.password:
            return url
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{parts.username}:****@{host}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # not even a URL: nothing to find a password in
        return url


def _import_apprise() -> Any:
    try:
        import apprise
    except ImportError as exc:
        raise NotifyError(
            "notify.urls is set, but apprise, which delivers notices to URLs, is not "
            f"installed. Install it with: {INSTALL_HINT} (or empty notify.urls)."
        ) from exc
    return apprise


class _AppriseTarget:
    """One apprise URL (one `Apprise` each, so that a failure names its URL)."""

    def __init__(self, apprise: Any, url: str) -> None:
        with _apprise_warnings() as messages:
            service = apprise.Apprise.instantiate(url)
        if service is None:
            shown = _redact(url)
            why = f" ({messages[-1].replace(url, shown)})" if messages else ""
            raise NotifyError(
                f"notify.urls: apprise does not recognise the URL {shown!r}{why}. Write it as "
                "the apprise documentation says (https://github.com/caronc/apprise/wiki, "
                'e.g. "ntfy://192.168.1.5/cockpit"), or remove it.'
            )
        # The privacy form hides passwords and tokens; its query is only apprise's defaults.
        self.label = str(service.url(privacy=True)).split("?", 1)[0]
        self._apprise = apprise.Apprise()
        self._apprise.add(service)

    def deliver(self, notice: Notice) -> str | None:
        with _apprise_warnings() as messages:
            # apprise refuses an empty body; the title then says it all.
            result = self._apprise.notify(title=notice.title, body=notice.body or notice.title)
        try:
            if result:
                return None
            # apprise 2 delivers on threads of its own and hands back the call's log with the
            # result; apprise 1 returns a bool and logs in this thread.
            logs = getattr(result, "logs", None)
            if callable(logs):
                messages.extend(str(entry.message) for entry in logs())
        finally:
            close = getattr(result, "close", None)
            if callable(close):
                close()
        return messages[-1] if messages else "apprise reported a failure"

    def cancel(self) -> None:
        """apprise cannot be interrupted; its socket timeouts (4 s by default) end a hang."""


class _CommandTarget:
    """``[notify] command``, run once per notice through the shell."""

    def __init__(self, command: str, timeout: float) -> None:
        self.label = "the notify command"  # its text may hold a token; the user knows it
        self.command = command
        self.timeout = timeout
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._cancelled = False

    def deliver(self, notice: Notice) -> str | None:
        env = {
            **os.environ,
            "COCKPIT_NOTIFY_KIND": notice.kind,
            "COCKPIT_NOTIFY_TITLE": notice.title,
            "COCKPIT_NOTIFY_BODY": notice.body,
        }
        with self._lock:
            if self._cancelled:
                return None
            # A session of its own: a timeout or close() ends the shell and all it started. A
            # shell killed alone leaves its children holding the output pipe, and reading it
            # would then wait for them (subprocess.run's timeout has this flaw).
            process = subprocess.Popen(
                self.command,
                shell=True,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._process = process
        try:
            output, _ = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _end_session(process)
            return f"it ran longer than {self.timeout:g} s and was stopped"
        finally:
            with self._lock:
                self._process = None
        if process.returncode == 0:
            return None
        tail = output.decode("utf-8", "replace").strip()[-OUTPUT_TAIL_CHARS:]
        said = f": {' '.join(tail.split())}" if tail else ""
        return f"it exited with status {process.returncode}{said}"

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            process = self._process
        if process is not None:
            _end_session(process)


def _end_session(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` and everything in its session, and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
        process.communicate(timeout=1.0)


class Notifier:
    """Sends notices to ``[notify] urls`` and ``command`` without ever holding up the caller.

    ``send`` checks the kind and the rate limit and queues; a daemon thread, started with the
    first notice, delivers. ``echo`` (the engine's log, say) is told once when a target starts
    failing, and again only after it worked in between; it is called from the delivery thread.
    ``clock`` (seconds, monotonic) times the rate limit. Raises `NotifyError` when the settings
    cannot work: URLs without apprise installed, or a URL apprise does not recognise.
    """

    def __init__(
        self,
        settings: NotifySettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        echo: Callable[[str], None] | None = None,
        queue_size: int = QUEUE_SIZE,
        command_timeout: float = COMMAND_TIMEOUT_SECONDS,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._echo = echo
        self._queue_size = max(1, queue_size)
        self._targets: list[_Target] = []
        if settings.urls:
            apprise = _import_apprise()
            self._targets.extend(_AppriseTarget(apprise, url) for url in settings.urls)
        if settings.command:
            self._targets.append(_CommandTarget(settings.command, command_timeout))
        self._condition = threading.Condition()
        self._pending: deque[Notice] = deque()
        self._thread: threading.Thread | None = None
        self._closing = False  # no more notices are taken; the thread delivers what is queued
        self._abandoned = False  # close() gave up waiting: what is left is dropped
        self._last_queued: dict[str, float] = {}
        self._held_back: Counter[str] = Counter()  # per kind, since its last queued notice
        self._failing: set[str] = set()  # labels of targets whose failure was reported
        self.dropped = 0  # notices pushed out of a full queue

    @property
    def enabled(self) -> bool:
        """Whether notices go anywhere (off while both urls and command are empty)."""
        return bool(self._targets)

    def send(self, kind: str, title: str, body: str) -> bool:
        """Queue a notice and return at once: True when it was queued; False when notices are
        off, ``kind`` is not among ``[notify] events``, the notifier is closed, or a notice of
        this kind went out less than ``min_interval_seconds`` ago (it is then counted, and the
        count is said in the next notice of the kind). Raises ValueError for an unknown kind,
        which is a mistake in the caller."""
        if kind not in NOTIFY_EVENTS:
            raise ValueError(f"unknown notice kind {kind!r}; the kinds are {NOTIFY_EVENTS}")
        if not self._targets or kind not in self.settings.events:
            return False
        now = self._clock()
        with self._condition:
            if self._closing:
                return False
            last = self._last_queued.get(kind)
            if last is not None and now - last < self.settings.min_interval_seconds:
                self._held_back[kind] += 1
                return False
            held_back = self._held_back.pop(kind, 0)
            if held_back:
                body = f"{body}\n({held_back} more since the last notice)"
            self._last_queued[kind] = now
            if len(self._pending) >= self._queue_size:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(Notice(kind, title, body))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._deliver_all, name="cockpit-notify", daemon=True
                )
                self._thread.start()
            self._condition.notify()
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued within ``timeout`` seconds, then stop the delivery thread.

        Returns True when everything queued was handed over in time. Otherwise what is left is
        dropped, a command still running is killed, and an apprise delivery still waiting is
        left to its socket timeout on the (daemon) thread. Later sends return False.
        """
        with self._condition:
            self._closing = True
            self._condition.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(max(0.0, timeout))
        if not thread.is_alive():
            return True
        with self._condition:
            self._abandoned = True
            left = len(self._pending)
            self._pending.clear()
        for target in self._targets:
            target.cancel()
        self._say(
            f"notify: gave up after {timeout:g} s on the notice being delivered"
            + (f" and {left} more" if left else "")
        )
        return False

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- the delivery thread ----------------------------------------------------------------

    def _deliver_all(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closing:
                    self._condition.wait()
                if self._abandoned or not self._pending:
                    return  # closed, and nothing (more) to deliver
                notice = self._pending.popleft()
            for target in self._targets:
                if self._abandoned:
                    return
                try:
                    problem = target.deliver(notice)
                except Exception as exc:  # a plugin's bug must not end the thread
                    problem = f"{type(exc).__name__}: {exc}"
                self._report(target.label, problem)

    def _report(self, label: str, problem: str | None) -> None:
        """Say a target's failure once, until it works again."""
        if problem is None:
            self._failing.discard(label)
            return
        if label in self._failing:
            return
        self._failing.add(label)
        self._say(
            f"notify: could not deliver to {label}: {problem} "
            "(further failures of it are not reported until it works again)"
        )

    def _say(self, message: str) -> None:
        if self._echo is None:
            return
        with contextlib.suppress(Exception):  # a broken log must not stop the deliveries
            self._echo(message)


class EngineNotices:
    """Which moments of a run are worth a notice; the loop tells it what happened.

    ``tag`` names the run in titles once known; ``metric`` names the figure results are
    measured in; ``crash_streak`` defaults to ``[notify] crash_streak``. Every method returns
    what ``Notifier.send`` returned (False when nothing was worth a notice).
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        tag: str | None = None,
        metric: str = "val_bpb",
        crash_streak: int | None = None,
    ) -> None:
        self.notifier = notifier
        self.tag = tag
        self.metric = metric
        self.crash_streak = (
            notifier.settings.crash_streak if crash_streak is None else max(1, crash_streak)
        )
        self._crashes: list[int] = []  # the numbers of the crashes in a row so far
        self._streak_told = False
        self._agent_was_ready = False
        self._agent_lost = False

    def decided(
        self,
        number: int,
        decision: str,
        description: str,
        val_bpb: float | None,
        best_before: float | None,
    ) -> bool:
        """Experiment ``number`` was decided: a keep that beats ``best_before`` (the best
        before this decision) is a new best; crashes (and timeouts) in a row reaching
        ``crash_streak`` are a crash streak, told once until another decision ends it. A veto
        trained nothing: it neither counts in a streak nor ends one."""
        if decision == "veto":
            return False
        if decision in CRASH_DECISIONS:
            self._crashes.append(number)
            if len(self._crashes) < self.crash_streak or self._streak_told:
                return False
            self._streak_told = True
            count = len(self._crashes)
            return self._send(
                "crash_streak",
                f"{count} crashes in a row (#{self._crashes[0]}-#{number})",
                f"The last, #{number} ({decision}): {description}\n"
                "The loop goes on; look at the crashes before the night is spent on them.",
            )
        self._crashes.clear()
        self._streak_told = False
        if decision != "keep" or number <= 0 or val_bpb is None or not math.isfinite(val_bpb):
            return False
        if best_before is None:
            gain = f"the first kept {self.metric}"
        elif val_bpb < best_before:
            gain = f"{best_before - val_bpb:.6f} better than {best_before:.6f}"
        else:
            return False  # kept for fewer lines within the margin: not a better result
        return self._send(
            "new_best",
            f"new best {val_bpb:.6f} (#{number})",
            f"{self.metric} {val_bpb:.6f}, {gain}\n#{number}: {description}",
        )

    def engine_stopped(
        self, tag: str, reason: str, best: float | None, verified: str | None = None
    ) -> bool:
        """The engine stopped (run done, stopped by the researcher, or failed); ``verified``
        is what training the best again on fresh seeds showed, when it was."""
        if tag:
            self.tag = tag
        result = (
            f"best {self.metric} {best:.6f}"
            if best is not None
            else f"no {self.metric} recorded yet"
        )
        body = f"{reason}\n{result}" + (f"\n{verified}" if verified else "")
        return self._send("engine_stopped", f"engine stopped ({result})", body)

    def agent_state(self, state: str, message: str) -> bool:
        """The agent reported its model server's health (``agent_state``, ``agent_message``):
        a notice when a server that was ready becomes unreachable, once per outage."""
        if state == READY_AGENT_STATE:
            self._agent_was_ready = True
            self._agent_lost = False
            return False
        if state not in LOST_AGENT_STATES or not self._agent_was_ready or self._agent_lost:
            return False
        self._agent_lost = True
        return self._send(
            "agent_lost",
            f"Ollama unreachable ({state})",
            f"{message}\nThe built-in proposer stands in until the model answers again.",
        )

    def close(self, timeout: float = 5.0) -> bool:
        """Close the notifier (see `Notifier.close`)."""
        return self.notifier.close(timeout)

    def _send(self, kind: str, what: str, body: str) -> bool:
        title = f"cockpit {self.tag}: {what}" if self.tag else f"cockpit: {what}"
        return self.notifier.send(kind, title, body)

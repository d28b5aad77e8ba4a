"""Tests for cockpit.engine.notify: real deliveries through apprise to local HTTP and SMTP
receivers and through a real shell command; nothing of apprise or subprocess is mocked."""

from __future__ import annotations

import email
import json
import queue
import shlex
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cockpit.config import NOTIFY_EVENTS, ConfigError, NotifySettings, Settings, load_settings
from cockpit.engine.notify import (
    INSTALL_HINT,
    EngineNotices,
    Notifier,
    NotifyError,
)

WAIT = 5.0  # the longest any delivery here should take


# --------------------------------------------------------------------------------------
# Receivers, a clock and the notifier's bookkeeping


@dataclass
class Posted:
    """One request a receiver got."""

    path: str
    payload: dict[str, Any]


class HTTPReceiver:
    """A local HTTP server that records JSON POSTs; it can answer with an error status, or
    hang until released (the test's teardown releases it)."""

    def __init__(self, *, status: int = 200, hang: bool = False) -> None:
        self.received: queue.Queue[Posted] = queue.Queue()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                if hang:
                    receiver.release.wait(WAIT)
                receiver.received.put(Posted(self.path, payload))
                reply = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def next(self) -> Posted:
        return self.received.get(timeout=WAIT)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(WAIT)


class SMTPReceiver(socketserver.ThreadingTCPServer):
    """The least of an SMTP server that takes mail: enough for smtplib and apprise."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SMTPHandler)
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.port = self.server_address[1]
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(WAIT)


class _SMTPHandler(socketserver.StreamRequestHandler):
    server: SMTPReceiver

    def handle(self) -> None:
        self.wfile.write(b"220 test SMTP\r\n")
        data: list[bytes] | None = None
        while line := self.rfile.readline():
            if data is not None:  # inside DATA: until a lone dot
                if line.rstrip(b"\r\n") == b".":
                    self.server.messages.put(b"".join(data))
                    data = None
                    self.wfile.write(b"250 queued\r\n")
                else:
                    data.append(line[1:] if line.startswith(b"..") else line)
                continue
            verb = line[:4].upper()
            if verb == b"DATA":
                data = []
                self.wfile.write(b"354 end with a dot\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:  # EHLO, MAIL FROM, RCPT TO, RSET, NOOP: all fine
                self.wfile.write(b"250 ok\r\n")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Log:
    """What the notifier said (through echo), in order."""

    lines: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.01)
        raise AssertionError(f"nothing said {text!r}; said: {self.lines}")


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    server = HTTPReceiver()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_delivery_thread_left() -> Iterator[None]:
    """Every test ends with its delivery threads gone (a hung one once released)."""
    yield
    deadline = time.monotonic() + WAIT
    while any(t.name == "cockpit-notify" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a delivery thread outlived its test"
        time.sleep(0.01)


def free_port() -> int:
    """A port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def recording_command(path: Path) -> str:
    """A shell command that appends the notice's kind, title and body to ``path``."""
    return (
        "printf '%s\\037%s\\037%s\\036' "
        '"$COCKPIT_NOTIFY_KIND" "$COCKPIT_NOTIFY_TITLE" "$COCKPIT_NOTIFY_BODY" '
        f">> {shlex.quote(str(path))}"
    )


def recorded(path: Path) -> list[tuple[str, ...]]:
    """The (kind, title, body) notices `recording_command` wrote to ``path``."""
    if not path.exists():
        return []
    records = path.read_text(encoding="utf-8").split("\036")
    return [tuple(record.split("\037")) for record in records if record]


def settings(**values: Any) -> NotifySettings:
    return NotifySettings(min_interval_seconds=0.0, **values)


# --------------------------------------------------------------------------------------
# Settings


def test_notices_are_off_by_default() -> None:
    notifier = Notifier(Settings().notify)
    assert not notifier.enabled
    assert not Settings().notify.enabled
    assert notifier.send("new_best", "title", "body") is False
    assert notifier.close() is True
    assert Settings().notify.events == list(NOTIFY_EVENTS)


def test_settings_come_from_the_workspace_config(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "config.toml").write_text(
        "[notify]\n"
        'urls = ["json://127.0.0.1:9/hook", "ntfy://192.168.1.5/cockpit"]\n'
        'command = "true"\n'
        'events = ["new_best", "agent_lost"]\n'
        "crash_streak = 5\n"
        "min_interval_seconds = 60\n",
        encoding="utf-8",
    )
    notify = load_settings(workspace, environ={}).notify
    assert notify.urls == ["json://127.0.0.1:9/hook", "ntfy://192.168.1.5/cockpit"]
    assert notify.command == "true"
    assert notify.events == ["new_best", "agent_lost"]
    assert notify.crash_streak == 5
    assert notify.min_interval_seconds == 60.0
    notifier = Notifier(notify)
    assert notifier.enabled
    assert EngineNotices(notifier).crash_streak == 5
    # Not among the events: never queued, so nothing is sent to the dead URLs above.
    assert notifier.send("engine_stopped", "t", "b") is False
    notifier.close()


def test_urls_from_the_environment_as_an_array_or_one_bare_url() -> None:
    array = '["json://127.0.0.1:9/a", "ntfy://h/t"]'
    environ = {"COCKPIT_NOTIFY__URLS": array, "COCKPIT_NOTIFY__EVENTS": "new_best"}
    notify = load_settings(environ=environ).notify
    assert notify.urls == ["json://127.0.0.1:9/a", "ntfy://h/t"]
    assert notify.events == ["new_best"]
    bare = load_settings(environ={"COCKPIT_NOTIFY__URLS": "ntfy://h/t?priority=high"}).notify
    assert bare.urls == ["ntfy://h/t?priority=high"]
    assert load_settings(environ={"COCKPIT_NOTIFY__URLS": ""}).notify.urls == []


def test_an_unknown_event_name_is_a_clear_error(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "config.toml").write_text(
        '[notify]\nevents = ["new_best", "new_bset"]\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(workspace, environ={})
    message = str(info.value)
    assert message.startswith(f"{workspace / 'config.toml'}:2: notify.events must be")
    assert '"new_best", "crash_streak", "engine_stopped", "agent_lost"' in message
    assert 'got the string "new_bset" as item 2' in message
    with pytest.raises(ValueError, match="unknown notice kind 'new_bset'"):
        Notifier(settings(command="true")).send("new_bset", "t", "b")


def test_urls_must_be_an_array() -> None:
    with pytest.raises(ConfigError, match=r"notify.urls must be an array of apprise URLs"):
        load_settings(overrides={"notify.urls": "ntfy://h/t"}, environ={})


def test_a_url_apprise_does_not_know_is_a_clear_error_without_its_password() -> None:
    with pytest.raises(NotifyError) as info:
        Notifier(settings(urls=["json://127.0.0.1:9/ok", "bogus://me:hunter2@host/x"]))
    message = str(info.value)
    assert "apprise does not recognise the URL 'bogus://me:****@host/x'" in message
    assert "hunter2" not in message
    assert isinstance(info.value, ConfigError)  # the CLI shows it like any settings error


def test_urls_without_apprise_installed_say_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # makes `import apprise` fail
    with pytest.raises(NotifyError, match=r"apprise.*is not installed") as info:
        Notifier(settings(urls=["json://127.0.0.1:9/hook"]))
    assert INSTALL_HINT in str(info.value)
    assert Notifier(settings(command="true")).enabled  # a command alone needs no apprise


# --------------------------------------------------------------------------------------
# Deliveries


def test_a_notice_reaches_a_json_webhook(receiver: HTTPReceiver) -> None:
    with Notifier(settings(urls=[f"json://127.0.0.1:{receiver.port}/hook"])) as notifier:
        assert notifier.send("new_best", "cockpit: new best", "val_bpb 1.23")
        posted = receiver.next()
    assert posted.path.startswith("/hook")
    assert posted.payload["title"] == "cockpit: new best"
    assert posted.payload["message"] == "val_bpb 1.23"


def test_a_notice_reaches_ntfy_over_plain_http(receiver: HTTPReceiver) -> None:
    with Notifier(settings(urls=[f"ntfy://127.0.0.1:{receiver.port}/cockpit"])) as notifier:
        notifier.send("engine_stopped", "cockpit: engine stopped", "done")
        posted = receiver.next()
    assert posted.payload["topic"] == "cockpit"
    assert posted.payload["title"] == "cockpit: engine stopped"
    assert posted.payload["message"] == "done"


def test_a_notice_reaches_a_local_smtp_server() -> None:
    server = SMTPReceiver()
    try:
        url = f"mailto://127.0.0.1:{server.port}?from=cockpit@example.com&to=me@example.com"
        with Notifier(settings(urls=[url])) as notifier:
            notifier.send("crash_streak", "cockpit: 3 crashes in a row", "look at #7")
            message = email.message_from_bytes(server.messages.get(timeout=WAIT))
    finally:
        server.stop()
    assert message["Subject"] == "cockpit: 3 crashes in a row"
    assert message["To"] == "me@example.com"
    texts = [part.get_payload(decode=True) for part in message.walk()]
    assert any(text and b"look at #7" in text for text in texts)


@pytest.mark.e2e
def test_the_command_gets_kind_title_and_body_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "notices"
    with Notifier(settings(command=recording_command(out))) as notifier:
        notifier.send("agent_lost", "cockpit: Ollama unreachable", "line one\nline 'two'")
        notifier.send("new_best", "cockpit: new best", "")
    assert recorded(out) == [
        ("agent_lost", "cockpit: Ollama unreachable", "line one\nline 'two'"),
        ("new_best", "cockpit: new best", ""),
    ]


@pytest.mark.e2e
def test_urls_and_command_both_get_every_notice(receiver: HTTPReceiver, tmp_path: Path) -> None:
    out = tmp_path / "notices"
    urls = [f"json://127.0.0.1:{receiver.port}/a", f"json://127.0.0.1:{receiver.port}/b"]
    with Notifier(settings(urls=urls, command=recording_command(out))) as notifier:
        notifier.send("new_best", "t", "b")
        paths = sorted(receiver.next().path.split("?")[0] for _ in range(2))
    assert paths == ["/a", "/b"]
    assert recorded(out) == [("new_best", "t", "b")]


@pytest.mark.e2e
def test_only_the_chosen_events_are_sent(tmp_path: Path) -> None:
    out = tmp_path / "notices"
    chosen = settings(command=recording_command(out), events=["crash_streak"])
    with Notifier(chosen) as notifier:
        assert notifier.send("new_best", "t", "b") is False
        assert notifier.send("crash_streak", "t", "b") is True
    assert [kind for kind, _, _ in recorded(out)] == ["crash_streak"]


# --------------------------------------------------------------------------------------
# Rate limit, failures, hangs


@pytest.mark.e2e
def test_a_second_notice_within_the_interval_is_held_back_and_counted(tmp_path: Path) -> None:
    out = tmp_path / "notices"
    clock = FakeClock()
    limited = NotifySettings(command=recording_command(out), min_interval_seconds=300)
    with Notifier(limited, clock=clock) as notifier:
        assert notifier.send("new_best", "first", "a") is True
        clock.now += 100
        assert notifier.send("new_best", "second", "b") is False
        assert notifier.send("crash_streak", "other kind", "c") is True  # a limit per kind
        clock.now += 199
        assert notifier.send("new_best", "third", "d") is False
        clock.now += 1  # 300 s after the first
        assert notifier.send("new_best", "fourth", "e") is True
        clock.now += 300
        assert notifier.send("new_best", "fifth", "f") is True
    assert recorded(out) == [
        ("new_best", "first", "a"),
        ("crash_streak", "other kind", "c"),
        ("new_best", "fourth", "e\n(2 more since the last notice)"),
        ("new_best", "fifth", "f"),
    ]


def test_a_refused_connection_is_reported_once_until_it_works_again() -> None:
    log = Log()
    dead = f"json://127.0.0.1:{free_port()}/hook"
    with Notifier(settings(urls=[dead]), echo=log) as notifier:
        for _ in range(3):
            assert notifier.send("new_best", "t", "b") is True
    failures = [line for line in log.lines if "could not deliver" in line]
    assert len(failures) == 1
    assert failures[0].startswith("notify: could not deliver to json://127.0.0.1:")
    assert "Connection error" in failures[0]


def test_an_error_status_is_reported(tmp_path: Path) -> None:
    log = Log()
    server = HTTPReceiver(status=500)
    try:
        with Notifier(settings(urls=[f"json://127.0.0.1:{server.port}/x"]), echo=log) as n:
            n.send("new_best", "t", "b")
            server.next()
        assert "500" in log.wait_for("could not deliver")
    finally:
        server.stop()


@pytest.mark.e2e
def test_a_failing_command_is_reported_with_its_output() -> None:
    log = Log()
    with Notifier(settings(command="echo no route to host >&2; exit 3"), echo=log) as notifier:
        notifier.send("new_best", "t", "b")
        notifier.send("new_best", "t", "b")
    assert log.lines == [
        "notify: could not deliver to the notify command: it exited with status 3: no route "
        "to host (further failures of it are not reported until it works again)"
    ]


def test_a_hanging_receiver_holds_up_neither_send_nor_close() -> None:
    log = Log()
    server = HTTPReceiver(hang=True)
    try:
        notifier = Notifier(settings(urls=[f"json://127.0.0.1:{server.port}/x"]), echo=log)
        start = time.monotonic()
        for number in range(50):  # more than the queue holds: the oldest go
            assert notifier.send("new_best", f"#{number}", "b") is True
        assert time.monotonic() - start < 0.1
        start = time.monotonic()
        assert notifier.close(timeout=0.3) is False
        assert 0.25 < time.monotonic() - start < 1.0
        assert notifier.dropped > 0
        assert "gave up after 0.3 s" in log.lines[-1]
        assert notifier.send("new_best", "after close", "b") is False
    finally:
        server.stop()  # releases the hung request, so the delivery thread ends


@pytest.mark.e2e
def test_a_hanging_command_is_killed_at_close(tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    command = f"sleep 30; touch {shlex.quote(str(marker))}"
    notifier = Notifier(settings(command=command))
    start = time.monotonic()
    assert notifier.send("engine_stopped", "t", "b") is True
    assert time.monotonic() - start < 0.1
    time.sleep(0.1)  # let the command start
    assert notifier.close(timeout=0.2) is False
    assert time.monotonic() - start < 1.5
    assert not marker.exists()


@pytest.mark.e2e
def test_a_command_past_its_timeout_is_stopped_children_and_all() -> None:
    log = Log()
    # The shell's child holds the output pipe: killing the shell alone would leave it open.
    notifier = Notifier(settings(command="sleep 30; echo late"), echo=log, command_timeout=0.2)
    notifier.send("new_best", "t", "b")
    assert "ran longer than 0.2 s" in log.wait_for("could not deliver")
    assert notifier.close(timeout=1.0) is True


# --------------------------------------------------------------------------------------
# Which moments are worth a notice


class RecordingNotifier(Notifier):
    """A notifier that keeps what it is asked to send (the rules are tested apart from
    delivery, which the tests above cover)."""

    def __init__(self, **values: Any) -> None:
        super().__init__(settings(command="true", **values))
        self.sent: list[tuple[str, str, str]] = []

    def send(self, kind: str, title: str, body: str) -> bool:
        self.sent.append((kind, title, body))
        return True


@pytest.mark.e2e
def test_a_keep_that_improves_is_a_new_best() -> None:
    notifier = RecordingNotifier()
    notices = EngineNotices(notifier, tag="mar5")
    assert notices.decided(12, "keep", "halve the learning rate", 1.234567, 1.25) is True
    kind, title, body = notifier.sent[-1]
    assert kind == "new_best"
    assert title == "cockpit mar5: new best 1.234567 (#12)"
    assert body == "val_bpb 1.234567, 0.015433 better than 1.250000\n#12: halve the learning rate"


@pytest.mark.e2e
def test_no_new_best_for_the_baseline_a_discard_or_a_keep_that_is_not_better() -> None:
    notifier = RecordingNotifier()
    notices = EngineNotices(notifier)
    assert notices.decided(0, "keep", "baseline", 1.3, None) is False
    assert notices.decided(1, "discard", "worse", 1.4, 1.3) is False
    assert notices.decided(2, "keep", "fewer lines, same loss", 1.3004, 1.3) is False
    assert notices.decided(3, "keep", "no figure", None, 1.3) is False
    assert notices.decided(4, "keep", "nan", float("nan"), 1.3) is False
    assert notifier.sent == []
    assert notices.decided(5, "keep", "first keep", 1.29, None) is True
    assert notifier.sent[-1][1] == "cockpit: new best 1.290000 (#5)"
    assert "the first kept val_bpb" in notifier.sent[-1][2]


@pytest.mark.e2e
def test_a_crash_streak_is_told_once_and_again_after_a_reset() -> None:
    notifier = RecordingNotifier(crash_streak=3)
    notices = EngineNotices(notifier, tag="t1")
    assert notices.decided(1, "crash", "oom", None, 1.3) is False
    assert notices.decided(2, "crash", "oom", None, 1.3) is False
    assert notices.decided(3, "discard", "worse", 1.4, 1.3) is False  # ends the streak
    assert notices.decided(4, "crash", "oom", None, 1.3) is False
    assert notices.decided(5, "timeout", "slow", None, 1.3) is False
    assert notices.decided(6, "crash", "nan loss", None, 1.3) is True
    assert notices.decided(7, "crash", "oom", None, 1.3) is False  # the same streak
    assert notifier.sent == [
        (
            "crash_streak",
            "cockpit t1: 3 crashes in a row (#4-#6)",
            "The last, #6 (crash): nan loss\n"
            "The loop goes on; look at the crashes before the night is spent on them.",
        )
    ]
    assert notices.decided(8, "discard", "worse", 1.4, 1.3) is False  # any other decision
    notices.decided(9, "crash", "oom", None, 1.3)
    # A veto trained nothing: it neither ends a streak nor counts in one.
    assert notices.decided(10, "veto", "vetoed", None, 1.3) is False
    notices.decided(11, "crash", "oom", None, 1.3)
    assert notices.decided(12, "crash", "oom", None, 1.3) is True
    assert notifier.sent[-1][1] == "cockpit t1: 3 crashes in a row (#9-#12)"


@pytest.mark.e2e
def test_the_agent_lost_notice_comes_once_per_outage() -> None:
    notifier = RecordingNotifier()
    notices = EngineNotices(notifier, tag="mar5")
    # Down from the start: never seen ready, so nothing was lost (the start says so).
    assert notices.agent_state("server_down", "Ollama is not running") is False
    assert notices.agent_state("ready", "ready") is False
    assert notices.agent_state("bad_reply", "a garbled stream") is False
    assert notices.agent_state("server_down", "cannot reach Ollama at 127.0.0.1") is True
    assert notices.agent_state("timeout", "no reply in 300 s") is False  # the same outage
    assert notices.agent_state("server_down", "still down") is False
    assert notices.agent_state("ready", "back") is False
    assert notices.agent_state("model_missing", "pull qwen2.5-coder:7b") is True
    assert [title for _, title, _ in notifier.sent] == [
        "cockpit mar5: Ollama unreachable (server_down)",
        "cockpit mar5: Ollama unreachable (model_missing)",
    ]
    assert notifier.sent[0][2].startswith("cannot reach Ollama at 127.0.0.1\n")


@pytest.mark.e2e
def test_engine_stopped_names_the_run_and_its_best() -> None:
    notifier = RecordingNotifier()
    notices = EngineNotices(notifier, metric="loss")
    assert notices.engine_stopped("mar5", "stopped by the researcher", 1.2) is True
    assert notices.engine_stopped("", "the baseline crashed", None) is True
    assert notifier.sent == [
        (
            "engine_stopped",
            "cockpit mar5: engine stopped (best loss 1.200000)",
            "stopped by the researcher\nbest loss 1.200000",
        ),
        (
            "engine_stopped",
            "cockpit mar5: engine stopped (no loss recorded yet)",
            "the baseline crashed\nno loss recorded yet",
        ),
    ]


@pytest.mark.e2e
def test_engine_notices_end_to_end_to_a_webhook(receiver: HTTPReceiver) -> None:
    notifier = Notifier(settings(urls=[f"json://127.0.0.1:{receiver.port}/hook"]))
    notices = EngineNotices(notifier, tag="mar5")
    start = time.monotonic()
    notices.decided(12, "keep", "wider MLP", 1.234567, 1.24)
    assert time.monotonic() - start < 0.1
    assert notices.close() is True
    posted = receiver.next()
    assert posted.payload["title"] == "cockpit mar5: new best 1.234567 (#12)"
    assert "wider MLP" in posted.payload["message"]

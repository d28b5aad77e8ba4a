"""An Ollama-compatible HTTP server with scripted replies, for tests and manual runs.

It answers the real `ollama` client the way Ollama does: the same paths, streamed NDJSON
on /api/chat and /api/generate, error bodies ``{"error": ...}`` with Ollama's status codes
and wording. What the model says is scripted: `Reply`, `ErrorReply`, `Truncated`,
`Garbage`, `Hang` and `EchoExample` items are consumed in order, one per chat. Every
request is recorded.

    with OllamaDouble() as server:
        server.script(Reply('{"description": "..."}'))
        ollama.Client(host=server.host).chat(...)

Standalone: ``python tests/ollama_server.py --port 11434 --replies replies.json`` serves
until Ctrl-C; replies.json is a JSON list of ``{"content": ...}`` or
``{"status": 500, "error": ...}`` items (also ``{"truncated": ...}``, ``{"garbage": ...}``,
``{"hang": SECONDS}``, ``{"echo_example": true, "quoted": false}``); ``--cycle`` starts
them again when they run out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

VERSION = "0.12.0"
DEFAULT_MODELS = ("qwen2.5-coder:7b",)


@dataclass(frozen=True)
class Reply:
    """A reply streamed in pieces of ``chunk_size`` characters, ``chunk_delay`` s apart."""

    content: str
    chunk_size: int = 16
    chunk_delay: float = 0.0
    prompt_tokens: int | None = None  # None: counted from the prompt
    reply_tokens: int | None = None  # None: the number of pieces
    done_reason: str = "stop"


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error status with Ollama's error body ``{"error": error}``."""

    status: int
    error: str


@dataclass(frozen=True)
class Truncated:
    """Part of a stream without its final message.

    The connection is cut mid-body (``clean_end`` False), or the body ends properly but
    without the message that says ``done`` (``clean_end`` True).
    """

    content: str
    chunk_size: int = 16
    clean_end: bool = False


@dataclass(frozen=True)
class Garbage:
    """A line that is not JSON, where a message of the stream belongs."""

    raw: str


@dataclass(frozen=True)
class Hang:
    """Wait ``seconds`` before answering at all, then answer with ``then``."""

    seconds: float
    then: Scripted | None = None  # None: an empty reply


@dataclass(frozen=True)
class EchoExample:
    """The reply a model too small for the task gives: the example of the answer that the
    prompt shows, copied. The example is the first line of the system message that starts
    with ``{``; ``quoted`` turns its bare ``<placeholders>`` into JSON strings, as a model held
    to the JSON schema (``format=``) writes them."""

    quoted: bool = False


Scripted = Reply | ErrorReply | Truncated | Garbage | Hang | EchoExample


def prompt_example(body: dict[str, Any], quoted: bool = False) -> str:
    """The example of the answer in a chat request's system message ("" when it has none)."""
    system = "\n".join(
        str(message.get("content") or "")
        for message in body.get("messages") or []
        if message.get("role") == "system"
    )
    line = next((line for line in system.splitlines() if line.startswith("{")), "")
    return re.sub(r'(?<=: )(<[^<>"]*>)', lambda m: json.dumps(m.group(1)), line) if quoted else line


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    body: Any  # the JSON body; None without one


def full_model_name(name: str) -> str:
    """``name`` with its tag, as Ollama reads it (no tag means ``:latest``)."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def parameter_size(name: str) -> str:
    """The parameter size the server lists for a model: as its tag says ("gemma3:270m" is
    "270M"), else 7.6B (qwen2.5-coder:7b's)."""
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    found = re.match(r"(\d+(?:\.\d+)?)([mb])\b", tag, re.IGNORECASE)
    return f"{found.group(1)}{found.group(2).upper()}" if found else "7.6B"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _keep_alive_is_zero(value: Any) -> bool:
    """Whether a keep_alive value ("0", 0, "0s", "0m" ...) asks for an unload now."""
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return value == 0
    text = str(value).strip().rstrip("hms")
    try:
        return float(text) == 0
    except ValueError:
        return False


def _pieces(content: str, size: int) -> list[str]:
    size = max(1, size)
    return [content[start : start + size] for start in range(0, len(content), size)]


def reply_from_json(item: dict[str, Any]) -> Scripted:
    """A scripted item from its JSON form (the --replies file)."""
    if "status" in item:
        return ErrorReply(int(item["status"]), str(item.get("error", "")))
    if "truncated" in item:
        return Truncated(str(item["truncated"]))
    if "garbage" in item:
        return Garbage(str(item["garbage"]))
    if "hang" in item:
        return Hang(float(item["hang"]))
    if "echo_example" in item:
        return EchoExample(quoted=bool(item.get("quoted", False)))
    if "content" in item:
        return Reply(str(item["content"]), chunk_size=int(item.get("chunk_size", 16)))
    raise ValueError(
        f"a reply needs content, status, truncated, garbage, hang or echo_example: {item!r}"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], double: OllamaDouble) -> None:
        self.double = double
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Close every open connection, kept-alive ones too: a stopped server is gone."""
        with self.connections_lock:
            open_connections = list(self.connections)
            self.connections.clear()
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) is normal here, not worth a traceback.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, as Ollama
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.double.verbose:
            super().log_message(format, *args)

    # --- writing ---------------------------------------------------------------------------

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_raw(self, text: str) -> None:
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_line(self, message: dict[str, Any]) -> None:
        self._send_chunk(json.dumps(message).encode() + b"\n")

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _cut(self) -> None:
        """Drop the connection in the middle of a body."""
        self.close_connection = True
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- reading ---------------------------------------------------------------------------

    def _read_body(self) -> tuple[Any, str | None]:
        """The JSON body, and an error when it is not JSON."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None, None
        try:
            return json.loads(raw), None
        except json.JSONDecodeError as error:
            return None, f"invalid character in request body: {error}"

    def _dispatch(self, method: str) -> None:
        body, body_error = self._read_body() if method == "POST" else (None, None)
        path = self.path.split("?", 1)[0]
        double = self.server.double
        double._record(RecordedRequest(method, path, body))
        routes = {
            "/": ("GET", self._root),
            "/api/version": ("GET", self._version),
            "/api/tags": ("GET", self._tags),
            "/api/ps": ("GET", self._ps),
            "/api/show": ("POST", self._show),
            "/api/chat": ("POST", self._chat),
            "/api/generate": ("POST", self._generate),
        }
        failure = double._failure_for(path)
        if isinstance(failure, Hang):
            if double._stopping.wait(failure.seconds):
                self._cut()
                return
        elif isinstance(failure, ErrorReply):
            self._send_error(failure.status, failure.error)
            return
        elif isinstance(failure, Garbage):
            self._send_raw(failure.raw)
            return
        route = routes.get(path)
        if route is None:
            self._send_error(404, "404 page not found")
            return
        allowed, answer = route
        if method != allowed and not (method == "HEAD" and path == "/"):  # Ollama's heartbeat
            self._send_error(405, "405 method not allowed")
            return
        if body_error is not None:
            self._send_error(400, body_error)
            return
        if method == "POST" and not isinstance(body, dict):
            self._send_error(400, "missing request body")
            return
        answer(body or {})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- endpoints -------------------------------------------------------------------------

    def _root(self, body: dict[str, Any]) -> None:
        data = b"Ollama is running"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _version(self, body: dict[str, Any]) -> None:
        self._send_json(200, {"version": VERSION})

    def _tags(self, body: dict[str, Any]) -> None:
        double = self.server.double
        self._send_json(200, {"models": [double._model_entry(name) for name in double.models]})

    def _ps(self, body: dict[str, Any]) -> None:
        double = self.server.double
        self._send_json(200, {"models": [double._loaded_entry(name) for name in double.loaded]})

    def _show(self, body: dict[str, Any]) -> None:
        double = self.server.double
        name = str(body.get("model") or body.get("name") or "")
        known = double._find_model(name)
        if known is None:
            self._send_error(404, f"model '{name}' not found")
            return
        entry = double._model_entry(known)
        self._send_json(
            200,
            {
                "modelfile": f"FROM {known}\n",
                "parameters": "temperature 0.7",
                "template": "{{ .Prompt }}",
                "details": entry["details"],
                "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768},
                "capabilities": ["completion", "tools"],
                "modified_at": entry["modified_at"],
            },
        )

    def _chat(self, body: dict[str, Any]) -> None:
        self._converse(body, kind="chat")

    def _generate(self, body: dict[str, Any]) -> None:
        self._converse(body, kind="generate")

    def _converse(self, body: dict[str, Any], *, kind: str) -> None:
        """/api/chat and /api/generate: load, unload, or answer with the next scripted item."""
        double = self.server.double
        name = str(body.get("model") or "")
        if not name:
            self._send_error(400, "model is required")
            return
        known = double._find_model(name)
        if known is None:
            self._send_error(404, f'model "{name}" not found, try pulling it first')
            return
        unload = _keep_alive_is_zero(body.get("keep_alive"))
        empty = not body.get("messages") if kind == "chat" else not body.get("prompt")
        if empty:
            # Ollama's way to load (or, with keep_alive 0, unload) a model without a reply.
            if unload:
                double._unload(known)
            else:
                double._load(known)
            self._send_json(
                200,
                double._final(name, kind, "", done_reason="unload" if unload else "load"),
            )
            return
        double._load(known)
        try:
            self._answer(double._next_reply(), body, name, kind)
        finally:
            if unload:
                double._unload(known)

    def _answer(self, item: Scripted, body: dict[str, Any], name: str, kind: str) -> None:
        double = self.server.double
        streaming = body.get("stream", True) is not False
        if isinstance(item, Hang):
            if double._stopping.wait(item.seconds):
                self._cut()
                return
            self._answer(item.then or Reply(""), body, name, kind)
            return
        if isinstance(item, ErrorReply):
            self._send_error(item.status, item.error)
            return
        if isinstance(item, Garbage):
            if streaming:
                self._start_stream()
                self._send_chunk(item.raw.encode() + b"\n")
                self._end_stream()
            else:
                self._send_raw(item.raw)
            return
        if isinstance(item, Truncated):
            self._truncated(item, name, kind, streaming)
            return
        if isinstance(item, EchoExample):
            self._reply(Reply(prompt_example(body, item.quoted)), body, name, kind, streaming)
            return
        self._reply(item, body, name, kind, streaming)

    def _reply(
        self, item: Reply, body: dict[str, Any], name: str, kind: str, streaming: bool
    ) -> None:
        double = self.server.double
        pieces = _pieces(item.content, item.chunk_size)
        prompt_tokens = item.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = double._count_prompt_tokens(body)
        reply_tokens = len(pieces) if item.reply_tokens is None else item.reply_tokens
        final = double._final(
            name,
            kind,
            "" if streaming else item.content,
            done_reason=item.done_reason,
            prompt_tokens=prompt_tokens,
            reply_tokens=reply_tokens,
        )
        if not streaming:
            self._send_json(200, final)
            return
        self._start_stream()
        for piece in pieces:
            if item.chunk_delay and double._stopping.wait(item.chunk_delay):
                self._cut()
                return
            self._send_line(double._partial(name, kind, piece))
        self._send_line(final)
        self._end_stream()

    def _truncated(self, item: Truncated, name: str, kind: str, streaming: bool) -> None:
        double = self.server.double
        pieces = _pieces(item.content, item.chunk_size)
        if not streaming:
            # A body cut short of its announced length.
            data = json.dumps(double._final(name, kind, item.content, done_reason="stop")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self._cut()
            return
        self._start_stream()
        for piece in pieces:
            self._send_line(double._partial(name, kind, piece))
        if item.clean_end:
            self._end_stream()
        else:
            self._cut()


class OllamaDouble:
    """An Ollama-compatible server on 127.0.0.1 with scripted model replies.

    ``port`` 0 picks a free port on the first start; later starts reuse it, so a test can
    take the server down (connections are then refused) and bring it back at the same host.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        models: Iterable[str] = DEFAULT_MODELS,
        replies: Iterable[Scripted] = (),
        default_reply: Scripted = ErrorReply(500, "no scripted reply"),
        verbose: bool = False,
        cycle: bool = False,
    ) -> None:
        self.models: list[str] = list(models)
        self.default_reply = default_reply
        # True: a reply used goes to the back of the queue, so the replies never run out.
        self.cycle = cycle
        self.verbose = verbose
        self._port = port
        self._lock = threading.Lock()
        self._replies: deque[Scripted] = deque(replies)
        self._requests: list[RecordedRequest] = []
        self._loaded: dict[str, None] = {}  # ordered set of the models in memory
        self._failures: dict[str, ErrorReply | Hang | Garbage] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- life ------------------------------------------------------------------------------

    def start(self) -> OllamaDouble:
        """Listen (on the same port as before, after a stop) and serve in a thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._port), self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ollama-double-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection: connecting is then refused."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes hanging replies
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None
        with self._lock:
            self._loaded.clear()  # a restarted Ollama has nothing in memory

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    def __enter__(self) -> OllamaDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on (known after the first start)."""
        if not self._port:
            raise RuntimeError("the server has no port before its first start()")
        return self._port

    @property
    def host(self) -> str:
        """The address to give the client: ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    # --- script and record -----------------------------------------------------------------

    def script(self, *items: Scripted) -> None:
        """Queue replies: each chat takes the next one."""
        with self._lock:
            self._replies.extend(items)

    @property
    def pending(self) -> int:
        """How many scripted replies are not used yet."""
        with self._lock:
            return len(self._replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The requests so far to ``path`` (e.g. "/api/chat")."""
        return [request for request in self.requests if request.path == path]

    def clear_requests(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self._requests.clear()

    def fail_path(self, path: str, failure: ErrorReply | Hang | Garbage | None) -> None:
        """Answer every request to ``path`` with ``failure`` (None: answer normally again).

        An `ErrorReply` or `Garbage` replaces the answer; a `Hang` delays it.
        """
        with self._lock:
            if failure is None:
                self._failures.pop(path, None)
            else:
                self._failures[path] = failure

    @property
    def loaded(self) -> list[str]:
        """The models in memory, as /api/ps lists them."""
        with self._lock:
            return list(self._loaded)

    # --- used by the handler ---------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _failure_for(self, path: str) -> ErrorReply | Hang | Garbage | None:
        with self._lock:
            return self._failures.get(path)

    def _next_reply(self) -> Scripted:
        with self._lock:
            if not self._replies:
                return self.default_reply
            reply = self._replies.popleft()
            if self.cycle:
                self._replies.append(reply)
            return reply

    def _find_model(self, name: str) -> str | None:
        wanted = full_model_name(name)
        for model in self.models:
            if full_model_name(model) == wanted:
                return model
        return None

    def _load(self, name: str) -> None:
        with self._lock:
            self._loaded[name] = None

    def _unload(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)

    def _model_entry(self, name: str) -> dict[str, Any]:
        digest = hashlib.sha256(name.encode()).hexdigest()
        family = name.split(":", 1)[0].split("/")[-1].split(".")[0]
        return {
            "name": full_model_name(name),
            "model": full_model_name(name),
            "modified_at": "2025-06-01T12:00:00.000000000Z",
            "size": 4_683_087_332,
            "digest": digest,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": family,
                "families": [family],
                "parameter_size": parameter_size(name),
                "quantization_level": "Q4_K_M",
            },
        }

    def _loaded_entry(self, name: str) -> dict[str, Any]:
        entry = self._model_entry(name)
        del entry["modified_at"]
        entry["expires_at"] = "2099-01-01T00:00:00Z"
        entry["size_vram"] = entry["size"]
        entry["context_length"] = 4096
        return entry

    @staticmethod
    def _count_prompt_tokens(body: dict[str, Any]) -> int:
        """A stand-in token count: about one token per four characters of the prompt."""
        if "messages" in body:
            text = "".join(str(message.get("content", "")) for message in body["messages"])
        else:
            text = str(body.get("prompt", ""))
        return len(text) // 4 + 1

    @staticmethod
    def _partial(name: str, kind: str, piece: str) -> dict[str, Any]:
        message: dict[str, Any] = {"model": name, "created_at": _now()}
        if kind == "chat":
            message["message"] = {"role": "assistant", "content": piece}
        else:
            message["response"] = piece
        message["done"] = False
        return message

    def _final(
        self,
        name: str,
        kind: str,
        content: str,
        *,
        done_reason: str,
        prompt_tokens: int | None = None,
        reply_tokens: int | None = None,
    ) -> dict[str, Any]:
        message = self._partial(name, kind, content)
        message["done_reason"] = done_reason
        message["done"] = True
        if prompt_tokens is not None and reply_tokens is not None:
            message.update(
                total_duration=120_000_000,
                load_duration=10_000_000,
                prompt_eval_count=prompt_tokens,
                prompt_eval_duration=20_000_000,
                eval_count=reply_tokens,
                eval_duration=90_000_000,
            )
        return message


def load_replies(path: Path) -> list[Scripted]:
    """The scripted replies of a JSON file (a list of items, see `reply_from_json`)."""
    items = json.loads(path.read_text())
    if not isinstance(items, list):
        raise ValueError(f"{path} must hold a JSON list of replies")
    return [reply_from_json(item) for item in items]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C, printing the host to give to the cockpit (OLLAMA_HOST)."""
    parser = argparse.ArgumentParser(
        description="An Ollama-compatible server with scripted replies."
    )
    parser.add_argument("--port", type=int, default=11434, help="port on 127.0.0.1 (0 = any free)")
    parser.add_argument("--replies", type=Path, help="JSON list of replies, used in order")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        help=f"a model it has pulled (repeatable; default {DEFAULT_MODELS[0]})",
    )
    parser.add_argument(
        "--cycle", action="store_true", help="start the replies again when they run out"
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    arguments = parser.parse_args(argv)
    try:
        replies = load_replies(arguments.replies) if arguments.replies else []
    except (OSError, ValueError) as error:
        print(f"error: cannot read the replies: {error}", file=sys.stderr)
        return 2
    double = OllamaDouble(
        port=arguments.port,
        models=arguments.models or DEFAULT_MODELS,
        replies=replies,
        verbose=not arguments.quiet,
        cycle=arguments.cycle,
    )
    try:
        double.start()
    except OSError as error:
        print(f"error: cannot listen on port {arguments.port}: {error}", file=sys.stderr)
        return 2
    print(double.host, flush=True)
    stop = threading.Event()
    # Ctrl-C or a kill ends it, even when started from a shell that ignores them (nohup, &).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.2):
            pass
    finally:
        double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

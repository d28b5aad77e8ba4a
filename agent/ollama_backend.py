"""The model server: a local Ollama, spoken to with the `ollama` client, and its health.

Every trouble with the server becomes one `AgentState` and a one-line message that says
what to do: not running, model not pulled, too slow, a broken reply, or another error.
`OllamaBackend.check` reports the state and never raises for server trouble;
`OllamaBackend.chat` streams one reply under a total deadline and raises `AgentUnavailable`
(carrying the `Health`) when the server cannot give it. `Backoff` spaces out the tries to
reach the server again.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx
import ollama
import pydantic

from agent.options import OllamaOptions

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
PROBE_TIMEOUT_SECONDS = 10.0  # a health check asks for small answers; it never waits long
DETAIL_CHARS = 200  # how much of a server's error text a one-line message carries
# Below this many parameters, "choose a smaller model" is no advice worth giving.
SMALL_MODEL_PARAMETERS = 2e9
_PARAMETER_COUNT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)([mMbB])(?![a-zA-Z])")


class AgentState(str, Enum):
    """Whether the model server can answer now, and if not, why."""

    READY = "ready"
    SERVER_DOWN = "server_down"
    MODEL_MISSING = "model_missing"
    TIMEOUT = "timeout"
    BAD_REPLY = "bad_reply"  # a malformed or truncated stream
    ERROR = "error"  # any other error the server reported


@dataclass(frozen=True)
class Health:
    """The model server's state at ``checked_at`` (seconds since the epoch)."""

    state: AgentState
    message: str  # one line: what happened and what to do
    version: str | None = None  # Ollama's version, when it answered
    models: tuple[str, ...] = ()  # the models it has pulled, when it listed them
    checked_at: float = 0.0


class AgentUnavailable(Exception):
    """The model server could not give a reply; ``health`` says why and what to do."""

    def __init__(self, health: Health) -> None:
        super().__init__(health.message)
        self.health = health

    @property
    def state(self) -> AgentState:
        """The server's state that stopped the reply."""
        return self.health.state


@dataclass(frozen=True)
class ChatReply:
    """One complete reply of the model."""

    content: str
    prompt_tokens: int | None  # None when the server did not count them (a cached prompt)
    reply_tokens: int | None
    seconds: float
    done_reason: str | None = None  # "stop"; "length" when the reply hit a token limit


def resolve_host(configured: str, environ: Mapping[str, str] | None = None) -> str:
    """The server address as a URL: ``configured``, else OLLAMA_HOST, else the default.

    Read as Ollama's own tools read it: a bare ``host`` or ``host:port`` means http, and a
    missing port means 11434 (80 or 443 when the scheme is given).
    """
    environment = os.environ if environ is None else environ
    address = configured.strip() or environment.get("OLLAMA_HOST", "").strip()
    if not address:
        return DEFAULT_HOST
    scheme, separator, rest = address.partition("://")
    default_port = DEFAULT_PORT
    if not separator:
        scheme, rest = "http", address
    elif scheme in ("http", "https"):
        default_port = 80 if scheme == "http" else 443
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{rest}")
        port = parts.port or default_port
    except ValueError:
        raise ValueError(
            f"the Ollama address {address!r} is not a URL: set [agent] host (or OLLAMA_HOST) "
            f"to one such as {DEFAULT_HOST}"
        ) from None
    hostname = parts.hostname or "127.0.0.1"
    if ":" in hostname:  # an IPv6 address keeps its brackets in a URL
        hostname = f"[{hostname}]"
    path = parts.path.strip("/")
    return f"{scheme}://{hostname}:{port}/{path}" if path else f"{scheme}://{hostname}:{port}"


def full_model_name(name: str) -> str:
    """``name`` with its tag: Ollama reads a name without one as ``:latest``."""
    last_part = name.rsplit("/", 1)[-1]
    return name if ":" in last_part else f"{name}:latest"


def _one_line(text: str) -> str:
    """A server's text made fit for a one-line message."""
    line = " ".join(str(text).split())
    return line if len(line) <= DETAIL_CHARS else line[: DETAIL_CHARS - 1] + "…"


def model_parameters(name: str, listed: str | None = None) -> float | None:
    """How many parameters a model has: from what the server listed (its ``parameter_size``,
    such as "7.6B" or "268.10M"), else from the tag of its name ("gemma3:270m",
    "qwen2.5-coder:1.5b-instruct"); None when neither says."""
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    for text in (listed or "", tag):
        found = _PARAMETER_COUNT.search(text)
        if found:
            scale = 1e6 if found.group(2).lower() == "m" else 1e9
            return float(found.group(1)) * scale
    return None


def parameters_text(parameters: float) -> str:
    """A parameter count as model names write it: 270M, 1.5B."""
    if parameters < 1e9:
        return f"{parameters / 1e6:.0f}M"
    return f"{parameters / 1e9:.3g}B"


class _StreamFailed:
    """What the thread that reads a reply hands over when reading it failed."""

    def __init__(self, error: Exception) -> None:
        self.error = error


_STREAM_END = object()
# How often a wait for the next piece of a reply looks whether it was cancelled.
CANCEL_POLL_SECONDS = 0.2


class ReplyCancelled(Exception):
    """The reply was being waited for when `OllamaBackend.cancel` was called: the engine is
    stopping, and nothing stands in for the model."""


class OllamaBackend:
    """Talks to one Ollama server about one model."""

    def __init__(self, options: OllamaOptions, *, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self._host = resolve_host(options.host)
        self._clock = clock
        self._probe_timeout = min(options.timeout_seconds, PROBE_TIMEOUT_SECONDS)
        self._client = ollama.Client(host=self._host, timeout=options.timeout_seconds)
        self._probe_client = ollama.Client(host=self._host, timeout=self._probe_timeout)
        self._cancelled = threading.Event()
        self._listed_size: str | None = None  # the model's parameter size, as the server lists it

    # --- what others read ------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The server address in use (the setting, else OLLAMA_HOST, else the default)."""
        return self._host

    @property
    def model(self) -> str:
        """The model that answers, as configured."""
        return self.options.model

    @property
    def num_ctx(self) -> int:
        """The model's context window in tokens."""
        return self.options.num_ctx

    @property
    def parameters(self) -> float | None:
        """How many parameters the model has, when the server or its name says."""
        return model_parameters(self.options.model, self._listed_size)

    def cancel(self) -> None:
        """End the replies being waited for now, and any asked for later, with
        `ReplyCancelled`: a stopping engine does not wait for the model to finish writing."""
        self._cancelled.set()

    def close(self) -> None:
        """Cancel what is being waited for and close the connections to the server."""
        self.cancel()
        self._client.close()
        self._probe_client.close()

    # --- messages --------------------------------------------------------------------------

    def _health(
        self,
        state: AgentState,
        message: str,
        *,
        version: str | None = None,
        models: tuple[str, ...] = (),
    ) -> Health:
        return Health(state, message, version, models, self._clock())

    def _server_down(self) -> Health:
        return self._health(
            AgentState.SERVER_DOWN,
            f"Ollama is not running at {self._host}: start it with `ollama serve` "
            "(or set [agent] host to where it runs)",
        )

    def _model_missing(self, version: str | None = None, models: tuple[str, ...] = ()) -> Health:
        model = self.options.model
        return self._health(
            AgentState.MODEL_MISSING,
            f"model {model} is not pulled in Ollama at {self._host}: run `ollama pull {model}`",
            version=version,
            models=models,
        )

    def _timed_out(self, seconds: float, tokens: int = 0) -> Health:
        """The reply did not come within ``seconds``; ``tokens``: the pieces of it that had
        arrived (Ollama streams one token a piece)."""
        parameters = self.parameters
        small = parameters is not None and parameters < SMALL_MODEL_PARAMETERS
        size = f" ({parameters_text(parameters)} parameters)" if parameters is not None else ""
        if tokens:
            message = (
                f"{self.options.model} at {self._host} did not finish its reply within "
                f"{seconds:g} s (it had sent {tokens:,} tokens): "
            )
            if small:
                message += (
                    f"a model this small{size} is not slow, so it may be writing on without "
                    "end; raise [agent] timeout_seconds, or choose a model that keeps to the "
                    "answer's format"
                )
            else:
                message += (
                    f"the model{size} may be too slow for this machine; raise [agent] "
                    "timeout_seconds or choose a smaller model"
                )
        else:
            message = f"Ollama did not answer within {seconds:g} s at {self._host}: "
            if small:
                message += (
                    f"the model{size} may be loading or the server busy (`ollama ps`); "
                    "raise [agent] timeout_seconds"
                )
            else:
                message += (
                    f"the model{size} may be loading or too slow for this machine; raise "
                    "[agent] timeout_seconds or choose a smaller model"
                )
        return self._health(AgentState.TIMEOUT, message)

    def _bad_reply(self, detail: str) -> Health:
        return self._health(
            AgentState.BAD_REPLY,
            f"Ollama at {self._host} sent a broken reply ({_one_line(detail)}): check the "
            "server's log, and that [agent] host points at Ollama",
        )

    def _server_error(self, error: ollama.ResponseError) -> Health:
        status = f"HTTP {error.status_code}" if error.status_code > 0 else "during the reply"
        return self._health(
            AgentState.ERROR,
            f"Ollama at {self._host} failed ({status}): {_one_line(str(error.error))}: see the "
            "server's log (the `ollama serve` output)",
        )

    def _classify(
        self, error: BaseException, *, seconds: float, about_model: bool, tokens: int = 0
    ) -> Health | None:
        """The health that ``error`` shows, or None when it is no server trouble.

        ``about_model``: the request named the model, so "not found" means it is not pulled
        (elsewhere it means the address is not an Ollama server).
        """
        if isinstance(error, httpx.TimeoutException):
            if about_model:
                return self._timed_out(seconds, tokens)
            return self._health(
                AgentState.TIMEOUT,
                f"Ollama at {self._host} did not answer a health check within {seconds:g} s: "
                "check that it is not stuck (`ollama ps`, its log)",
            )
        if isinstance(error, (httpx.ConnectError, ConnectionError)):
            return self._server_down()
        if isinstance(error, ollama.ResponseError):
            if error.status_code == 404 and "not found" in str(error.error).lower():
                if about_model:
                    return self._model_missing()
                return self._health(
                    AgentState.ERROR,
                    f"{self._host} does not answer as Ollama does (HTTP 404: "
                    f"{_one_line(str(error.error))}): set [agent] host to Ollama's address",
                )
            return self._server_error(error)
        if isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError)):
            return self._bad_reply(f"the stream broke off: {error}")
        if isinstance(error, json.JSONDecodeError):
            return self._bad_reply(f"a line that is not JSON: {error.doc[:60]!r}")
        if isinstance(error, pydantic.ValidationError):
            return self._bad_reply(f"a message of the wrong shape: {error.errors()[0]['msg']}")
        if isinstance(error, httpx.HTTPError):
            detail = _one_line(str(error)) or type(error).__name__
            return self._health(
                AgentState.ERROR,
                f"could not talk to Ollama at {self._host} ({detail}): check [agent] host and "
                "that the server runs",
            )
        return None

    # --- health ----------------------------------------------------------------------------

    def _version(self) -> str:
        """Ask the server for its version; raises what the request raised."""
        response = httpx.get(f"{self._host}/api/version", timeout=self._probe_timeout)
        if response.status_code != 200:
            raise ollama.ResponseError(response.text, response.status_code)
        answer = response.json()
        if not isinstance(answer, dict) or not isinstance(answer.get("version"), str):
            raise ValueError(f"/api/version answered {response.text[:60]!r}")
        return str(answer["version"])

    def check(self) -> Health:
        """The server's state now: running, with the model pulled? Never raises for trouble."""
        version: str | None = None
        try:
            version = self._version()
            listed = self._probe_client.list()
        except ValueError as error:  # JSONDecodeError too: the address answered, not Ollama
            health = self._classify(error, seconds=self._probe_timeout, about_model=False)
            return health or self._bad_reply(str(error))
        except Exception as error:
            health = self._classify(error, seconds=self._probe_timeout, about_model=False)
            if health is None:
                raise
            return health
        models = tuple(entry.model for entry in listed.models if entry.model)
        wanted = full_model_name(self.options.model)
        if wanted not in {full_model_name(name) for name in models}:
            return self._model_missing(version, models)
        for entry in listed.models:
            if entry.model and full_model_name(entry.model) == wanted and entry.details:
                self._listed_size = entry.details.parameter_size
        return self._health(
            AgentState.READY,
            f"Ollama {version} at {self._host} is ready with {self.options.model}",
            version=version,
            models=models,
        )

    # --- replies ---------------------------------------------------------------------------

    def _model_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "temperature": self.options.temperature,
            "num_ctx": self.options.num_ctx,
        }
        if self.options.seed:
            options["seed"] = self.options.seed
        if self.options.on_cpu:
            options["num_gpu"] = 0  # no layer on a GPU: they are all the workers'
        return options

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        schema: dict[str, Any],
        on_token: Callable[[str], None] | None = None,
    ) -> ChatReply:
        """One streamed reply to ``messages``, constrained to the JSON ``schema``.

        ``on_token`` gets every piece of the reply as it arrives. The whole reply must come
        within ``timeout_seconds``. Raises `AgentUnavailable` when the server cannot give it.
        """
        timeout = self.options.timeout_seconds
        started = time.monotonic()
        deadline = started + timeout
        stream = self._client.chat(
            model=self.options.model,
            messages=[dict(message) for message in messages],
            format=schema,
            options=self._model_options(),
            stream=True,
        )
        # httpx's timeout bounds each read, not the whole reply, and a blocked read cannot be
        # interrupted: another thread reads the stream, this one waits with the deadline.
        parts: queue.Queue[object] = queue.Queue()
        abandoned = threading.Event()
        reader = threading.Thread(
            target=_read_stream, args=(stream, parts, abandoned), name="ollama-reply", daemon=True
        )
        reader.start()
        pieces: list[str] = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if self._cancelled.is_set():
                    raise ReplyCancelled(f"the reply of {self.options.model} was not waited for")
                try:
                    if remaining <= 0:
                        raise AgentUnavailable(self._timed_out(timeout, len(pieces)))
                    item = parts.get(timeout=min(remaining, CANCEL_POLL_SECONDS))
                except queue.Empty:
                    continue
                if item is _STREAM_END:
                    raise AgentUnavailable(
                        self._bad_reply("the stream ended before its last message")
                    )
                if isinstance(item, _StreamFailed):
                    health = self._classify(
                        item.error, seconds=timeout, about_model=True, tokens=len(pieces)
                    )
                    if health is None and isinstance(item.error, (AttributeError, TypeError)):
                        # the client reads each line as an object; JSON of another kind fails so
                        health = self._bad_reply(f"a message that is not an object: {item.error}")
                    if health is None:
                        raise item.error
                    raise AgentUnavailable(health) from item.error
                assert isinstance(item, ollama.ChatResponse)
                piece = item.message.content or ""
                if piece:
                    pieces.append(piece)
                    if on_token is not None:
                        on_token(piece)
                if item.done:
                    return ChatReply(
                        content="".join(pieces),
                        prompt_tokens=item.prompt_eval_count,
                        reply_tokens=item.eval_count,
                        seconds=time.monotonic() - started,
                        done_reason=item.done_reason,
                    )
        finally:
            abandoned.set()

    # --- the GPU ---------------------------------------------------------------------------

    def unload(self) -> None:
        """Ask the server to unload the model from memory now (keep_alive=0).

        Nothing to unload when the server is down or does not have the model. Raises
        `AgentUnavailable` when the server failed to answer otherwise.
        """
        try:
            self._client.generate(model=self.options.model, prompt="", keep_alive=0)
        except Exception as error:
            health = self._classify(error, seconds=self.options.timeout_seconds, about_model=True)
            if health is None:
                raise
            if health.state in (AgentState.SERVER_DOWN, AgentState.MODEL_MISSING):
                return
            raise AgentUnavailable(health) from error


def _read_stream(
    stream: Iterator[ollama.ChatResponse], parts: queue.Queue[object], abandoned: threading.Event
) -> None:
    """Hand every message of ``stream`` to ``parts``, then its end or what went wrong."""
    try:
        for part in stream:
            if abandoned.is_set():
                return
            parts.put(part)
        parts.put(_STREAM_END)
    except Exception as error:
        parts.put(_StreamFailed(error))
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


class Backoff:
    """When to try the server again after failures: 2 s, 4 s, 8 s ... up to ``max_seconds``.

    Pure: the caller passes the time (``now``, of any monotonic clock), or the clock given.
    """

    def __init__(
        self,
        max_seconds: float,
        *,
        first_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_seconds <= 0 or first_seconds <= 0:
            raise ValueError("the waits of a backoff must be greater than 0 s")
        self.max_seconds = max_seconds
        self.first_seconds = first_seconds
        self.clock = clock
        self.failures = 0
        self.retry_at: float | None = None  # None: no failure since the last success

    def wait_after(self, failures: int) -> float:
        """The wait, in seconds, after ``failures`` failures in a row."""
        if failures <= 0:
            return 0.0
        doublings = min(failures - 1, 64)  # far past any max; keeps the power finite
        return min(self.first_seconds * math.pow(2.0, doublings), self.max_seconds)

    def failed(self, now: float | None = None) -> float:
        """A try failed at ``now``: the next waits longer. Returns the wait."""
        moment = self.clock() if now is None else now
        self.failures += 1
        wait = self.wait_after(self.failures)
        self.retry_at = moment + wait
        return wait

    def succeeded(self) -> None:
        """A try succeeded: the next failure waits the first wait again."""
        self.failures = 0
        self.retry_at = None

    def ready_to_retry(self, now: float | None = None) -> bool:
        """Whether the wait after the last failure is over at ``now``."""
        if self.retry_at is None:
            return True
        moment = self.clock() if now is None else now
        return moment >= self.retry_at

    def seconds_until_retry(self, now: float | None = None) -> float:
        """How long until the next try may start (0 when it may start now)."""
        if self.retry_at is None:
            return 0.0
        moment = self.clock() if now is None else now
        return max(0.0, self.retry_at - moment)

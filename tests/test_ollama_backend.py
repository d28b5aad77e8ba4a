"""The Ollama backend against an Ollama-compatible server, through the real `ollama` client."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from agent.ollama_backend import (
    AgentState,
    AgentUnavailable,
    Backoff,
    Health,
    OllamaBackend,
    full_model_name,
    model_parameters,
    resolve_host,
)
from agent.options import OllamaOptions
from tests.ollama_server import ErrorReply, Garbage, Hang, OllamaDouble, Reply, Truncated

MODEL = "qwen2.5-coder:7b"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"description": {"type": "string"}},
    "required": ["description"],
}
MESSAGES = [
    {"role": "system", "content": "You propose experiments."},
    {"role": "user", "content": "Make the model better."},
]


def backend_for(server: OllamaDouble, **settings: Any) -> OllamaBackend:
    return OllamaBackend(OllamaOptions(host=server.host, **settings))


def unavailable(backend: OllamaBackend, **chat: Any) -> Health:
    """The health that a chat that must fail raises."""
    with pytest.raises(AgentUnavailable) as caught:
        backend.chat(MESSAGES, schema=SCHEMA, **chat)
    health = caught.value.health
    assert str(caught.value) == health.message
    assert "\n" not in health.message
    return health


# --- the server double answers as Ollama does ---------------------------------------------


def test_double_answers_errors_with_ollamas_status_codes_and_bodies(
    ollama_server: OllamaDouble,
) -> None:
    host = ollama_server.host
    assert httpx.get(f"{host}/api/version").json() == {"version": "0.12.0"}
    tags = httpx.get(f"{host}/api/tags").json()["models"]
    assert [entry["name"] for entry in tags] == [MODEL]
    assert {"model", "modified_at", "size", "digest", "details"} <= set(tags[0])

    missing_path = httpx.get(f"{host}/api/nothing")
    assert missing_path.status_code == 404 and "error" in missing_path.json()
    wrong_method = httpx.get(f"{host}/api/chat")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()

    client = ollama.Client(host=host)
    with pytest.raises(ollama.ResponseError) as chat_error:
        client.chat(model="llama3", messages=MESSAGES)
    assert chat_error.value.status_code == 404
    assert chat_error.value.error == 'model "llama3" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as show_error:
        client.show("llama3")
    assert (show_error.value.status_code, show_error.value.error) == (
        404,
        "model 'llama3' not found",
    )
    assert client.show(MODEL).details is not None


def test_double_streams_ndjson_and_answers_whole_replies(ollama_server: OllamaDouble) -> None:
    ollama_server.script(Reply("abcdefghij", chunk_size=4), Reply("whole", chunk_size=2))
    request = {"model": MODEL, "messages": MESSAGES}
    with httpx.stream("POST", f"{ollama_server.host}/api/chat", json=request) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines()]
    assert [line["message"]["content"] for line in lines] == ["abcd", "efgh", "ij", ""]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert lines[-1]["done_reason"] == "stop"
    assert lines[-1]["eval_count"] == 3 and lines[-1]["prompt_eval_count"] > 0

    whole = ollama.Client(host=ollama_server.host).chat(model=MODEL, messages=MESSAGES)
    assert (whole.message.content, whole.done) == ("whole", True)
    assert ollama_server.pending == 0


def test_double_fails_loudly_without_a_scripted_reply(ollama_server: OllamaDouble) -> None:
    with pytest.raises(ollama.ResponseError) as error:
        ollama.Client(host=ollama_server.host).chat(model=MODEL, messages=MESSAGES)
    assert (error.value.status_code, error.value.error) == (500, "no scripted reply")


@pytest.mark.e2e
def test_double_runs_standalone_with_replies_from_a_file(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps([{"content": "first"}, {"status": 503, "error": "busy"}]))
    script = Path(__file__).with_name("ollama_server.py")
    command = [sys.executable, str(script), "--port", "0", "--replies", str(replies), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        host = process.stdout.readline().strip()
        assert host.startswith("http://127.0.0.1:")
        client = ollama.Client(host=host)
        assert client.chat(model=MODEL, messages=MESSAGES).message.content == "first"
        with pytest.raises(ollama.ResponseError) as error:
            client.chat(model=MODEL, messages=MESSAGES)
        assert (error.value.status_code, error.value.error) == (503, "busy")
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


# --- health ---------------------------------------------------------------------------------


def test_check_reports_a_ready_server_with_its_version_and_models(
    ollama_server: OllamaDouble,
) -> None:
    ollama_server.models = ["llama3:8b", MODEL]
    before = time.time()
    health = backend_for(ollama_server).check()
    assert health.state == AgentState.READY
    assert health.version == "0.12.0"
    assert health.models == ("llama3:8b", MODEL)
    assert health.checked_at >= before
    assert ollama_server.host in health.message and MODEL in health.message


def test_check_says_which_model_to_pull(ollama_server: OllamaDouble) -> None:
    ollama_server.models = ["llama3:8b"]
    health = backend_for(ollama_server).check()
    assert health.state == AgentState.MODEL_MISSING
    assert f"ollama pull {MODEL}" in health.message
    assert health.models == ("llama3:8b",) and health.version == "0.12.0"


@pytest.mark.parametrize(
    ("path", "failure", "state"),
    [
        ("/api/version", ErrorReply(404, "404 page not found"), AgentState.ERROR),
        ("/api/tags", ErrorReply(500, "listing failed"), AgentState.ERROR),
        ("/api/version", Garbage("<html>a web server</html>"), AgentState.BAD_REPLY),
        ("/api/tags", Garbage('{"models": 3}'), AgentState.BAD_REPLY),
        ("/api/tags", Hang(5.0), AgentState.TIMEOUT),
    ],
    ids=["no-version", "tags-error", "not-ollama", "tags-of-wrong-shape", "slow"],
)
def test_check_reports_a_server_in_trouble_without_raising(
    ollama_server: OllamaDouble,
    path: str,
    failure: ErrorReply | Garbage | Hang,
    state: AgentState,
) -> None:
    ollama_server.fail_path(path, failure)
    started = time.monotonic()
    health = backend_for(ollama_server, timeout_seconds=0.5).check()
    assert health.state == state
    assert "\n" not in health.message and ollama_server.host in health.message
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("pulled", "configured", "state"),
    [
        ("llama3:latest", "llama3", AgentState.READY),
        ("llama3", "llama3:latest", AgentState.READY),
        ("qwen2.5-coder:7b", "qwen2.5-coder", AgentState.MODEL_MISSING),
        (
            "registry.local:5000/team/coder",
            "registry.local:5000/team/coder:latest",
            AgentState.READY,
        ),
    ],
)
def test_check_reads_a_missing_tag_as_latest(
    ollama_server: OllamaDouble, pulled: str, configured: str, state: AgentState
) -> None:
    ollama_server.models = [pulled]
    assert backend_for(ollama_server, model=configured).check().state == state


def test_check_follows_the_server_going_down_and_coming_back(
    ollama_server: OllamaDouble,
) -> None:
    backend = backend_for(ollama_server)
    assert backend.check().state == AgentState.READY
    ollama_server.stop()
    down = backend.check()
    assert down.state == AgentState.SERVER_DOWN
    assert "`ollama serve`" in down.message and ollama_server.host in down.message
    assert down.version is None and down.models == ()
    ollama_server.start()
    assert backend.check().state == AgentState.READY


def test_an_empty_host_setting_uses_ollama_host(
    ollama_server: OllamaDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{ollama_server.port}")
    backend = OllamaBackend(OllamaOptions(host=""))
    assert backend.host == ollama_server.host
    assert backend.check().state == AgentState.READY
    assert OllamaBackend(OllamaOptions(host="http://127.0.0.1:9")).host == "http://127.0.0.1:9"
    monkeypatch.delenv("OLLAMA_HOST")
    assert OllamaBackend(OllamaOptions()).host == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("localhost", "http://localhost:11434"),
        (":5000", "http://127.0.0.1:5000"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        ("https://ollama.example.org", "https://ollama.example.org:443"),
        ("http://[::1]:8/proxy/", "http://[::1]:8/proxy"),
    ],
)
def test_host_addresses_read_as_ollama_reads_them(address: str, url: str) -> None:
    assert resolve_host(address, environ={}) == url


def test_a_host_that_is_no_address_says_what_to_set() -> None:
    with pytest.raises(ValueError, match=r"\[agent\] host"):
        resolve_host("http://box:port", environ={})


# --- replies --------------------------------------------------------------------------------


def test_chat_streams_the_reply_and_sends_the_schema_and_options(
    ollama_server: OllamaDouble,
) -> None:
    content = '{"description": "halve the learning rate, it diverges"}'
    ollama_server.script(Reply(content, chunk_size=7))
    backend = backend_for(ollama_server, temperature=0.2, num_ctx=8192, seed=17)
    tokens: list[str] = []
    reply = backend.chat(MESSAGES, schema=SCHEMA, on_token=tokens.append)

    assert reply.content == content
    assert tokens == [content[start : start + 7] for start in range(0, len(content), 7)]
    assert reply.reply_tokens == len(tokens)
    assert reply.prompt_tokens is not None and reply.prompt_tokens > 0
    assert reply.done_reason == "stop"
    assert 0 < reply.seconds < 5
    (request,) = ollama_server.requests_to("/api/chat")
    assert request.body["model"] == MODEL
    assert request.body["format"] == SCHEMA
    assert request.body["stream"] is True
    assert request.body["messages"] == MESSAGES
    assert request.body["options"] == {"temperature": 0.2, "num_ctx": 8192, "seed": 17}


def test_an_unseeded_chat_sends_no_seed(ollama_server: OllamaDouble) -> None:
    ollama_server.script(Reply("{}"))
    backend_for(ollama_server, seed=0).chat(MESSAGES, schema=SCHEMA)
    (request,) = ollama_server.requests_to("/api/chat")
    assert "seed" not in request.body["options"]


def test_a_server_error_carries_the_servers_text(ollama_server: OllamaDouble) -> None:
    error = "model requires more system memory (9.1 GiB) than is available (4.0 GiB)"
    ollama_server.script(ErrorReply(500, error))
    health = unavailable(backend_for(ollama_server))
    assert health.state == AgentState.ERROR
    assert error in health.message and "500" in health.message


def test_an_error_in_the_middle_of_the_stream_is_a_server_error(
    ollama_server: OllamaDouble,
) -> None:
    ollama_server.script(Garbage('{"error": "llama runner process has terminated"}'))
    health = unavailable(backend_for(ollama_server))
    assert health.state == AgentState.ERROR
    assert "llama runner process has terminated" in health.message


def test_a_chat_with_a_model_not_pulled_says_to_pull_it(ollama_server: OllamaDouble) -> None:
    health = unavailable(backend_for(ollama_server, model="llama3"))
    assert health.state == AgentState.MODEL_MISSING
    assert "ollama pull llama3" in health.message


def test_a_chat_with_the_server_down_says_to_start_it(ollama_server: OllamaDouble) -> None:
    backend = backend_for(ollama_server)
    ollama_server.stop()
    health = unavailable(backend)
    assert health.state == AgentState.SERVER_DOWN and "ollama serve" in health.message


@pytest.mark.parametrize(
    "broken",
    [
        Truncated('{"description": "cut in the mid'),
        Truncated('{"description": "ends without done"}', clean_end=True),
        Garbage("this is not JSON"),
        Garbage("[1, 2, 3]"),
        Garbage('{"model": "qwen2.5-coder:7b", "done": true}'),
    ],
    ids=["cut", "no-done", "not-json", "not-an-object", "no-message"],
)
def test_a_broken_stream_is_a_bad_reply(
    ollama_server: OllamaDouble, broken: Truncated | Garbage
) -> None:
    ollama_server.script(broken)
    tokens: list[str] = []
    health = unavailable(backend_for(ollama_server), on_token=tokens.append)
    assert health.state == AgentState.BAD_REPLY
    if isinstance(broken, Truncated):
        assert "".join(tokens) == broken.content


def test_a_server_that_does_not_answer_times_out_on_time(ollama_server: OllamaDouble) -> None:
    ollama_server.script(Hang(5.0))
    started = time.monotonic()
    health = unavailable(backend_for(ollama_server, timeout_seconds=0.5))
    assert health.state == AgentState.TIMEOUT
    assert "0.5 s" in health.message and "timeout_seconds" in health.message
    assert time.monotonic() - started < 1.5


def test_a_reply_that_trickles_in_past_the_deadline_times_out(
    ollama_server: OllamaDouble,
) -> None:
    # Every piece comes well within the timeout; the whole reply does not.
    ollama_server.script(Reply("x" * 40, chunk_size=2, chunk_delay=0.1))
    tokens: list[str] = []
    started = time.monotonic()
    health = unavailable(backend_for(ollama_server, timeout_seconds=0.6), on_token=tokens.append)
    assert health.state == AgentState.TIMEOUT
    assert time.monotonic() - started < 1.6
    assert 0 < len(tokens) < 20


def test_a_reply_cut_by_the_deadline_says_it_did_not_finish_and_how_much_had_come(
    ollama_server: OllamaDouble,
) -> None:
    ollama_server.script(Reply("x" * 40, chunk_size=2, chunk_delay=0.1))
    health = unavailable(backend_for(ollama_server, model=MODEL, timeout_seconds=0.6))
    assert health.state == AgentState.TIMEOUT
    assert f"{MODEL} at {ollama_server.host} did not finish its reply within 0.6 s" in (
        health.message
    )
    assert "(it had sent " in health.message and " tokens)" in health.message
    assert "did not answer" not in health.message
    assert "(7B parameters)" in health.message and "choose a smaller model" in health.message


@pytest.mark.parametrize("streaming", [False, True])
def test_a_small_model_that_times_out_is_not_told_to_choose_a_smaller_one(
    ollama_server: OllamaDouble, streaming: bool
) -> None:
    ollama_server.models.append("gemma3:270m")
    backend = backend_for(ollama_server, model="gemma3:270m", timeout_seconds=0.5)
    assert backend.check().state == AgentState.READY  # the server lists its size: 270M
    assert backend.parameters == 270e6
    ollama_server.script(Reply("x" * 40, chunk_size=2, chunk_delay=0.1) if streaming else Hang(3.0))
    health = unavailable(backend)
    assert health.state == AgentState.TIMEOUT and "timeout_seconds" in health.message
    assert "smaller model" not in health.message and "270M parameters" in health.message
    assert ("did not finish its reply" in health.message) == streaming


def test_model_sizes_are_read_from_the_servers_list_else_from_the_name() -> None:
    assert model_parameters("gemma3:270m") == 270e6
    assert model_parameters("qwen2.5-coder:1.5b-instruct-q4_K_M") == 1.5e9
    assert model_parameters("mine:latest", "268.10M") == pytest.approx(268.1e6)
    assert model_parameters("llama3") is None
    assert model_parameters("hf.co/someone/model-GGUF:Q4_K_M") is None


def test_the_backend_works_again_after_a_failure(ollama_server: OllamaDouble) -> None:
    ollama_server.script(Truncated("half"), Reply('{"description": "again"}'))
    backend = backend_for(ollama_server)
    assert unavailable(backend).state == AgentState.BAD_REPLY
    assert backend.chat(MESSAGES, schema=SCHEMA).content == '{"description": "again"}'


# --- the GPU --------------------------------------------------------------------------------


def test_unload_frees_the_model(ollama_server: OllamaDouble) -> None:
    ollama_server.script(Reply("{}"))
    backend = backend_for(ollama_server)
    backend.chat(MESSAGES, schema=SCHEMA)
    client = ollama.Client(host=ollama_server.host)
    assert [entry.model for entry in client.ps().models] == [MODEL]

    backend.unload()

    assert client.ps().models == []
    (request,) = ollama_server.requests_to("/api/generate")
    assert request.body["model"] == MODEL
    assert request.body["keep_alive"] == 0 and request.body.get("prompt", "") == ""


def test_unload_with_nothing_to_unload_does_not_raise(ollama_server: OllamaDouble) -> None:
    backend_for(ollama_server, model="llama3").unload()  # not pulled
    backend = backend_for(ollama_server)
    ollama_server.stop()
    backend.unload()  # server down
    assert ollama_server.requests_to("/api/generate")[0].body["model"] == "llama3"


def test_unload_reports_a_server_that_fails_to(ollama_server: OllamaDouble) -> None:
    backend = backend_for(ollama_server, timeout_seconds=0.5)
    ollama_server.fail_path("/api/generate", ErrorReply(500, "unload failed"))
    with pytest.raises(AgentUnavailable) as failed:
        backend.unload()
    assert failed.value.health.state == AgentState.ERROR and "unload failed" in str(failed.value)
    ollama_server.fail_path("/api/generate", Hang(5.0))
    with pytest.raises(AgentUnavailable) as slow:
        backend.unload()
    assert slow.value.health.state == AgentState.TIMEOUT


# --- backoff --------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_longest_wait_and_resets_on_success() -> None:
    backoff = Backoff(20.0, clock=lambda: 1000.0)
    assert backoff.ready_to_retry(0.0)
    waits = [backoff.failed(now=100.0) for _ in range(6)]
    assert waits == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    assert not backoff.ready_to_retry(119.9)
    assert backoff.ready_to_retry(120.0)
    assert backoff.seconds_until_retry(110.0) == pytest.approx(10.0)

    backoff.succeeded()
    assert backoff.ready_to_retry(0.0)
    assert backoff.failed() == 2.0  # the clock gives the time when none is passed
    assert not backoff.ready_to_retry() and backoff.retry_at == 1002.0


def test_backoff_with_a_short_longest_wait_never_waits_longer() -> None:
    assert [Backoff(1.5).wait_after(n) for n in (1, 2, 100, 10_000)] == [1.5, 1.5, 1.5, 1.5]


def test_model_names_without_a_tag_are_latest() -> None:
    assert full_model_name("llama3") == "llama3:latest"
    assert full_model_name("llama3:8b") == "llama3:8b"
    assert full_model_name("host:5000/llama3") == "host:5000/llama3:latest"


def test_a_model_kept_on_the_cpu_asks_for_no_gpu_layers(ollama_server: OllamaDouble) -> None:
    ollama_server.script(Reply("{}"))
    backend_for(ollama_server, on_cpu=True).chat(MESSAGES, schema=SCHEMA)
    (request,) = ollama_server.requests_to("/api/chat")
    assert request.body["options"]["num_gpu"] == 0

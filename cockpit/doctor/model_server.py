"""The check of the model server: Ollama reachable, the model pulled, and whether the model
fits on a GPU beside a training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.names import MODEL_PROPOSERS
from cockpit.config import Settings
from cockpit.doctor.verdicts import FAIL, PASS, WARN, Check, gb_text
from cockpit.store.samples import GpuSnapshot

MIB = 2**20
# Ollama holds a model's weights and its context cache: about a fifth more than the file.
MODEL_MEMORY_FACTOR = 1.2
# A model that takes more than this share of a GPU leaves a training too little of it.
MODEL_GPU_SHARE = 0.5


@dataclass(frozen=True)
class OllamaState:
    """What the doctor learnt from Ollama: the backend's health check, the model's size when
    it is pulled, and the [agent] settings that decide whether it must fit beside a training."""

    state: str  # an agent.ollama_backend.AgentState value
    message: str
    host: str
    model: str
    version: str | None = None
    model_bytes: int | None = None
    unload_before_training: bool = True
    on_cpu: bool = False


def read_ollama_state(settings: Settings) -> OllamaState:
    """Ask Ollama (the configured host and timeout) whether it runs and has the model, and
    the model's size."""
    import ollama

    from agent.ollama_backend import (
        PROBE_TIMEOUT_SECONDS,
        AgentState,
        OllamaBackend,
        OllamaOptions,
        full_model_name,
    )

    agent = settings.agent
    try:
        backend = OllamaBackend(
            OllamaOptions(host=agent.host, model=agent.model, timeout_seconds=agent.timeout_seconds)
        )
    except ValueError as exc:  # a host that is not a URL
        return OllamaState("error", str(exc), agent.host, agent.model)
    try:
        health = backend.check()
    finally:
        backend.close()
    size = None
    if health.state == AgentState.READY:
        wanted = full_model_name(agent.model)
        try:
            timeout = min(agent.timeout_seconds, PROBE_TIMEOUT_SECONDS)
            listed = ollama.Client(host=backend.host, timeout=timeout).list()
            size = next(
                (
                    int(entry.size)
                    for entry in listed.models
                    if entry.model and full_model_name(entry.model) == wanted and entry.size
                ),
                None,
            )
        except Exception:  # the size is a detail; the health check already answered
            size = None
    return OllamaState(
        state=health.state.value,
        message=health.message,
        host=backend.host,
        model=agent.model,
        version=health.version,
        model_bytes=size,
        unload_before_training=agent.unload_before_training,
        on_cpu=agent.on_cpu,
    )


def check_ollama(state: OllamaState, snapshot: GpuSnapshot, proposer: str) -> Check:
    """Ollama reachable, the model pulled, and whether it fits beside a training."""
    details: dict[str, Any] = {
        "state": state.state,
        "host": state.host,
        "model": state.model,
        "version": state.version,
        "model_bytes": state.model_bytes,
        "proposer": proposer,
    }
    needed = proposer in MODEL_PROPOSERS
    if state.state != "ready":
        if not needed:
            return Check(
                "ollama",
                PASS,
                f"not needed (engine.proposer = {proposer}): {state.message}",
                details=details,
            )
        if state.state == "server_down":
            return Check(
                "ollama",
                WARN,
                f"Ollama is not running at {state.host}: the optimiser proposes alone until "
                "it answers",
                f"start it with `ollama serve`, then `ollama pull {state.model}` (or set "
                "[agent] host to where it runs)",
                details,
            )
        if state.state == "model_missing":
            return Check(
                "ollama",
                FAIL,
                f"Ollama answers at {state.host} but model {state.model} is not pulled",
                f"ollama pull {state.model} (or set [agent] model to one `ollama list` shows)",
                details,
            )
        return Check("ollama", WARN, state.message, "see the message", details)
    summary = f"Ollama {state.version or ''} at {state.host} is ready with {state.model}"
    if state.model_bytes is None or not snapshot.available or state.on_cpu:
        where = "kept off the GPUs ([agent] on_cpu)" if state.on_cpu else "no GPU to share"
        return Check("ollama", PASS, f"{summary} ({where})", details=details)
    memories = [gpu.memory_total_mb for gpu in snapshot.gpus if gpu.memory_total_mb]
    if not memories:
        return Check("ollama", PASS, summary, details=details)
    gpu_bytes = min(memories) * MIB
    model_memory = state.model_bytes * MODEL_MEMORY_FACTOR
    share = model_memory / gpu_bytes
    details["model_gpu_share"] = share
    size = f"about {gb_text(model_memory)} of a {gb_text(gpu_bytes)} GPU ({share:.0%})"
    # One GPU and the model unloaded before each training: they never meet on it.
    if state.unload_before_training and len(snapshot.gpus) == 1:
        return Check(
            "ollama", PASS, f"{summary}: {size}, unloaded before each training", details=details
        )
    if share > MODEL_GPU_SHARE:
        return Check(
            "ollama",
            WARN,
            f"{summary}, but it takes {size}: a training beside it has too little left",
            "start Ollama on a GPU of its own and list it in [agent] reserved_gpus, set "
            "[agent] on_cpu = true, or pull a smaller model",
            details,
        )
    return Check("ollama", PASS, f"{summary}: {size}, fits beside a training", details=details)

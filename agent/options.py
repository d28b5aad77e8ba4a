"""What the model server's client is set with, and the one owner of each of those settings'
defaults: `cockpit.settings` takes its ``[agent]`` defaults from here. Kept apart from the
client (`agent.ollama_backend`), so that reading the settings never imports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OllamaOptions:
    """The ``[agent]`` settings the backend needs, as plain values, with their defaults."""

    host: str = ""  # "" = the OLLAMA_HOST environment variable, else DEFAULT_HOST
    model: str = "qwen2.5-coder:7b"
    temperature: float = 0.7
    num_ctx: int = 16384
    seed: int = 0  # 0 = unseeded
    timeout_seconds: float = 300.0
    unload_before_training: bool = True
    retry_seconds: float = 60.0
    on_cpu: bool = False  # keep the model off the GPUs (num_gpu = 0)

"""The settings' typed model: one section per ``[section]`` of config.toml, one field per
setting, each with its default, its description and what values it allows.

Reading them (files, environment, flags) and explaining what is wrong with a value is
`cockpit.config`'s; this module only says what the settings are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from agent.names import HYBRID, PROPOSERS
from agent.options import OllamaOptions
from cockpit.store.steering import AUTONOMOUS, MODES
from trainer.bounds import Bounds
from trainer.options import HarnessOptions

# Name under which the per-user cache directory is created.
_APP_NAME = "research-cockpit"

# strict: a quoted "20" in a file must be an error, not silently become 20 (pydantic's
# strict mode still accepts an int for a float field, so `budget_seconds = 20` works).
# frozen: settings are read once and shared; nobody should mutate them behind our back.
_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)


# The [trainer] settings take their defaults from the harness's own options and bounds, so
# that `python -m trainer` alone and `cockpit train` train alike by default.
_HARNESS = HarnessOptions(script=Path("train.py"))
_BOUNDS = Bounds()


class TrainerSettings(BaseModel):
    """The ``[trainer]`` section: how one training run is executed."""

    model_config = _MODEL_CONFIG

    script: str = Field(
        default="train.py",
        min_length=1,
        description="The training script the agent edits, relative to the workspace.",
        json_schema_extra={"allowed": "a non-empty path relative to the workspace"},
    )
    command: str = Field(
        default="",
        description=(
            "Script mode: a shell command, run in the workspace, that trains the script and "
            'prints the summary block itself (e.g. "uv run train.py" in an autoresearch '
            'checkout); "" = the built-in harness. Its metric is self-reported.'
        ),
        json_schema_extra={"allowed": 'a shell command, or "" for the built-in harness'},
    )
    metric: str = Field(
        default="val_bpb",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The summary-block figure that decides keep or discard; lower is better.",
        json_schema_extra={"allowed": "a name from the summary block, such as val_bpb"},
    )
    budget_seconds: float = Field(
        default=_HARNESS.budget_seconds,
        gt=0,
        allow_inf_nan=False,
        description="Wall-clock training budget of one run, in seconds.",
        json_schema_extra={"allowed": "a number of seconds greater than 0"},
    )
    grace_seconds: float = Field(
        default=_HARNESS.grace_seconds,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Time allowed past the budget, in seconds, before the run is stopped as a timeout."
        ),
        json_schema_extra={"allowed": "a number of seconds, 0 or more"},
    )
    device: str = Field(
        default=_HARNESS.device,
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Device to train on; auto picks cuda when it is available, else cpu.",
        json_schema_extra={"allowed": '"auto", "cpu", "cuda" or "cuda:N" (e.g. "cuda:1")'},
    )
    seed: int = Field(
        default=_HARNESS.seed,
        ge=0,
        description="Random seed of a run.",
        json_schema_extra={"allowed": "an integer, 0 or more"},
    )
    corpus: str = Field(
        default=_HARNESS.corpus,
        pattern=r"^(stdlib|text:.+|parquet:.+)$",
        description=(
            "Training corpus: stdlib (the Python standard library's sources), "
            "text:DIR (text files under DIR) or parquet:DIR (parquet files under DIR)."
        ),
        json_schema_extra={"allowed": '"stdlib", "text:DIR" or "parquet:DIR"'},
    )
    seq_len: int = Field(
        default=_HARNESS.seq_len,
        ge=0,
        description="Sequence length in tokens; 0 = automatic (256 on CPU, 2048 on CUDA).",
        json_schema_extra={"allowed": "an integer, 0 or more (0 = automatic)"},
    )
    eval_tokens: int = Field(
        default=_HARNESS.eval_tokens,
        ge=0,
        description=(
            "Validation tokens per evaluation; 0 = automatic (131072 on CPU, 4194304 on "
            "CUDA). Always capped by the size of the validation split."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = automatic)"},
    )
    threads: int = Field(
        default=_HARNESS.threads,
        ge=0,
        description="CPU threads used for training; 0 = all available cores.",
        json_schema_extra={"allowed": "an integer, 0 or more (0 = all cores)"},
    )
    require_confinement: bool = Field(
        default=False,
        description=(
            "Refuse to train where the kernel cannot take the training process off the "
            "network (a user and network namespace of its own); false = train unconfined "
            "then, and say so."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    share_compile_cache: bool = Field(
        default=_HARNESS.share_compile_cache,
        description=(
            "Let every training use one set of compiler caches (Inductor, Triton, CUDA) in the "
            "cache folder: faster on a GPU, but a channel between experiments (what one "
            "training leaves there, a later one loads). false = each training has its own, "
            "gone with it."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    memory_limit_mb: int = Field(
        default=_BOUNDS.memory_mb,
        ge=0,
        description=(
            "The most memory a training may use, in MB (all its processes, resident); past it "
            "the training ends as a crash. 0 = half of this machine's memory, leaving the rest "
            "to the engine and Ollama."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = half the machine's)"},
    )
    max_processes: int = Field(
        default=_BOUNDS.processes,
        ge=0,
        description=(
            "The most processes and threads a training may run at once; reaching it ends the "
            "training as a crash. 0 = no bound."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = no bound)"},
    )
    disk_limit_mb: int = Field(
        default=_BOUNDS.disk_mb,
        ge=0,
        description=(
            "The most a training may write into its folder, in MB (no one file larger either); "
            "reaching it ends the training as a crash. 0 = no bound."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = no bound)"},
    )
    metrics_limit_mb: int = Field(
        default=_BOUNDS.metrics_mb,
        ge=0,
        description=(
            "The most live metrics a training may write, in MB; past it the training ends as a "
            "crash. 0 = no bound."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = no bound)"},
    )
    eval_memory_mb: int = Field(
        default=_HARNESS.eval_memory_mb,
        ge=0,
        description=(
            "How much evaluating a training's exported model may grow the harness, in MB; past "
            "it the model is refused. 0 = half of this machine's memory."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = half the machine's)"},
    )


class EngineSettings(BaseModel):
    """The ``[engine]`` section: how the research loop proposes, trains and decides."""

    model_config = _MODEL_CONFIG

    mode: str = Field(
        default=AUTONOMOUS,
        pattern=rf"^({'|'.join(MODES)})$",
        description=(
            "autonomous: every proposal is trained; supervised: each proposal waits for the "
            "researcher to approve or veto it."
        ),
        json_schema_extra={"allowed": " or ".join(f'"{mode}"' for mode in MODES)},
    )
    proposer: str = Field(
        default=HYBRID,
        pattern=rf"^({'|'.join(PROPOSERS)})$",
        description=(
            "Who proposes experiments: hybrid (the [agent] model changes the code while Optuna "
            "tunes the numbers, each getting more experiments while it finds keeps), llm (the "
            "model alone), optuna (the optimiser alone, over the [search] space; needs no "
            "model) or builtin (nudges one CAPS constant at a time; needs nothing). While "
            "Ollama cannot answer, the optimiser proposes."
        ),
        json_schema_extra={
            "allowed": ", ".join(f'"{name}"' for name in PROPOSERS[:-1]) + f' or "{PROPOSERS[-1]}"'
        },
    )
    experiments: int = Field(
        default=0,
        ge=0,
        description="Experiments to run after the baseline; 0 = until stopped.",
        json_schema_extra={"allowed": "an integer, 0 or more (0 = until stopped)"},
    )
    keep_margin_bpb: float = Field(
        default=0.001,
        ge=0,
        allow_inf_nan=False,
        description=(
            "An experiment is kept when its val_bpb beats the best by more than this; within "
            "it, the one with fewer lines of code wins."
        ),
        json_schema_extra={"allowed": "a number, 0 or more"},
    )
    noise_runs: int = Field(
        default=2,
        ge=1,
        description=(
            "Trainings of the baseline at the start of a run, each with its own seed, that "
            "measure the run-to-run spread of val_bpb; 1 turns the noise floor off."
        ),
        json_schema_extra={"allowed": "an integer, 1 or more (1 = off)"},
    )
    noise_multiple: float = Field(
        default=2.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "The keep margin is this many times the measured spread (its standard deviation), "
            "never less than keep_margin_bpb."
        ),
        json_schema_extra={"allowed": "a number, 0 or more"},
    )
    keep_runs: int = Field(
        default=2,
        ge=1,
        description=(
            "Trainings, each with its own seed, an experiment needs before it is kept and "
            "becomes the best (whose value is their mean): one lucky training never sets the "
            "value every later experiment is judged against; 1 = keep on a single training."
        ),
        json_schema_extra={"allowed": "an integer, 1 or more"},
    )
    max_runs: int = Field(
        default=4,
        ge=1,
        description=(
            "Trainings an experiment gets at most: one whose gain falls short of a keep by "
            "less than the standard error of the difference is trained again, up to this many "
            "(1: never)."
        ),
        json_schema_extra={"allowed": "an integer, 1 or more"},
    )
    short_reruns: int = Field(
        default=0,
        ge=0,
        description=(
            "Trainings an experiment may have again on the same seed because one ran short of "
            "its step plan (under 98 % of its steps: the machine slowed down after the plan "
            "was made, and its schedule was cut off); each reruns on the plan cut to what "
            "fitted, and the short one is set aside. 0 = decide on it as it is (measured on a "
            "shared CPU host, a rerun cost a training and scored no closer to the truth)."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = never rerun)"},
    )
    verify_seeds: int = Field(
        default=3,
        ge=0,
        description=(
            "At the end of a run that finished, its best is trained again this many times on "
            "seeds no experiment used (`cockpit verify`): the verified best and gain show what "
            "its script is worth beside the ledger's luckiest draw; 0 = skip."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = skip)"},
    )
    verify_baseline: bool = Field(
        default=True,
        description=(
            "A verification trains the run's baseline beside its best on each fresh seed, so "
            "that the verified gain is taken between two trainings of one seed at the same "
            "hour: a machine slower or faster than during the run moves both. It doubles a "
            "verification's trainings; false trains the best only, and the verified gain is "
            "the ledger's baseline less the verified best."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    confirm_multiple: float = Field(
        default=2.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "An experiment that would be kept with a gain under this many margins is trained "
            "again with another seed, and decided on the mean of both runs; 0 = never."
        ),
        json_schema_extra={"allowed": "a number, 0 or more (0 = never confirm)"},
    )
    test_split_summary: bool = Field(
        default=True,
        description=(
            "At the end of a run, score the baseline and the kept experiments on the test "
            "split (read by no decision) and say the validation gain against the test gain."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    early_abort: bool = Field(
        default=True,
        description=(
            "Stop a training whose loss trails the best run's at the same point of the budget "
            "by more than the early-abort margin, and record it as discarded early."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    early_abort_after: float = Field(
        default=0.3,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="The share of the budget before which no training is stopped early.",
        json_schema_extra={"allowed": "a number greater than 0, at most 1"},
    )
    early_abort_margin: float = Field(
        default=0.02,
        gt=0,
        allow_inf_nan=False,
        description=(
            "The least relative loss gap (0.02 = 2 % higher than the best run's) that stops a "
            "training; once three keeps are recorded, the widest gap a keep showed (plus 0.01) "
            "raises it."
        ),
        json_schema_extra={"allowed": "a number greater than 0"},
    )
    fix_attempts: int = Field(
        default=1,
        ge=0,
        description="How many times a crashed experiment is handed back to the proposer to fix.",
        json_schema_extra={"allowed": "an integer, 0 or more"},
    )
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description=(
            "Trainings run side by side, each on its own device and git worktree: auto = one "
            "per visible GPU (one on a machine without a GPU), or a number (1 or more)."
        ),
        json_schema_extra={"allowed": '"auto" or an integer, 1 or more'},
    )
    sample_seconds: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds between GPU and process readings during training.",
        json_schema_extra={"allowed": "a number greater than 0"},
    )


# The model server's settings take their defaults from the client's own options.
_OLLAMA = OllamaOptions()


class AgentSettings(BaseModel):
    """The ``[agent]`` section: the local LLM, served by Ollama, that proposes edits."""

    model_config = _MODEL_CONFIG

    host: str = Field(
        default=_OLLAMA.host,
        description=(
            'Ollama server address; "" = the OLLAMA_HOST environment variable, else '
            "http://127.0.0.1:11434."
        ),
        json_schema_extra={"allowed": 'a URL such as "http://127.0.0.1:11434", or ""'},
    )
    model: str = Field(
        default=_OLLAMA.model,
        min_length=1,
        description="The Ollama model that proposes edits (pull it first: ollama pull NAME).",
        json_schema_extra={"allowed": "a model name as `ollama list` shows it"},
    )
    temperature: float = Field(
        default=_OLLAMA.temperature,
        ge=0,
        le=2,
        allow_inf_nan=False,
        description="Sampling temperature of the model.",
        json_schema_extra={"allowed": "a number from 0 to 2"},
    )
    num_ctx: int = Field(
        default=_OLLAMA.num_ctx,
        ge=2048,
        description="The model's context window in tokens; the prompt is trimmed to fit it.",
        json_schema_extra={"allowed": "an integer, 2048 or more"},
    )
    seed: int = Field(
        default=_OLLAMA.seed,
        ge=0,
        description="Sampling seed of the model; 0 = a different one every call.",
        json_schema_extra={"allowed": "an integer, 0 or more (0 = unseeded)"},
    )
    timeout_seconds: float = Field(
        default=_OLLAMA.timeout_seconds,
        gt=0,
        allow_inf_nan=False,
        description="Longest wait for one reply of the model, in seconds.",
        json_schema_extra={"allowed": "a number greater than 0"},
    )
    attempts: int = Field(
        default=3,
        ge=1,
        description=(
            "Replies asked for one proposal: a rejected edit goes back to the model with the "
            "reason, at most this many times in all."
        ),
        json_schema_extra={"allowed": "an integer, 1 or more"},
    )
    unload_before_training: bool = Field(
        default=_OLLAMA.unload_before_training,
        description=(
            "Unload the model from the GPU (keep_alive=0) before each training on a GPU, so "
            "the two do not fight over its memory. With several workers the model stays "
            "loaded: see reserved_gpus and on_cpu."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    reserved_gpus: list[str] = Field(
        default=[],
        description=(
            "GPUs no worker trains on, as CUDA_VISIBLE_DEVICES names them: the ones Ollama was "
            'started on (e.g. `CUDA_VISIBLE_DEVICES=3 ollama serve` and reserved_gpus = ["3"]).'
        ),
        json_schema_extra={"allowed": 'a list of GPU numbers as strings, e.g. ["3"]'},
    )
    on_cpu: bool = Field(
        default=_OLLAMA.on_cpu,
        description=(
            "Ask Ollama to keep the model off the GPUs (num_gpu = 0): every GPU trains, and "
            "the model answers from main memory, several times slower."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    retry_seconds: float = Field(
        default=_OLLAMA.retry_seconds,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Longest wait between tries to reach Ollama again while the optimiser "
            "stands in; waits double from 2 s up to this."
        ),
        json_schema_extra={"allowed": "a number greater than 0"},
    )


class SearchSettings(BaseModel):
    """The ``[search]`` section: the optimiser, its space, and how the hybrid shares out."""

    model_config = _MODEL_CONFIG

    sampler: str = Field(
        default="tpe",
        pattern=r"^(tpe|cmaes)$",
        description=(
            "The optimiser's sampler: tpe (Optuna's tree-structured Parzen estimator, "
            "multivariate) or cmaes (CMA-ES, centred on the baseline's values)."
        ),
        json_schema_extra={"allowed": '"tpe" or "cmaes"'},
    )
    startup_trials: int = Field(
        default=1,
        ge=1,
        description=(
            "Trials of a script's structure (its best included) before TPE models them; "
            "until then points are drawn at random."
        ),
        json_schema_extra={"allowed": "an integer, 1 or more"},
    )
    constants_per_point: int = Field(
        default=3,
        ge=0,
        description=(
            "How many constants one TPE point changes, chosen at random, the others kept at "
            "the best's values (0 = all): few at a time, so that a point is seldom worse in "
            "everything at once."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = all)"},
    )
    plateau: int = Field(
        default=8,
        ge=0,
        description=(
            "After this many experiments without a keep the proposers widen: the model is "
            "asked for a different direction, the optimiser draws every other point at random "
            "(0 = never)."
        ),
        json_schema_extra={"allowed": "an integer, 0 or more (0 = never)"},
    )
    floor: float = Field(
        default=0.2,
        ge=0,
        le=0.5,
        allow_inf_nan=False,
        description="The hybrid's least share of the experiments for the model and for the optimiser.",
        json_schema_extra={"allowed": "a number from 0 to 0.5"},
    )
    window: int = Field(
        default=12,
        ge=1,
        description="The latest experiments of each that the hybrid's shares are measured on.",
        json_schema_extra={"allowed": "an integer, 1 or more"},
    )
    space: dict[str, str | dict[str, bool | int | float | str]] = Field(
        default={},
        description=(
            "Ranges of the constants the optimiser tunes: NAME = { low = 1e-4, high = 1e-2, log "
            '= true, type = "int" | "float" | "pow2" }, or NAME = "pinned" to leave it alone; '
            "a fenced search block in program.md wins over this. Unnamed constants get "
            "ranges inferred from their values."
        ),
        json_schema_extra={"allowed": 'a table of NAME = { low, high, log, type } or "pinned"'},
    )


class UISettings(BaseModel):
    """The ``[ui]`` section: the terminal cockpit."""

    model_config = _MODEL_CONFIG

    theme: str = Field(
        default="midnight",
        min_length=1,
        description=(
            "Colour theme: midnight, daylight or contrast (high contrast); `t` in the "
            "cockpit cycles them and the choice is remembered."
        ),
        json_schema_extra={"allowed": '"midnight", "daylight" or "contrast"'},
    )


# What [notify] can tell; `cockpit.engine.notify` sends these kinds.
NotifyEvent = Literal["new_best", "crash_streak", "engine_stopped", "agent_lost"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)


class NotifySettings(BaseModel):
    """The ``[notify]`` section: notices sent while a run goes on (off by default)."""

    model_config = _MODEL_CONFIG

    urls: list[Annotated[str, Field(min_length=1)]] = Field(
        default=[],
        description=(
            "Apprise URLs that receive the notices: ntfy://HOST/TOPIC, mailto://..., "
            "json://HOST:PORT/PATH, chat webhooks; [] = none (needs the notify extra)."
        ),
        json_schema_extra={
            "allowed": 'an array of apprise URLs (e.g. ["ntfy://192.168.1.5/cockpit"])'
        },
    )
    command: str = Field(
        default="",
        description=(
            "A shell command run for each notice, with COCKPIT_NOTIFY_KIND, "
            'COCKPIT_NOTIFY_TITLE and COCKPIT_NOTIFY_BODY in its environment; "" = none.'
        ),
        json_schema_extra={"allowed": 'a shell command, or "" for none'},
    )
    events: list[NotifyEvent] = Field(
        default=list(NOTIFY_EVENTS),
        description=(
            "What is notified: new_best (a keep that beats the best), crash_streak, "
            "engine_stopped, agent_lost (Ollama stopped answering)."
        ),
        json_schema_extra={
            "allowed": "an array of event names from "
            + ", ".join(f'"{name}"' for name in NOTIFY_EVENTS)
        },
    )
    crash_streak: int = Field(
        default=3,
        ge=1,
        description="Crashes (or timeouts) in a row that make a crash_streak notice.",
        json_schema_extra={"allowed": "an integer, 1 or more"},
    )
    min_interval_seconds: float = Field(
        default=300.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Least time between two notices of one kind, in seconds; the ones held back are "
            "counted in the next notice of that kind."
        ),
        json_schema_extra={"allowed": "a number of seconds, 0 or more"},
    )

    @property
    def enabled(self) -> bool:
        """Whether notices go anywhere: off while both ``urls`` and ``command`` are empty."""
        return bool(self.urls or self.command)


class PathsSettings(BaseModel):
    """The ``[paths]`` section: where the cockpit keeps its files."""

    model_config = _MODEL_CONFIG

    cache_dir: str = Field(
        default="",
        description='Directory where encoded corpora are kept; "" = the user cache directory.',
        json_schema_extra={"allowed": 'a directory path, or "" for the user cache directory'},
    )

    def resolved_cache_dir(self) -> Path:
        """Return ``cache_dir`` as a path: ``~`` expanded, ``""`` = the user cache directory."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        # Imported here so that merely reading settings does not need platformdirs.
        import platformdirs

        return platformdirs.user_cache_path(_APP_NAME)


class ExecutorSettings(BaseModel):
    """The ``[executor]`` section: where trainings run (this machine, or a cluster)."""

    model_config = _MODEL_CONFIG

    kind: str = Field(
        default="local",
        pattern=r"^(local|slurm|ray)$",
        description=(
            "local: trainings are processes on this machine; slurm: each training is a SLURM "
            "job, submitted through submitit (the workspace must be on storage the nodes "
            "share); ray: each training runs on a Ray cluster, one GPU each."
        ),
        json_schema_extra={"allowed": '"local", "slurm" or "ray"'},
    )
    partition: str = Field(
        default="",
        description='The SLURM partition of the jobs; "" = the cluster\'s default.',
        json_schema_extra={"allowed": 'a partition name, or ""'},
    )
    gpus_per_job: int = Field(
        default=1,
        ge=0,
        description="GPUs each SLURM job asks for (0 on nodes without GPUs).",
        json_schema_extra={"allowed": "an integer, 0 or more"},
    )
    cpus_per_job: int = Field(
        default=0,
        ge=0,
        description="Cores each SLURM job or Ray training asks for; 0 = one.",
        json_schema_extra={"allowed": "an integer, 0 or more"},
    )
    slurm_local: bool = Field(
        default=False,
        description=(
            "Run the SLURM path through submitit's local executor, on this machine: to try "
            "the setup out before a cluster is at hand."
        ),
        json_schema_extra={"allowed": "true or false"},
    )
    ray_address: str = Field(
        default="",
        description=(
            'The Ray cluster: "" = start one on this machine, "auto" = the cluster this '
            'machine belongs to, or an address such as "ray://head:10001".'
        ),
        json_schema_extra={"allowed": 'an address, "auto" or ""'},
    )


class Settings(BaseModel):
    """All settings, one attribute per ``[section]`` of config.toml."""

    model_config = _MODEL_CONFIG

    trainer: TrainerSettings = Field(
        default_factory=TrainerSettings, description="How one training run is executed."
    )
    engine: EngineSettings = Field(
        default_factory=EngineSettings, description="How the research loop runs."
    )
    agent: AgentSettings = Field(
        default_factory=AgentSettings, description="The local LLM that proposes edits."
    )
    search: SearchSettings = Field(
        default_factory=SearchSettings, description="The optimiser and the hybrid's shares."
    )
    ui: UISettings = Field(default_factory=UISettings, description="The terminal cockpit.")
    paths: PathsSettings = Field(
        default_factory=PathsSettings, description="Where the cockpit keeps its files."
    )
    notify: NotifySettings = Field(
        default_factory=NotifySettings, description="Notices sent while a run goes on."
    )
    executor: ExecutorSettings = Field(
        default_factory=ExecutorSettings, description="Where trainings run."
    )


# --------------------------------------------------------------------------------------
# Where the shipped defaults live

"""Helpers the end-to-end tests share: real workspaces, the real `cockpit` command in its
own processes, the journal read back, and replies of the Ollama test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.proposal import Proposal, ProposalContext
from cockpit.bench.ui_bench import fill_journal
from cockpit.engine.workspace import Workspace
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment
from cockpit.views.readmodel import journal_file
from tests.conftest import REPO, SCRIPTS, write_text_corpus
from tests.ollama_server import Reply

# tiny_research.py with a step plan, as the template makes one: its trainings share plans.
PLANNED_RESEARCH = (
    (SCRIPTS / "tiny_research.py")
    .read_text()
    .replace(
        "    step = 0\n    while ctx.time_left() > 0:\n",
        "    step, planned = 0, None\n"
        "    while ctx.time_left() > 0 and (planned is None or step < planned):\n",
    )
    .replace(
        "        step += 1\n",
        "        step += 1\n"
        "        if planned is None and step == 20:\n"
        "            planned = ctx.plan_steps(step, (ctx.budget_seconds - ctx.time_left()) / step)\n",
    )
)


# What the workspaces of the tests train for, unless a test asks for longer.
BUDGET_SECONDS = 1.0


def make_workspace(
    root: Path, script: Path = SCRIPTS / "tiny_research.py", budget: float = BUDGET_SECONDS
) -> Workspace:
    workspace = Workspace.init(root, script_source=script)
    corpus = write_text_corpus(root.parent / f"{root.name}-corpus", documents=30, lines=30)
    (root / "config.toml").write_text(
        "[trainer]\n"
        f'corpus = "text:{corpus}"\n'
        f"budget_seconds = {budget:g}\n"
        "grace_seconds = 2.0\n"
        "seq_len = 64\n"
        "eval_tokens = 4096\n"
        'device = "cpu"\n'
        "[engine]\n"
        "sample_seconds = 0.2\n"
        # The LLM proposer has tests of its own, against the Ollama test server.
        'proposer = "builtin"\n'
        # One training per experiment keeps these tests short; the noise floor and the
        # confirmation runs have tests of their own.
        "noise_runs = 1\n"
        "keep_runs = 1\n"
        # Verifying the best at the end has tests of its own (tests/test_verify.py).
        "verify_seeds = 0\n"
        "confirm_multiple = 0\n"
        # Early abort has tests of its own; here every training runs its budget.
        "early_abort = false\n"
        # Scoring the keeps on the test split at the end has tests of its own.
        "test_split_summary = false\n"
    )
    # The settings file is the workspace's own business: commit it so train.py stays the only
    # thing the engine looks at.
    subprocess.run(
        ["git", "-C", str(root), "commit", "-qam", "test settings"], check=True, env=git_env()
    )
    return workspace


def git_env() -> dict[str, str]:
    return {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip


def cockpit(
    *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m cockpit ARGS`` in the checkout; ``env``: variables added to this one's."""
    return subprocess.run(
        [sys.executable, "-m", "cockpit", *args],
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cockpit", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextmanager
def ended(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The process, killed and reaped on the way out if it is still running (a test that
    failed half way leaves nothing behind)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def git(workspace: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(workspace), *args], capture_output=True, text=True, check=True
    ).stdout


def wait_for(
    condition: Callable[[], object], timeout: float = 60, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def state(workspace: Path, key: str) -> object:
    path = workspace / ".cockpit" / "journal.db"
    if not path.exists():
        return None
    try:
        with Journal.open(path, readonly=True) as journal:
            return journal.get_state(key)
    except Exception:
        return None


def trained_side_by_side(records: list[Experiment]) -> bool:
    """Whether two of these experiments trained at the same time (journal timestamps)."""
    spans = [(e.started_at, e.ended_at) for e in records if e.started_at and e.ended_at]
    return any(
        max(a[0], b[0]) < min(a[1], b[1])
        for position, a in enumerate(spans)
        for b in spans[position + 1 :]
    )


def experiments(workspace: Path) -> list:
    with Journal.open(workspace / ".cockpit" / "journal.db", readonly=True) as journal:
        run = journal.latest_run()
        assert run is not None
        return journal.experiments(run.id)


def edit(description: str, search: str, replace: str, hypothesis: str = "it should help") -> Reply:
    return Reply(
        json.dumps(
            {
                "description": description,
                "hypothesis": hypothesis,
                "edits": [{"search": search, "replace": replace}],
            }
        )
    )


# Four valid edits of tests/scripts/tiny_research.py, each on a line of its own, so each
# applies whichever of the others were kept.
VALID = [
    edit("halve the learning rate", "LEARNING_RATE = 0.1", "LEARNING_RATE = 0.05"),
    edit("double the batch", "BATCH_SIZE = 16", "BATCH_SIZE = 32"),
    edit("faster second moment", "BETA2 = 0.99", "BETA2 = 0.95"),
    edit(
        "small random init",
        "nn.init.zeros_(self.table.weight)",
        "nn.init.normal_(self.table.weight, std=0.01)",
    ),
]


def run_llm(root: Path, experiments: int, budget: float = BUDGET_SECONDS) -> str:
    """`cockpit run` of the LLM proposer in the foreground (1 s trainings unless told);
    its output, once it has ended well."""
    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", str(experiments),
        "--budget", str(budget), "--proposer", "llm",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def spawn_supervised_llm(root: Path, experiments: int) -> subprocess.Popen[str]:
    """`cockpit run` of the LLM proposer in supervised mode (1 s trainings), started in
    the background: each proposal waits for approval, and its state can be read at rest."""
    return spawn(
        "run", "--headless", "--workspace", str(root), "--experiments", str(experiments),
        "--budget", f"{BUDGET_SECONDS:g}", "--proposer", "llm", "--mode", "supervised",
    )  # fmt: skip


def agent_config(root: Path, *lines: str) -> None:
    """Add settings to the workspace's config.toml (the engine reads it at start)."""
    config = root / "config.toml"
    config.write_text(config.read_text() + "\n".join(lines) + "\n")


def agent_events(root: Path) -> list:
    with Journal.open(root / ".cockpit" / "journal.db", readonly=True) as journal:
        run = journal.latest_run()
        assert run is not None
        return journal.events(run.id, kinds=["agent"])


# What the agent records of six unusable replies that echo the prompt's example (the
# `agent_replies` state, see agent.replies.ReplyLog.summary).
ECHOED_REPLIES = {
    "count": 6,
    "reason": "echo",
    "reason_text": "they repeat the prompt's example",
    "by_reason": {"echo": 6},
    "repeated": 5,
    "message": "the last 6 replies were unusable: they repeat the prompt's example",
    "advice": "the model seems too small or not instruction-tuned for this task",
}


def workspace_with_state(root: Path, **state: object) -> Path:
    """A workspace whose journal holds a stopped run of four experiments (its agent's state
    as ``fill_journal`` writes it: the LLM with qwen2.5-coder:7b), then ``state``."""
    Workspace.init(root)
    with Journal.open(journal_file(root)) as journal:
        fill_journal(journal, experiments=4, phase="stopped", samples=0)
        journal.set_state(**state)
    return root


def slow_script(tmp_path: Path) -> Path:
    """The tiny script with a learning rate too low, and two constants that each raise it."""
    slow = tmp_path / "slow.py"
    slow.write_text(
        (SCRIPTS / "tiny_research.py")
        .read_text()
        .replace(
            "LEARNING_RATE = 0.1  # AdamW learning rate", "LEARNING_RATE = 0.001\nLR_BOOST = 1.0"
        )
        .replace("lr=LEARNING_RATE,", "lr=LEARNING_RATE * LR_BOOST,")
    )
    assert "LEARNING_RATE * LR_BOOST" in slow.read_text()
    return slow


class Scripted:
    """Proposes the given edits of the best script, in order (a stand-in for the model)."""

    name = "scripted"

    def __init__(self, edits: list[tuple[str, str, str]]) -> None:
        self.edits = list(edits)

    def propose(self, context: ProposalContext) -> Proposal:
        from agent.proposal import NoProposal

        if not self.edits:
            raise NoProposal("no more edits")
        description, search, replace = self.edits.pop(0)
        assert search in context.best_script, (search, context.best_script)
        return Proposal(
            description, "it should help", context.best_script.replace(search, replace), "scripted"
        )

"""The hybrid: the LLM for structure, the optimiser for numbers, shared by their recent keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.fallback import FallbackProposer
from agent.hybrid import Bandit, HybridProposer, apply_floor
from agent.llm import LLMProposer
from agent.ollama_backend import OllamaBackend
from agent.optimiser import OptunaProposer
from agent.options import OllamaOptions
from agent.proposal import (
    AgentEvent,
    LedgerEntry,
    NoProposal,
    Proposal,
    ProposalContext,
    TrialRecord,
)
from tests.conftest import REPO
from tests.helpers import (
    VALID,
    agent_config,
    agent_events,
    cockpit,
    edit,
    experiments,
    make_workspace,
)
from tests.ollama_server import EchoExample, OllamaDouble

pytestmark = pytest.mark.usefixtures("no_git_identity")

SCRIPT = (REPO / "trainer" / "train.py").read_text()
PROGRAM = (REPO / "cockpit" / "template" / "program.md").read_text()


def entries(proposer: str, statuses: str, gain: float = 0.01) -> list[LedgerEntry]:
    """Ledger entries of one proposer: k = keep (gaining ``gain``), d = discard, c = crash."""
    names = {"k": "keep", "d": "discard", "c": "crash"}
    return [
        LedgerEntry(n, "x", names[s], 1.0, -gain if s == "k" else 0.01, proposer)
        for n, s in enumerate(statuses)
    ]


# --- the bandit --------------------------------------------------------------------------


def test_with_nothing_known_the_arms_share_equally() -> None:
    assert Bandit().split([]) == {"llm": 0.5, "optuna": 0.5}


def test_the_arm_that_keeps_more_gets_more() -> None:
    ledger = entries("llm", "dddddd") + entries("optuna", "kdkdkd")
    split = Bandit(floor=0.1).split(ledger)
    assert split["optuna"] > 0.8 and split["llm"] >= 0.1
    assert sum(split.values()) == pytest.approx(1.0)


def test_gains_count_not_only_keeps() -> None:
    # One keep each in six, but the LLM's gained ten times as much.
    ledger = entries("llm", "kddddd", gain=0.05) + entries("optuna", "kddddd", gain=0.005)
    split = Bandit(floor=0.0).split(ledger)
    assert split["llm"] > 0.75


def test_the_floor_holds_for_an_arm_that_never_keeps() -> None:
    ledger = entries("llm", "d" * 12) + entries("optuna", "k" * 12)
    split = Bandit(floor=0.2).split(ledger)
    assert split == pytest.approx({"llm": 0.2, "optuna": 0.8})
    assert Bandit(floor=0.0).split(ledger)["llm"] < 0.05


def test_only_the_latest_window_counts() -> None:
    # The LLM kept a lot long ago, nothing in its latest 4.
    ledger = entries("llm", "kkkkkk" + "dddd") + entries("optuna", "dkdd")
    split = Bandit(floor=0.0, window=4).split(ledger)
    assert split["optuna"] > split["llm"]
    assert Bandit(floor=0.0, window=10).split(ledger)["llm"] > 0.5


def test_the_builtin_nudger_counts_as_the_optimiser_and_the_baseline_as_neither() -> None:
    ledger = [LedgerEntry(0, "baseline", "keep", 1.0, None, "baseline"), *entries("builtin", "kk")]
    scores = Bandit().scores(ledger)
    assert scores["optuna"] > scores["llm"] == pytest.approx(0.001 / 2)


def test_floors_of_three_arms() -> None:
    shares = apply_floor({"a": 10.0, "b": 0.0, "c": 0.0}, 0.25)
    assert shares == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})
    with pytest.raises(ValueError, match="more than everything"):
        Bandit(("a", "b", "c"), floor=0.4)


def test_an_arm_that_fails_to_propose_is_scored_on_its_misses() -> None:
    ledger = entries("optuna", "d" * 12)
    assert Bandit().split(ledger)["llm"] > 0.5  # never tried: the benefit of the doubt
    missed = {"llm": list(range(1, 9))}  # eight proposals asked of the model, none made
    assert Bandit().split(ledger, missed)["llm"] < 0.5
    # A model that makes its proposals keeps its share, whatever its misses long ago.
    made = entries("llm", "d" * 12)
    assert Bandit().split(made + ledger, {"llm": [0, 0]}) == Bandit().split(made + ledger)


# --- the hybrid --------------------------------------------------------------------------


class Named:
    """A proposer that answers with its name (the arms' turns are what is tested here)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.contexts: list[ProposalContext] = []

    def propose(self, context: ProposalContext) -> Proposal:
        self.contexts.append(context)
        return Proposal(self.name, "", context.best_script, self.name)


def test_proposals_follow_the_split_in_turn() -> None:
    llm, optimiser = Named("llm"), Named("optuna")
    events: list[AgentEvent] = []
    hybrid = HybridProposer(llm, optimiser, OptunaProposer().space, on_event=events.append)
    ledger = entries("llm", "d" * 12) + entries("optuna", "k" * 12)  # 20% / 80%
    context = ProposalContext(best_script=SCRIPT, ledger=ledger)
    made = [hybrid.propose(context).proposer for _ in range(10)]
    assert made.count("llm") == 2 and made.count("optuna") == 8
    assert [n for n, arm in enumerate(made) if arm == "llm"] == [2, 7]  # spread out
    splits = [e for e in events if e.kind == "split"]
    assert len(splits) == 1  # said when it changes only
    assert splits[0].details["split"] == {"llm": 0.2, "optuna": 0.8}
    asked = [e.details["proposer"] for e in events if e.kind == "asking"]
    assert asked == made


def test_the_llm_is_told_what_the_optimiser_tunes_and_fixes_crashes() -> None:
    from agent.proposal import CrashReport

    llm, optimiser = Named("llm"), Named("optuna")
    hybrid = HybridProposer(llm, optimiser, OptunaProposer().space)
    trial = TrialRecord(0, SCRIPT, "keep", 2.0)
    context = ProposalContext(best_script=SCRIPT, trials=(trial,))
    hybrid.propose(context)  # the optimiser's turn first
    hybrid.propose(context)
    told = llm.contexts[-1]
    assert {"LEARNING_RATE", "WIDTH"} <= told.tuned and "REPORT_EVERY" not in told.tuned
    assert len(told.tuned_structures) == 1
    fix = CrashReport(3, "x", SCRIPT, "crash", "Traceback")
    assert hybrid.propose(ProposalContext(best_script=SCRIPT, fix=fix)).proposer == "llm"


def test_a_model_that_gives_nothing_loses_its_share_and_its_record_stays(
    ollama_server: OllamaDouble,
) -> None:
    ollama_server.models.append("gemma3:270m")
    ollama_server.default_reply = EchoExample(quoted=True)
    backend = OllamaBackend(
        OllamaOptions(host=ollama_server.host, model="gemma3:270m", timeout_seconds=5.0)
    )
    optimiser = Named("optuna")
    hybrid = HybridProposer(
        LLMProposer(backend, attempts=1), optimiser, OptunaProposer().space, bandit=Bandit()
    )
    events: list[AgentEvent] = []
    chooser = FallbackProposer(hybrid, optimiser, backend, on_event=events.append)
    ledger: list[LedgerEntry] = []
    asked_before_pause = 0
    for number in range(1, 9):
        context = ProposalContext(best_script=SCRIPT, program=PROGRAM, ledger=tuple(ledger))
        asked = len(ollama_server.requests_to("/api/chat"))
        proposal = chooser.propose(context)
        assert proposal.proposer == "optuna"  # the model never made one
        ledger.append(LedgerEntry(number, "x", "discard", 1.0, 0.01, proposal.proposer))
        if len(ollama_server.requests_to("/api/chat")) == asked and ledger[1:]:
            # The optimiser's own turn: the model's record is neither cleared nor hidden.
            assert chooser.status()["agent_replies"] is not None
        if not any(event.kind == "paused" for event in events):
            asked_before_pause = len(ollama_server.requests_to("/api/chat"))
    backend.close()
    assert asked_before_pause == 2  # the third failed proposal paused the model
    assert [e for e in events if e.kind == "paused"]


def test_the_share_of_a_model_that_gives_nothing_falls(ollama_server: OllamaDouble) -> None:
    ollama_server.models.append("gemma3:270m")
    ollama_server.default_reply = EchoExample(quoted=True)
    backend = OllamaBackend(
        OllamaOptions(host=ollama_server.host, model="gemma3:270m", timeout_seconds=5.0)
    )
    hybrid = HybridProposer(
        LLMProposer(backend, attempts=1), Named("optuna"), OptunaProposer().space
    )
    ledger: list[LedgerEntry] = []
    shares: list[float] = []
    for number in range(1, 25):
        context = ProposalContext(best_script=SCRIPT, program=PROGRAM, ledger=tuple(ledger))
        try:
            proposer = hybrid.propose(context).proposer
        except NoProposal:
            proposer = "optuna"  # the optimiser stands in, as the fallback has it
        ledger.append(LedgerEntry(number, "x", "discard", 1.0, 0.01, proposer))
        assert hybrid.latest_split is not None
        shares.append(hybrid.latest_split["llm"])
    backend.close()
    # Once the arms' windows fill, the silent model's share falls, where it used to rise.
    assert max(shares[13:]) < 0.5 and shares[-1] < 0.4


def test_the_models_missed_turns_outlive_the_engine(
    tmp_path: Path, ollama_server: OllamaDouble
) -> None:
    # The hybrid of a real agent, recording into a real journal: the model only echoes.
    from cockpit.config import load_settings
    from cockpit.engine.agents import build_agent
    from cockpit.store.journal import Journal

    ollama_server.models.append("gemma3:270m")
    ollama_server.default_reply = EchoExample(quoted=True)
    settings = load_settings(
        tmp_path,
        overrides={
            "engine.proposer": "hybrid",
            "agent.host": ollama_server.host,
            "agent.model": "gemma3:270m",
            "agent.attempts": 1,
        },
        environ={},
    )
    ledger: list[LedgerEntry] = []
    with Journal.open(tmp_path / "journal.db") as journal:
        run = journal.create_run("t", "cockpit/t", "0" * 40, "autonomous", "hybrid", {}, "fp")
        first = build_agent(settings)
        first.attach(journal, run.id)
        assert first.hybrid is not None
        for number in range(1, 9):
            context = ProposalContext(best_script=SCRIPT, program=PROGRAM, ledger=tuple(ledger))
            try:
                proposer = first.hybrid.propose(context).proposer
            except NoProposal:
                proposer = "optuna"  # the optimiser stands in, as the fallback has it
            ledger.append(LedgerEntry(number, "x", "discard", 1.0, 0.01, proposer))
        first.close()
        missed = first.hybrid.llm_missed
        assert len(missed) >= 3, missed
        # A new engine on the run: the same record, so the same (fallen) share of the model.
        second = build_agent(settings)
        assert second.hybrid is not None and second.hybrid.llm_missed == []
        second.attach(journal, run.id)
        second.close()
    assert second.hybrid.llm_missed == missed
    split = second.hybrid.bandit.split(ledger, {"llm": second.hybrid.llm_missed})
    assert split == first.hybrid.bandit.split(ledger, {"llm": missed})
    assert split["llm"] < Bandit().split(ledger)["llm"]


# --- the hybrid in the real loop, against the Ollama test server ---------------------------


@pytest.mark.e2e
def test_the_hybrid_shares_the_run_and_refuses_the_models_numbers_only_changes(
    tmp_path: Path, served: OllamaDouble
) -> None:
    root = tmp_path / "ws"
    make_workspace(root)
    agent_config(root, "[search]", "floor = 0.5")  # strict turns: optimiser, model, ...
    numbers_only = edit("lower the rate", "LEARNING_RATE = 0.1", "LEARNING_RATE = 0.07")
    structural = edit("first moment at 0.8", "betas=(0.9, BETA2)", "betas=(0.8, BETA2)")
    served.script(numbers_only, VALID[3], structural)
    result = cockpit(
        "run", "--headless", "--workspace", str(root), "--experiments", "4",
        "--budget", "1", "--proposer", "hybrid",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    records = experiments(root)
    assert [e.proposer for e in records[1:]] == ["optuna", "llm", "optuna", "llm"]
    assert records[2].description == "small random init"
    # The model's change of a tuned number alone went back to it, with the reason.
    rejected = [e for e in agent_events(root) if (e.data or {}).get("kind") == "numbers_only"]
    assert len(rejected) == 1, [e.message for e in agent_events(root)]
    assert "LEARNING_RATE = 0.07" in rejected[0].message
    chats = served.requests_to("/api/chat")
    assert len(chats) == 3
    retry = chats[1].body["messages"][-1]["content"]
    assert "constants the optimiser tunes" in retry
    # The prompt says which constants the optimiser tunes.
    prompt = chats[0].body["messages"][-1]["content"]
    assert "Numbers the optimiser tunes" in prompt
    # BETA2 is pinned by the template's program.md.
    assert "BATCH_SIZE, LEARNING_RATE. Leave their values" in prompt
    status = json.loads(cockpit("status", "--workspace", str(root), "--json").stdout)
    assert status["agent"]["proposer"] == "hybrid"
    with_split = [e for e in records if e.proposer in ("llm", "optuna")]
    assert len(with_split) == 4

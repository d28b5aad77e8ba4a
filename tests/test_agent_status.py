"""Who proposed what, as the read model and `cockpit status` tell it: from the experiments in
the journal, never from who proposes next; and what the model's unusable replies came to."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cockpit.bench.ui_bench import MODEL, fill_journal, stand_in_engine
from cockpit.store.journal import Journal
from cockpit.views.agent_status import ProposedBy, describe_proposers
from cockpit.views.poller import JournalPoller
from cockpit.views.readmodel import journal_file
from tests.helpers import ECHOED_REPLIES, wait_for
from tests.ollama_server import OllamaDouble, Reply


def test_the_experiment_in_flight_is_named_by_its_own_proposer_not_the_next_one(
    tmp_path: Path,
) -> None:
    with Journal.open(journal_file(tmp_path)) as journal:
        run = fill_journal(journal, experiments=6, phase="training", engine_pid=4242)
        training = journal.experiment(run.id, 7)
        assert training is not None
        # The built-in proposer made the one in training; the LLM is asked for the next one.
        journal.update_experiment(training.id, proposer="builtin", model=None)
        journal.set_state(proposer="llm", agent_replies=ECHOED_REPLIES)
        recorded = {e.number: e.proposer for e in journal.experiments(run.id)}
    stand_in_engine(tmp_path)  # an engine runs: its lock is held
    poller = JournalPoller(tmp_path)
    status = poller.poll().status
    assert status is not None
    assert status.in_flight == ProposedBy(7, "builtin", None, "training")
    assert [(p.experiment, p.proposer) for p in status.recent_proposers] == [
        (number, recorded[number]) for number in (6, 5, 4, 3, 2)
    ]
    assert status.proposer == "llm"  # the next proposal's, kept apart
    assert status.unusable_replies is not None and status.unusable_replies.count == 6
    assert status.unusable_replies.message == ECHOED_REPLIES["message"]

    # The next proposal is under way: the one being asked is named, and a poll says so.
    with Journal.open(journal_file(tmp_path)) as journal:
        journal.set_state(phase="proposing", experiment=8, asking="llm")
    status = poller.poll().status
    assert status is not None
    assert status.in_flight == ProposedBy(8, "llm", MODEL, "proposing")
    assert status.recent_proposers[0] == ProposedBy(7, "builtin", None, "training")
    with Journal.open(journal_file(tmp_path)) as journal:
        journal.set_state(asking="builtin")
    status = poller.poll().status
    assert status is not None and status.in_flight == ProposedBy(8, "builtin", None, "proposing")


def test_the_proposers_line_names_the_one_in_flight_and_those_before_it() -> None:
    recent = [ProposedBy(3, "builtin", None, "discard"), ProposedBy(2, "llm", MODEL, "keep")]
    assert (
        describe_proposers(ProposedBy(4, "builtin", None, "training"), recent)
        == "#4 built-in (in flight), #3 built-in, #2 LLM"
    )
    assert (
        describe_proposers(ProposedBy(4, "llm", MODEL, "proposing"), recent)
        == "#4 being proposed (asking the LLM proposer), #3 built-in, #2 LLM"
    )
    assert describe_proposers(None, recent) == "#3 built-in, #2 LLM"
    # Between two requests, or once the draft is done, no one is being asked.
    assert (
        describe_proposers(ProposedBy(4, None, None, "proposing"), recent)
        == "#4 being proposed, #3 built-in, #2 LLM"
    )


def test_the_next_proposer_is_not_said_to_be_asked_when_no_one_is(tmp_path: Path) -> None:
    """Proposing #8 with the ``asking`` key cleared (the draft is done, or between requests):
    who proposes next (``proposer``) is not the one being asked."""
    with Journal.open(journal_file(tmp_path)) as journal:
        fill_journal(journal, experiments=6, phase="stopped", engine_pid=4242)
        journal.set_state(phase="proposing", experiment=8, asking=None, proposer="optuna")
    stand_in_engine(tmp_path)  # an engine runs: its lock is held
    status = JournalPoller(tmp_path).poll().status
    assert status is not None
    assert status.in_flight == ProposedBy(8, None, None, "proposing")
    assert status.proposer == "optuna"


def test_while_the_model_is_asked_after_a_restart_the_journal_says_so_not_the_stand_in(
    tmp_path: Path, ollama_server: OllamaDouble
) -> None:
    """Ollama was down (the built-in proposer stood in); once it is back, the journal names
    the LLM as the one being asked while its reply streams, not the stand-in."""
    from agent.builtin import BuiltinProposer
    from agent.fallback import FallbackProposer
    from agent.llm import LLMProposer
    from agent.ollama_backend import Backoff, OllamaBackend
    from agent.options import OllamaOptions
    from agent.proposal import ProposalContext
    from cockpit.engine.agents import AgentRecorder, AgentSetup
    from tests.conftest import REPO

    script = (REPO / "tests" / "scripts" / "tiny_research.py").read_text()
    edit = {"search": "LEARNING_RATE = 0.1", "replace": "LEARNING_RATE = 0.05"}
    reply = json.dumps({"description": "halve it", "hypothesis": "h", "edits": [edit]})
    backend = OllamaBackend(OllamaOptions(host=ollama_server.host, timeout_seconds=10.0))
    recorder = AgentRecorder()
    now = [0.0]
    proposer = FallbackProposer(
        LLMProposer(backend, attempts=1, on_event=recorder),
        BuiltinProposer(seed=1),
        backend,
        backoff=Backoff(1.0, clock=lambda: now[0]),
        clock=lambda: now[0],
        on_event=recorder,
    )
    agent = AgentSetup(proposer, recorder, backend)
    context = ProposalContext(best_script=script)
    with Journal.open(journal_file(tmp_path)) as journal:
        run = journal.create_run(tag="t", branch="cockpit/t", base_commit="0" * 40, mode="autonomous",
                                 proposer="llm", config={}, corpus_fingerprint="x")  # fmt: skip
        recorder.attach(journal, run.id)
        ollama_server.stop()
        assert proposer.propose(context).proposer == "builtin"
        journal.set_state(**agent.state())
        assert journal.get_state("proposer") == "builtin"
        ollama_server.start()
        ollama_server.script(Reply(reply, chunk_size=4, chunk_delay=0.05))  # about 2 s
        now[0] += 5.0
        with ThreadPoolExecutor(1) as pool:
            proposal = pool.submit(proposer.propose, context)
            wait_for(lambda: ollama_server.requests_to("/api/chat"), 10, "the model to be asked")
            with Journal.open(journal_file(tmp_path), readonly=True) as reader:
                assert reader.get_state("asking") == "llm"
                assert reader.get_state("proposer") == "llm"  # not "builtin" for the whole reply
            assert proposal.result(timeout=30).proposer == "llm"
        journal.set_state(**agent.state())
        assert journal.get_state("asking") is None
    backend.close()

"""Asking the proposer for the next experiment: what it is told, and what it may propose.

A proposal is drafted off the engine's thread (the LLM can take a while), so that the
engine goes on following trainings meanwhile; with several workers, proposals are drafted
ahead, while workers train. The draft says which best it was made on: it is committed as a
child of that commit, whatever the best is by the time it is ready.

The proposer is told the ledger, the researcher's notes and vetoes, the proposals refused
before training, and what is being trained or waits to be right now, so that two workers
never train the same idea. A script that was already trained, or is in flight, is turned
down before it costs a training.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import names
from agent.proposal import (
    RUNNING,
    CrashReport,
    LedgerEntry,
    NoProposal,
    Proposal,
    ProposalContext,
    TrialRecord,
)
from cockpit.config import Settings
from cockpit.engine.agents import AgentSetup
from cockpit.engine.integrity import Flag, describe_flags, inspect_script
from cockpit.store.journal import Journal
from cockpit.store.records import UNFINISHED_STATUSES, Experiment, Run
from cockpit.store.steering import SUPERVISED

PROPOSAL_ATTEMPTS = 5
REFUSALS_SHOWN = 10  # the latest integrity refusals the proposer is told of
UNFINISHED = UNFINISHED_STATUSES
# Experiments that are no trial of the optimiser: never trained, or stopped by the researcher.
NOT_TRIALS = frozenset({"vetoed", "rejected", "interrupted"})
# Proposers that only change numbers: their crashes are not handed to the model to fix.
NUMBERS_ONLY = frozenset(names.NUMBERS_ONLY)


@dataclass(frozen=True)
class Draft:
    """A proposal ready to be committed: on which best it was made, and what the engine
    knows of it beyond the proposal (a fix's origin, integrity flags)."""

    proposal: Proposal
    parent_commit: str
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Basis:
    """What a draft is made from, read on the engine's thread (git is not shared)."""

    run: Run
    best_commit: str
    best_script: str
    mode: str  # supervised: a flagged proposal waits for the researcher instead of refusal
    script_at: Callable[[str], str]  # a script of the run, by commit


class Drafting:
    """Drafts proposals for one run; safe to run on a thread beside the engine."""

    def __init__(
        self,
        journal: Journal,
        settings: Settings,
        agent: AgentSetup,
        program: Path,
        say: Callable[[str], None],
        marks: list[tuple[str, float]],
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.agent = agent
        self.proposer = agent.proposer
        self.program = program
        self.say = say
        self.marks = marks
        self._scripts: dict[str, str] = {}  # scripts by commit, read once

    def draft(self, basis: Basis) -> Draft | None:
        """The next proposal, or None when the proposer has nothing left."""
        run = basis.run
        proposal: Proposal | None = None
        details: dict[str, Any] | None = None
        flags: list[Flag] = []
        fix = self._fix_proposal(basis)
        if fix is not None:
            proposal, details = fix
            flags = inspect_script(basis.best_script, proposal.script)
            if flags and basis.mode != SUPERVISED:
                self.refuse(run, proposal, flags)
                proposal, details = None, None
        if proposal is None:
            fresh = self._fresh_proposal(basis)
            if fresh is None:
                return None
            proposal, flags = fresh
        if flags:  # supervised mode: the researcher decides, with the flags in sight
            details = {
                **(details or {}),
                "flags": [
                    {"kind": flag.kind, "line": flag.line, "message": flag.message}
                    for flag in flags
                ],
            }
        return Draft(proposal, basis.best_commit, details)

    # --- what the proposer is told -------------------------------------------------------

    def context(self, basis: Basis, fix: CrashReport | None = None) -> ProposalContext:
        run, script = basis.run, basis.best_script
        journal = self.journal
        experiments = journal.experiments(run.id)
        ledger: list[LedgerEntry] = []
        best: float | None = None
        for e in experiments:
            if not e.is_final:
                continue
            delta = None if e.val_bpb is None or best is None else e.val_bpb - best
            ledger.append(
                LedgerEntry(e.number, e.description or "", e.status, e.val_bpb, delta, e.proposer)
            )
            if e.decision == "keep" and e.val_bpb is not None:
                best = e.val_bpb
        events = journal.events(run.id, kinds=["note", "veto"], limit=50, latest=True)
        events.sort(key=lambda event: event.id)  # oldest first, as the proposer reads them
        refusals = [
            event
            for event in journal.events(run.id, kinds=["agent"], limit=200, latest=True)
            if (event.data or {}).get("type") == "refused"
        ]
        refusals.sort(key=lambda event: event.id)
        device = str(self.settings.trainer.device)
        program = self.program
        return ProposalContext(
            best_script=script,
            device="cuda" if device.startswith("cuda") else "cpu",
            tried_hashes=frozenset(e.script_hash for e in experiments if e.script_hash),
            ledger=ledger,
            notes=[event.message for event in events if event.kind == "note"],
            vetoes=[event.message for event in events if event.kind == "veto"],
            refused=[event.message for event in refusals[-REFUSALS_SHOWN:]],
            program=program.read_text(errors="replace") if program.is_file() else "",
            fix=fix,
            in_flight=[
                e.description or f"experiment {e.number}"
                for e in experiments
                if e.number > 0 and e.status in UNFINISHED
            ],
            trials=self._trials(experiments, basis.script_at),
            plateau_after=self.settings.search.plateau,
        )

    def _trials(
        self, experiments: list[Experiment], script_at: Callable[[str], str]
    ) -> list[TrialRecord]:
        """The run's scripts trained or in flight, with their results: what the optimiser's
        study is rebuilt from. Scripts are read from git once (commits never change)."""
        trials: list[TrialRecord] = []
        for e in experiments:
            if not e.commit_sha or e.status in NOT_TRIALS:
                continue
            script = self._scripts.get(e.commit_sha)
            if script is None:
                script = self._scripts[e.commit_sha] = script_at(e.commit_sha)
            status = e.status if e.is_final else RUNNING
            trials.append(TrialRecord(e.number, script, status, e.val_bpb, e.proposer))
        return trials

    def crash_to_fix(self, basis: Basis) -> tuple[CrashReport, int] | None:
        """The failed experiment the proposer should fix now, and the one it descends from.

        Only the latest decided experiment, and only while its chain of fixes is shorter than
        `engine.fix_attempts` and no fix of it exists yet. Derived from the journal, so a
        restart asks for the same fix."""
        limit = self.settings.engine.fix_attempts
        experiments = self.journal.experiments(basis.run.id)
        decided = [e for e in experiments if e.is_final and e.number > 0]
        if not limit or not decided:
            return None
        last = max(decided, key=lambda e: (e.ended_at or e.created_at, e.number))
        if last.status not in ("crash", "timeout") or not last.commit_sha:
            return None
        if last.proposer in NUMBERS_ONLY:
            return None  # a point of the optimiser that failed is a result, not a bug
        if any((e.details or {}).get("fixes") == last.number for e in experiments):
            return None  # already fixed (or being fixed) by another proposal
        origin = int((last.details or {}).get("fix_of", last.number))
        fixes = sum(1 for e in experiments if (e.details or {}).get("fix_of") == origin)
        if fixes >= limit:
            return None
        report = CrashReport(
            number=last.number,
            description=last.description,
            script=basis.script_at(last.commit_sha),
            outcome=str(last.outcome),
            log_tail=last.crash_tail or last.decision_reason or "",
        )
        return report, origin

    # --- asking --------------------------------------------------------------------------

    def _fix_proposal(self, basis: Basis) -> tuple[Proposal, dict[str, Any]] | None:
        """A fix of the experiment that just failed, when the proposer can make one, with the
        experiment details that tie it to the failure."""
        wanted = self.crash_to_fix(basis)
        if wanted is None:
            return None
        report, origin = wanted
        run = basis.run
        journal = self.journal
        try:
            proposal = self.ask(self.context(basis, fix=report))
        except NoProposal as exc:
            journal.add_event(
                "agent",
                f"#{report.number} is recorded as {report.outcome}, not fixed: {exc}",
                run_id=run.id,
                data={"type": "no_fix", "experiment": report.number},
            )
            return None
        if journal.has_script_hash(run.id, proposal.script_hash):
            return None
        journal.add_event(
            "agent",
            f"fix of #{report.number} ({report.outcome}): {proposal.description}",
            run_id=run.id,
            data={"type": "fix", "experiment": report.number},
        )
        return proposal, {"fix_of": origin, "fixes": report.number}

    def ask(
        self, context: ProposalContext, instead: Callable[[ProposalContext], Proposal] | None = None
    ) -> Proposal:
        """One proposal of the proposer (or of `instead`), its stream and state recorded as it
        goes."""
        self.agent.recorder.start_reply()
        self.marks.append(("propose_start", time.perf_counter()))
        try:
            return (instead or self.proposer.propose)(context)
        finally:
            self.marks.append(("propose_end", time.perf_counter()))
            self.agent.recorder.flush()
            self.journal.set_state(**self.agent.state())

    def refuse(self, run: Run, proposal: Proposal, flags: list[Flag]) -> None:
        """Record a proposal the integrity checks refused; the proposer hears why next time."""
        reason = describe_flags(flags).replace("\n", "; ")
        self.journal.add_event(
            "agent",
            f"{proposal.description}: {reason}",
            run_id=run.id,
            data={
                "type": "refused",
                "reason": reason,
                "flags": [flag.kind for flag in flags],
                "proposer": proposal.proposer,
            },
        )
        self.say(f"  refused before training ({proposal.description}): {reason}")

    def reject_repeat(self, run: Run, proposal: Proposal) -> None:
        """Record a proposal of a script that was already trained (or is in flight)."""
        self.journal.add_event(
            "agent",
            f"{proposal.description}: this script was already trained",
            run_id=run.id,
            data={"type": "rejected", "reason": "already trained", "proposer": proposal.proposer},
        )

    def _fresh_proposal(self, basis: Basis) -> tuple[Proposal, list[Flag]] | None:
        """A proposal whose script was never trained in this run, with its integrity flags
        (None: nothing left).

        In autonomous mode a proposal the integrity checks flag is refused before it is
        committed, and the reason goes back to the proposer with the next request; in
        supervised mode it waits for the researcher with its flags shown. When the proposer
        keeps proposing what is turned down, its stand-in (if it has one) gets as many tries."""
        run = basis.run
        journal = self.journal
        turned_down = "the proposer keeps repeating scripts that were already trained or refused"
        propose_instead = getattr(self.proposer, "propose_instead", None)  # a stand-in's
        for attempt in range(PROPOSAL_ATTEMPTS * (1 if propose_instead is None else 2)):
            instead = None
            if propose_instead is not None and attempt >= PROPOSAL_ATTEMPTS:
                instead = functools.partial(propose_instead, reason=turned_down)
            try:
                proposal = self.ask(self.context(basis), instead)
            except NoProposal as exc:
                journal.add_event("proposer", f"nothing left to propose: {exc}", run_id=run.id)
                self.say(f"nothing left to propose: {exc}")
                return None
            if journal.has_script_hash(run.id, proposal.script_hash):
                self.reject_repeat(run, proposal)
                continue
            flags = inspect_script(basis.best_script, proposal.script)
            if not flags or basis.mode == SUPERVISED:
                return proposal, flags
            self.refuse(run, proposal, flags)
        self.say(turned_down)
        return None

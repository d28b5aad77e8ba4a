"""What becomes of a training that has ended, and of the trained experiments that wait.

A training lands in one of a few ways: a reference training's result goes to the best's
trials on its kind of device; one the engine stopped runs again; one stopped early is
discarded with the evidence; one whose device was refused, or that was measured on other
data, stops the run (it runs again once that is fixed); any other is recorded and decided by
the run's `Judge`, or waits for the baseline's decision.
"""

from __future__ import annotations

from collections.abc import Callable

from cockpit.config import Settings
from cockpit.engine.flight import Flight, Flights, record_result, requeue
from cockpit.engine.judging import Judge
from cockpit.engine.runner import RunResult
from cockpit.engine.runs import stop_for_integrity
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from trainer.outcomes import Outcome


def land(
    flight: Flight,
    result: RunResult,
    journal: Journal,
    run: Run,
    settings: Settings,
    judge: Judge,
    *,
    stopping_now: bool,
    clock: Callable[[], float],
) -> None:
    """Record how ``flight`` ended and act on it. ``stopping_now``: the engine is stopping at
    once (an interrupted training then runs again when it starts next)."""
    if flight.reference:
        if result.outcome is Outcome.INTERRUPTED:
            return  # asked for again while an experiment waits for it
        reason = result.reason or result.outcome.status
        judge.record_reference(
            flight.experiment.id, result.val_bpb, flight.seed, flight.worker.kind, reason
        )
        return
    experiment = journal.experiment_by_id(flight.experiment.id)
    assert experiment is not None
    if result.outcome is Outcome.INTERRUPTED and stopping_now:
        requeue(journal, experiment, "by the engine stopping")
        return
    verdict = None if flight.watch is None else flight.watch.verdict
    if verdict is not None and result.outcome is Outcome.INTERRUPTED:
        record_result(journal, settings, experiment, result, flight.files, clock())
        judge.discard_early(experiment, verdict)
        return
    _require_usable_device(journal, run, flight, result, experiment)
    _require_same_corpus(journal, run, result, experiment)
    record_result(journal, settings, experiment, result, flight.files, clock())
    refreshed = journal.experiment_by_id(experiment.id)
    assert refreshed is not None
    if refreshed.number == 0 or run.best_val_bpb is not None:
        judge.decide(refreshed)


def _require_usable_device(
    journal: Journal, run: Run, flight: Flight, result: RunResult, experiment: Experiment
) -> None:
    """Stop the run when the training's device was refused (the probe, or torch cannot use
    it): every training there would be refused too."""
    check = result.summary.get("device_check")
    if isinstance(check, dict) and check.get("usable") is False:
        requeue(journal, experiment, "because its device was refused")
        label = flight.worker.label
        why = str(check.get("message")).removeprefix(f"{label}: ")
        stop_for_integrity(journal, run, f"the device check refused {label}: {why}")


def _require_same_corpus(
    journal: Journal, run: Run, result: RunResult, experiment: Experiment
) -> None:
    """Stop the run when the training was measured on other data: not comparable. Nothing is
    decided; it trains again once the corpus is back."""
    corpus = str(result.summary.get("corpus_fingerprint") or "")
    if run.corpus_fingerprint and corpus and corpus != run.corpus_fingerprint:
        requeue(journal, experiment, "because the corpus changed")
        stop_for_integrity(
            journal,
            run,
            f"the corpus changed since this run started (fingerprint "
            f"{run.corpus_fingerprint[:12]} -> {corpus[:12]}): results on it would not be "
            "comparable. Restore the corpus, or start a new run with `cockpit run --tag NEW`.",
        )


def decide_waiting(
    journal: Journal, run: Callable[[], Run], judge: Judge, flights: Flights
) -> None:
    """Decide the trained experiments that waited for the baseline's decision, for the
    best's result on their kind of device (or for a restart). ``run``: the run's record as
    the journal has it now (each decision may change it)."""
    current = run()
    in_flight = {flight.experiment.id for flight in flights if not flight.reference}
    measuring = flights.measuring()
    for experiment in journal.unfinished_experiments(current.id):
        if experiment.status != "evaluating" or experiment.id in in_flight:
            continue
        if str((experiment.details or {}).get("training_kind") or "") in measuring:
            continue  # the best is being measured on its kind right now
        if experiment.number == 0 or current.best_val_bpb is not None:
            judge.decide(experiment)
            current = run()

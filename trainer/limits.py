"""The time limits of one training, in one place: what the harness allows each phase of a run,
and the deadline past which the engine kills the harness's whole tree.

A run's phases, each on a clock of the harness's own:
    probe       trying the confinement on the device, once a      PROBE_TIMEOUT_SECONDS
                machine (its verdict is cached)                    (trainer.probe)

    startup     the training process starts Python and torch   STARTUP_ALLOWANCE_SECONDS
    script      budget and grace, the watchdog's margin past      script_limit_seconds
                them, and exporting the model                     (trainer.supervise)
    evaluation  the exported forward scored in the harness, and   evaluation_limit_seconds
                the watchdog's margin past its soft stop          (trainer.validate)

trainer.training, trainer.supervise and trainer.validate enforce them; the engine
(cockpit.engine.runner) kills a run only at `kill_deadline_seconds`, past all of them, so a run
the harness would still let finish is never lost to the engine's last resort.

The standard library only: the engine reads these without importing torch.
"""

from __future__ import annotations

# Trying the confinement on a device, in a process of its own (trainer.probe), when no verdict
# is cached: the first run on a machine, or after a change of the confinement's code.
PROBE_TIMEOUT_SECONDS = {"cpu": 180.0, "cuda": 300.0}
# For the training process to start Python and torch, up to the script's first line.
STARTUP_ALLOWANCE_SECONDS = 60.0
# A watchdog ends the process this long after a soft stop (SIGALRM) the code never yields to.
HARD_STOP_MARGIN_SECONDS = 10.0
# Exporting the model may take a quarter of the budget, and never less than this.
EXPORT_TIMEOUT_MIN_SECONDS = 60.0
# Evaluating the export may take as long as the budget, and never less than this.
EVAL_TIMEOUT_MIN_SECONDS = 60.0
# What no clock of the harness covers (its own start, ending the training's tree, writing the
# summary) gets this much past the harness's limits before the engine kills the tree.
KILL_MARGIN_SECONDS = 30.0


def export_limit_seconds(budget_seconds: float) -> float:
    """How long exporting the model may take."""
    return max(EXPORT_TIMEOUT_MIN_SECONDS, budget_seconds / 4)


def soft_stop_seconds(budget_seconds: float, grace_seconds: float) -> float:
    """When the script is told to stop (SIGALRM raised into it): its budget and the grace."""
    return budget_seconds + grace_seconds


def script_limit_seconds(budget_seconds: float, grace_seconds: float) -> float:
    """How long the script may take from its first line to the end of its export: the budget
    and the grace (the soft stop), the watchdog's margin past them (the hard stop), and the
    export's limit. trainer.supervise ends the training process after this."""
    return (
        soft_stop_seconds(budget_seconds, grace_seconds)
        + HARD_STOP_MARGIN_SECONDS
        + export_limit_seconds(budget_seconds)
    )


def evaluation_limit_seconds(budget_seconds: float) -> float:
    """How long evaluating the export may take before its soft stop (its watchdog ends the
    harness HARD_STOP_MARGIN_SECONDS later)."""
    return max(EVAL_TIMEOUT_MIN_SECONDS, budget_seconds)


def harness_limit_seconds(
    budget_seconds: float, grace_seconds: float, evaluation: float | None = None
) -> float:
    """The most the harness's own clocks let a run take: the device probe's (where nothing is
    cached; the longest of any device), the start-up allowance, the script's limit, and the
    evaluation's limit (``evaluation``, default `evaluation_limit_seconds`) with its watchdog's
    margin."""
    if evaluation is None:
        evaluation = evaluation_limit_seconds(budget_seconds)
    return (
        max(PROBE_TIMEOUT_SECONDS.values())
        + STARTUP_ALLOWANCE_SECONDS
        + script_limit_seconds(budget_seconds, grace_seconds)
        + evaluation
        + HARD_STOP_MARGIN_SECONDS
    )


def kill_deadline_seconds(
    budget_seconds: float, grace_seconds: float, evaluation: float | None = None
) -> float:
    """Seconds after a run's start at which the engine kills its whole tree: the harness's
    limit and KILL_MARGIN_SECONDS for what no clock of the harness covers."""
    return harness_limit_seconds(budget_seconds, grace_seconds, evaluation) + KILL_MARGIN_SECONDS

"""A run's noise floor as the engine measures it from the journal, and publishes it.

The margin comes from this run's scripts trained more than once (on devices of one kind),
their paired differences, and the spread the workspace's other runs measured where they
trained with this run's trainer settings, fixed parts and device (`earlier_noise`, the prior
its own spread is pooled with: cockpit.engine.noise). The arithmetic is cockpit.engine.noise's;
this module reads the journal for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cockpit.config import Settings
from cockpit.engine.noise import NoiseFloor, Prior, noise_floor
from cockpit.engine.runs import COMPARABILITY_SETTINGS, changed_settings
from cockpit.store.journal import Journal
from cockpit.store.records import Experiment, Run
from cockpit.store.trials import paired_differences, trial_results


class RunNoise:
    """The noise floor of the runs one engine drives, measured anew on every decision; the
    prior is read once per run and kind (the other runs do not change meanwhile)."""

    def __init__(self, journal: Journal, settings: Settings) -> None:
        self.journal = journal
        self.settings = settings
        self._priors: dict[tuple[int, str], Prior] = {}

    def floor(self, run: Run, kind: str = "") -> NoiseFloor:
        """The margin from every script of this run trained more than once (on devices of
        ``kind``), published for `cockpit status` and the cockpit."""
        experiments = self.journal.experiments(run.id)
        engine = self.settings.engine
        noise = noise_floor(
            [[value for _, value in trial_results(e, kind)] for e in experiments],
            floor=engine.keep_margin_bpb,
            multiple=engine.noise_multiple,
            differences=paired_differences(experiments, kind),
            prior=self.prior(run, kind),
        )
        self.journal.set_state(**noise.as_state())
        return noise

    def prior(self, run: Run, kind: str = "") -> Prior | None:
        """The spread the workspace's comparable runs measured (`earlier_noise`)."""
        prior = self._priors.get((run.id, kind))
        if prior is None:
            prior = earlier_noise(self.journal, run, kind)
            if prior is not None:
                self._priors[(run.id, kind)] = prior
        return prior


def _device_name(experiments: Sequence[Experiment]) -> object:
    baseline = next((e for e in experiments if e.number == 0), None)
    return None if baseline is None else (baseline.summary or {}).get("device_name")


def earlier_noise(journal: Journal, run: Run, kind: str = "") -> Prior | None:
    """The spread of val_bpb that the workspace's other runs measured (on devices of ``kind``),
    where they trained with this run's trainer settings, fixed parts and device: the prior
    its own spread is pooled with (`cockpit.engine.noise.shrunk`). None where there are none,
    or none trained a script twice."""
    config = run.config if isinstance(run.config, dict) else {}
    trainer = config.get("trainer")
    if not isinstance(trainer, dict):
        return None
    device = _device_name(journal.experiments(run.id)) if not kind else None
    if not kind and device is None:  # its baseline has not trained yet
        return None
    found = []
    for other in journal.runs():
        recorded = other.config if isinstance(other.config, dict) else {}
        if (
            other.id == run.id
            or not isinstance(recorded.get("trainer"), dict)
            or any(key not in recorded["trainer"] for key in COMPARABILITY_SETTINGS)
            or changed_settings(recorded["trainer"], trainer)
            or recorded.get("fixed_parts") != config.get("fixed_parts")
        ):
            continue
        experiments = journal.experiments(other.id)
        if not kind and _device_name(experiments) != device:
            continue
        found.append([[value for _, value in trial_results(e, kind)] for e in experiments])
    return Prior.measure(found)

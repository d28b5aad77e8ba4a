"""What the screen shows: the latest the journal's poller reported of each kind, and the
researcher's own choices (the experiment selected, a pause asked for). The app's handlers
are the only ones that change it; `cockpit.ui.panel_feed` hands it to the panels."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from cockpit.views.readmodel import (
    EventLine,
    ExperimentDetail,
    GpuHistory,
    LedgerRow,
    LossCurves,
    StatusInfo,
)


@dataclass(eq=False)
class ScreenState:
    """Everything the panels are drawn from."""

    status: StatusInfo
    # The run's latest events, as many as the poller keeps.
    events: deque[EventLine]
    ledger: dict[int, LedgerRow] = field(default_factory=dict)
    # The experiment the engine works on (or the latest one).
    current: ExperimentDetail | None = None
    # The experiment the researcher selected, and its detail once read (None: follow the
    # engine).
    pinned_number: int | None = None
    pinned: ExperimentDetail | None = None
    loss: LossCurves = field(default_factory=LossCurves)
    gpu: GpuHistory = field(default_factory=GpuHistory)
    agent_stream: str = ""
    poll_error: str | None = None
    # A pause sent and not yet seen in the engine's phase.
    pause_requested: bool = False

    @classmethod
    def empty(cls, workspace_label: str, events_kept: int | None) -> ScreenState:
        """Nothing read yet of the workspace named ``workspace_label``."""
        return cls(status=StatusInfo(workspace=workspace_label), events=deque(maxlen=events_kept))

    def forget_run(self) -> None:
        """Forget all that was read of the run (a new run, or the journal read afresh)."""
        self.ledger = {}
        self.events.clear()
        self.current = self.pinned = None
        self.pinned_number = None
        self.loss, self.gpu, self.agent_stream = LossCurves(), GpuHistory(), ""

    @property
    def paused(self) -> bool:
        """Whether the engine is paused, or a pause is on its way: the key that applies is
        resume."""
        return self.status.phase == "paused" or self.pause_requested

    def pinned_detail(self) -> ExperimentDetail | None:
        """The selected experiment's detail (None while following the engine)."""
        return self.pinned if self.pinned_number is not None else None

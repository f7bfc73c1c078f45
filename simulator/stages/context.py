"""What every stage of a run is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simulator.engine.workspace import ModelKit, Workspace
from simulator.records import RunRecorder

__all__ = ["Progress", "RunContext"]

Progress = Callable[[str, int, int, str], None]


@dataclass
class RunContext:
    """The run's inputs (workspace, model kit), its directory and its console."""

    ws: Workspace
    kit: ModelKit
    recorder: RunRecorder
    progress: Progress
    debug: bool = False

    @property
    def path(self) -> Path:
        return self.recorder.path

    def folder(self, *parts: str) -> Path:
        """``stages/<parts>`` inside the run directory, created on first use."""
        path = self.path.joinpath("stages", *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

"""One progress-event shape for every stage (a shared leaf: imports nothing of mobiledepth).

A stage's public function takes ``progress: ProgressFn | None`` and calls it with a
:class:`Progress` each time something worth showing happens; the CLI renders the events (a
bar, a status line, console lines) and tests collect or interrupt on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Progress:
    """One thing that happened in a stage.

    ``stage``: the part of the work (``"train"``, ``"eval"``, ``"synth"``, ``"prune"``, an export
    step such as ``"onnx"``, a LUT phase such as ``"convert"``); ``event``: what happened to it
    (``"start"``, ``"done"``, ``"failed"``, ``"step"``, ``"batch"``, ...); ``done`` / ``total``:
    the count so far and the count expected; ``seconds``: how long the part took; ``detail``:
    a sentence for people; ``info``: the stage's own fields (e.g. a training step's losses).
    """

    stage: str
    event: str
    done: int | None = None
    total: int | None = None
    seconds: float | None = None
    detail: str = ""
    info: dict = field(default_factory=dict)

    def line(self) -> str:
        """The event as one plain-text line, e.g. ``onnx done 1.2 s export to ONNX`` or ``eval batch 8/40``."""
        parts = [self.stage, self.event]
        if self.done is not None:
            parts.append(f"{self.done}/{self.total}" if self.total is not None else str(self.done))
        if self.seconds is not None:
            parts.append(f"{self.seconds:.1f} s")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)


ProgressFn = Callable[[Progress], None]


def silent(_event: Progress) -> None:
    """A ``ProgressFn`` that shows nothing (the default of every stage)."""

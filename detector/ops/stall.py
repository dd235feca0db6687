"""Partitions that stopped moving while records wait: what ``/healthz`` must not call ready.

A checkpoint that commits says the detector and the broker talk, not that every partition
moves: a broker can go on answering fetches of one partition with nothing (Tansu does, once a
partition holds too many batches: ``detector/kafka/tansu.py``) while its lag grows. So at each
committed checkpoint the loop reports, per partition it owns, the position it has processed to
and the records waiting past it (the end offset minus the consumer's fetch position, so that a
transaction's commit marker, which is never a record to process, is not counted as waiting).
A partition whose processed position has not moved for ``checkpoints`` checkpoints in a row
while records waited at each is stalled.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Checkpoints in a row without progress, with records waiting, that make a partition stalled.
STALL_CHECKPOINTS = 3


@dataclass(frozen=True)
class Progress:
    """One partition at one checkpoint: processed up to ``position``; ``waiting`` records past
    it that are to be processed."""

    position: int
    waiting: int


def waiting(processed: int, fetch_position: int | None, end: int) -> int:
    """Records to process past ``processed``: up to the partition's ``end``, from wherever the
    consumer fetches next (past a commit marker it has skipped)."""
    return max(0, end - max(processed, fetch_position if fetch_position is not None else 0))


class StallWatch:
    """Which owned partitions have not moved for ``checkpoints`` checkpoints with records
    waiting; partitions not reported at a checkpoint are forgotten (revoked)."""

    def __init__(self, checkpoints: int = STALL_CHECKPOINTS):
        self.checkpoints = checkpoints
        self._last: dict[int, Progress] = {}
        self._still: dict[int, int] = {}  # partition -> checkpoints in a row without progress

    def observe(self, partitions: dict[int, Progress]) -> None:
        """The partitions' progress at a committed checkpoint."""
        still = {}
        for p, now in partitions.items():
            before = self._last.get(p)
            stuck = before is not None and now.position == before.position and now.waiting > 0
            still[p] = self._still.get(p, 0) + 1 if stuck else 0
        self._last, self._still = dict(partitions), still

    def stalled(self) -> dict[int, int]:
        """Stalled partitions and the records waiting in each."""
        return {p: self._last[p].waiting for p, n in self._still.items()
                if n >= self.checkpoints}

    def why(self) -> str:
        """Why ``/healthz`` is not ready because of them ("" when none is stalled)."""
        stalled = self.stalled()
        if not stalled:
            return ""
        parts = ", ".join(f"{p} ({n:,} records waiting)" for p, n in sorted(stalled.items()))
        return (f"partition(s) {parts} not moved for {self.checkpoints} checkpoints: the "
                "broker is not serving them")

"""Where the random values come from: many independent streams, one value per stream per round."""

from __future__ import annotations

import json

import numpy as np

from detector.task.rule import walk_step


class StreamSource:
    """``n`` streams ``<prefix>0 .. <prefix>n-1``, each with its own ``seq`` counting from 0.

    ``uniform`` is the seed's generator (iid values in [0, 1)); ``walk`` a random walk kept in
    [0, 1], whose smoother runs make longer alert streaks. ``epoch`` (the producer's start, in
    ms) goes into every record: a restarted producer counts ``seq`` from 0 again, and its newer
    epoch tells the detector that these are new events, not duplicates.
    """

    def __init__(self, streams: int, pattern: str, seed: int | None, prefix: str = "s-",
                 epoch: int | None = None):
        if pattern not in ("uniform", "walk"):
            raise ValueError(f"unknown pattern {pattern!r}")
        self.pattern = pattern
        self.rng = np.random.default_rng(seed)
        self.ids = [f"{prefix}{i}" for i in range(streams)]
        self.keys = [s.encode() for s in self.ids]
        self._json_ids = [json.dumps(s) for s in self.ids]
        self._tail = "}" if epoch is None else f',"epoch":{epoch}}}'
        self.seq = np.zeros(streams, np.int64)
        self._all = list(range(streams))
        self._cur = self.rng.random(streams)
        self._values: list[float] = []

    def next_round(self) -> list[int] | None:
        """One new value for every stream; the streams (all of them) that have one."""
        if self.pattern == "uniform":
            self._cur = self.rng.random(len(self.ids))
        else:
            self._cur = walk_step(self._cur, self.rng)
        self._values = self._cur.tolist()
        return self._all

    def record(self, i: int, ts: float) -> bytes:
        """The record value for stream ``i``'s value of this round (advances its seq).

        The same JSON that ``detector.stream.codec.encode_event`` writes, formatted directly: the
        producer's speed bounds every benchmark.
        """
        seq = int(self.seq[i])
        self.seq[i] = seq + 1
        return (f'{{"stream":{self._json_ids[i]},"seq":{seq},"value":{self._values[i]!r},'
                f'"ts":{ts!r}{self._tail}').encode()

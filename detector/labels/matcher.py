"""The join of labels with flag records, and the figures it gives: pure, no Kafka.

A flag record is kept when a label of its stream covers its event (a range label, or a
verdict at its seq); each ``(stream, seq, name, version)`` is kept once, whichever copy came
first (its role the live one's if a version's flag of that event came on both topics), so the
identical duplicates a crash leaves on the flags topic never count twice. An event no label
covers is unknown: it is never kept, never a negative.

Outcomes follow the labels in force: a label replaced by a later one of its id takes its
events' outcomes with it, and the events are counted again under the new one. The counts are
kept up to date as flags and labels arrive (per stream, only that stream's kept events are
looked at again).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from detector.labels.book import IGNORED, UNKNOWN, LabelBook, Position
from detector.labels.codec import Label, Verdict
from detector.labels.figures import Counts, outcome

ROLES = ("live", "candidate")
#: A verdict's run by the model that raised it; or why it has none (yet).
NO_RUN, NOT_SEEN = "no_run", "not_seen"


@dataclass(frozen=True, slots=True)
class Flag:
    """What the join needs of a flag record (``detector.stream.codec.encode_flag``)."""

    stream: str
    seq: int
    ts: float | None
    name: str
    version: int
    flag: int


def decode_flag(value: bytes | None) -> Flag | None:
    """The flag record in ``value``, or None for anything else."""
    try:
        r = json.loads(value or b"")
        ts = r.get("ts")
        flag = Flag(r["stream"], int(r["seq"]), None if ts is None else float(ts),
                    str(r["model"]), int(r.get("model_version", 0)), int(r["flag"]))
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        return None
    return flag


@dataclass(slots=True)
class _Kept:
    role: str
    flag: int
    ts: float | None
    counted: tuple[str, str, str, str] | None = None  # (name, version, role, outcome)


class Matcher:
    def __init__(self) -> None:
        self.book = LabelBook()
        self._kept: dict[str, dict[tuple[int, str, int], _Kept]] = {}
        self.events: Counter[tuple[str, str, str, str]] = Counter()
        #: Each verdict's run and the verdict: (name, version) of the live model whose flag 1
        #: started it, or NO_RUN (its flag there is 0) or NOT_SEEN (no live flag there yet).
        self.runs: dict[str, tuple[tuple[str, str] | str, str]] = {}
        #: Ids of labels some of whose events could no longer be found (``score`` says how
        #: many); cleared when a label is replaced.
        self.too_late: set[str] = set()
        self._dirty: set[str] = set()  # streams whose labels changed since ``settle``

    # --- input ------------------------------------------------------------------------------

    def add_label(self, label: Label, position: Position) -> bool:
        """A label record; whether it is in force now. Its stream's figures are redone at the
        next ``settle`` (once for a batch of labels)."""
        applied, old = self.book.add(label, position)
        if not applied:
            return False
        if old is not None:
            self.too_late.discard(old.id)
            self.runs.pop(old.id, None)
            self._dirty.add(old.stream)
        self._dirty.add(label.stream)
        return True

    def settle(self) -> None:
        """Redo the figures of the streams whose labels changed."""
        while self._dirty:
            self._redo(self._dirty.pop())

    def wants(self, stream: str, seq: int, ts: float | None) -> bool:
        """Whether a label covers this event (a range, or a verdict at its seq); ``ignore``
        covers too: a replacement may make it count."""
        return (self.book.truth(stream, seq, ts) != UNKNOWN
                or bool(self.book.verdict_at(stream, seq)))

    def offer(self, role: str, flag: Flag) -> bool:
        """A flag record of ``role``; whether it was kept (new, and covered by a label)."""
        self.settle()
        key = (flag.seq, flag.name, flag.version)
        kept = self._kept.get(flag.stream)
        if kept is not None and key in kept:
            entry = kept[key]
            if role == "live" and entry.role != "live":  # the copy that served decides
                entry.role = "live"
                self._count(flag.stream, key, entry)
            return False
        if not self.wants(flag.stream, flag.seq, flag.ts):
            return False
        entry = _Kept(role, flag.flag, flag.ts)
        self._kept.setdefault(flag.stream, {})[key] = entry
        self._count(flag.stream, key, entry)
        if role == "live":
            for verdict in self.book.verdict_at(flag.stream, flag.seq):
                self._attribute(verdict)
        return True

    # --- figures ----------------------------------------------------------------------------

    def figures(self) -> dict[tuple[str, str, str], Counts]:
        """Counts per (name, version, role)."""
        self.settle()
        out: dict[tuple[str, str, str], Counts] = {}
        for (name, version, role, result), n in self.events.items():
            if n:
                counts = out.setdefault((name, version, role), Counts())
                setattr(counts, result, getattr(counts, result) + n)
        return out

    def verdicts(self) -> Counter[tuple[str, str, str]]:
        """Verdicts per (name, version, verdict) of the runs they are on."""
        self.settle()
        out: Counter[tuple[str, str, str]] = Counter()
        for run, verdict in self.runs.values():
            if isinstance(run, tuple):
                out[(*run, verdict)] += 1
        return out

    def verdicts_without_run(self) -> dict[str, int]:
        self.settle()
        counts = Counter(run for run, _ in self.runs.values() if isinstance(run, str))
        return {NO_RUN: counts[NO_RUN], NOT_SEEN: counts[NOT_SEEN]}

    def kept(self) -> int:
        return sum(len(k) for k in self._kept.values())

    def labeled_events(self) -> dict[str, int]:
        """Events with a flag kept whose labels say pattern, or no pattern: what the figures
        rest on, whichever model flagged them."""
        self.settle()
        out = {"pattern": 0, "no_pattern": 0}
        for stream, kept in self._kept.items():
            truths = {seq: self.book.truth(stream, seq, entry.ts)
                      for (seq, _, _), entry in kept.items() if entry.counted is not None}
            for truth in truths.values():
                out["pattern" if truth == 1 else "no_pattern"] += 1
        return out

    # --- upkeep -----------------------------------------------------------------------------

    def _count(self, stream: str, key: tuple[int, str, int], entry: _Kept) -> None:
        if entry.counted is not None:
            self.events[entry.counted] -= 1
            entry.counted = None
        truth = self.book.truth(stream, key[0], entry.ts)
        if truth not in (UNKNOWN, IGNORED):
            entry.counted = (key[1], str(key[2]), entry.role, outcome(truth, entry.flag))
            self.events[entry.counted] += 1

    def _redo(self, stream: str) -> None:
        """A label of ``stream`` came or went: its kept events counted again, its verdicts
        attributed again; events no label covers any more are let go."""
        kept = self._kept.get(stream, {})
        for key, entry in list(kept.items()):
            self._count(stream, key, entry)
            if entry.counted is None and not self.wants(stream, key[0], entry.ts):
                del kept[key]
        if not kept:
            self._kept.pop(stream, None)
        for verdict in self.book.verdicts(stream):
            self._attribute(verdict)

    def _attribute(self, verdict: Verdict) -> None:
        live = [(key, entry) for key, entry in self._kept.get(verdict.stream, {}).items()
                if key[0] == verdict.run_start_seq and entry.role == "live"]
        started = sorted((key[1], key[2]) for key, entry in live if entry.flag == 1)
        run = (started[0][0], str(started[0][1])) if started else NO_RUN if live else NOT_SEEN
        self.runs[verdict.id] = (run, verdict.verdict)


def report(matcher: Matcher, waiting: int) -> dict:
    """Everything ``score`` shows: figures per model and role, verdicts per model, and the
    labels by kind, too late and waiting for a read-back."""
    figures = matcher.figures()
    return {
        "models": [{"name": name, "version": int(version), "role": role, **c.as_dict()}
                   for (name, version, role), c in sorted(figures.items())],
        "runs": [{"name": name, "version": int(version), "verdict": verdict, "runs": n}
                 for (name, version, verdict), n in sorted(matcher.verdicts().items())],
        "labels": dict(matcher.book.kinds),
        "labeled_events": matcher.labeled_events(),
        "verdicts_without_run": matcher.verdicts_without_run(),
        "labels_too_late": len(matcher.too_late),
        "labels_waiting": waiting,
    }


"""The join of labels with flags computed plainly, as the figures ``score`` must equal: for the
unit tests (flags and labels as objects) and the broker tests (as the topics hold them)."""

from __future__ import annotations

import json

import numpy as np

from detector.labels.codec import RangeLabel, decode
from detector.labels.figures import Counts
from detector.labels.matcher import Flag
from detector.testing.harness import Record


def offline(flags: list[tuple[str, Flag]], labels: list[tuple[object, tuple[int, int, int]]]
            ) -> dict[tuple[str, str, str], Counts]:
    """The last record of each id; per event the latest covering range; the first copy of each
    (stream, seq, name, version), live if any copy is. Counts per (name, version, role)."""
    final: dict[str, tuple] = {}
    for label, position in labels:
        if label.id not in final or final[label.id][0] <= position:
            final[label.id] = (position, label)
    ranges = sorted((p, lab) for p, lab in final.values() if isinstance(lab, RangeLabel))
    first: dict[tuple, tuple[str, Flag]] = {}
    for role, f in flags:
        key = (f.stream, f.seq, f.name, f.version)
        if key not in first or (role == "live" and first[key][0] != "live"):
            first[key] = (role if key not in first else "live", first.get(key, (0, f))[1])
    out: dict[tuple[str, str, str], Counts] = {}
    for role, f in first.values():
        truth = None
        for _, lab in ranges:
            if lab.stream == f.stream and lab.covers(f.seq, f.ts):
                truth = lab.label
        if truth in ("pattern", "no_pattern"):
            c = out.setdefault((f.name, str(f.version), role), Counts())
            c += Counts.of(np.array([int(truth == "pattern")]), np.array([f.flag]))
    return out


def from_topics(flags: dict[str, list[Record]], labels: list[Record]
                ) -> dict[tuple[str, str, str], Counts]:
    """``offline`` over the records the topics hold: ``flags`` by role."""
    parsed = []
    for role, records in flags.items():
        for r in records:
            body = json.loads(r.value)
            parsed.append((role, Flag(body["stream"], body["seq"], body["ts"], body["model"],
                                      body["model_version"], body["flag"])))
    return offline(parsed, [(decode(r.key, r.value), (r.timestamp, r.partition, r.offset))
                            for r in labels])

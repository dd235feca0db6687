"""``python -m detector tail``: one readable line per flag, run or dead-letter record."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition

from detector.kafka import acl, clients, topics
from detector.settings.kafka import KafkaSettings
from detector.stream.codec import RunAlert, decode_run


def _clock(ts: float) -> str:
    """Local time to the millisecond (rounded: 0.123 is not printed as .122)."""
    seconds, ms = divmod(round(ts * 1000), 1000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{ms:03d}"


_ARROWS = {"up": "↑", "down": "↓", "flat": "→"}


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


#: How a run resolved without an event ending it ended (the record's ``reason``).
_ENDED = {"model_swap": "ended by a model swap (the next model's runs start afresh)",
          "model_changed": "ended at a restore under another model"}


def _arrow(direction: str) -> str:
    return _ARROWS.get(direction, "?")


def _describe_run(r: RunAlert) -> str:
    """A run's firing or resolution as a sentence that names its first and last value.

    ``start_seq`` is the run's first flag 1, its third value; ``seq`` is, when firing, the
    run's last value so far and, when resolved, the first event after the run. The first and
    last values' seqs follow from these when the stream's seqs have no gap within the run (the
    length says so); otherwise the line gives what the record holds. A pattern model's run
    counts flags, from its first at ``start_seq``.
    """
    firing = r.status == "firing"
    unit = ("flag" if r.pattern else "value") + ("" if r.length == 1 else "s")
    # A resolution at a change of model has no event that ended it: seq is the run's last.
    first = r.start_seq - (0 if r.pattern else 2)
    last = r.seq if firing or r.reason else r.seq - 1
    start = "first flag" if r.pattern else "3rd"  # a trend's first flag is its third value
    if first >= 0 and last - first + 1 == r.length:
        span = f"seq {first}..{last}"
    elif firing:
        span = f"up to seq {last} (its {start} at seq {r.start_seq}; seqs have gaps)"
    else:
        span = f"from its {start} at seq {r.start_seq} (seqs have gaps)"
    if firing:
        what = f"run of {r.length} {unit} so far, {span}, last value {r.value:.4f}"
    else:
        what = f"run of {r.length} {unit}, {span}, " + _ENDED.get(r.reason, f"ended by seq {r.seq}")
    kind = r.pattern if r.pattern else _arrow(r.direction)
    version = f" [{r.model} v{r.model_version}]" if r.model_version else ""
    return f"{_clock(r.time)} {r.status.upper():<8} {r.stream} {kind} {what}{version}"


def describe(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> str:
    """A flag or run record as a sentence; a dead letter by its reason; anything else as text."""
    meta = dict(headers or [])
    if "dlq.reason" in meta:
        where = f"{meta.get('dlq.source.topic', b'?').decode()}:" \
                f"{meta.get('dlq.source.partition', b'?').decode()}@" \
                f"{meta.get('dlq.source.offset', b'?').decode()}"
        if "dlq.source.line" in meta:  # one line of a line-protocol record
            where += f" line {meta['dlq.source.line'].decode()}"
        text = (value or b"")[:80].decode("utf-8", "replace")
        error = meta.get("dlq.error", b"").decode("utf-8", "replace")
        return (f"DEAD LETTER {meta['dlq.reason'].decode()} from {where}: {text!r}"
                + (f" ({error})" if error else ""))
    run = decode_run(value)
    if run is not None:
        return _describe_run(run)
    try:
        r = json.loads(value or b"")
        clock = _clock(r.get("ts") or r["detected_at"])
        # A pattern model's flag names its pattern; a trend's shows the step's direction.
        arrow = r["pattern"] if isinstance(r.get("pattern"), str) else _arrow(r["direction"])
        # A flag is one event's answer; alerts are the run records (the alert topic).
        mark = "FLAG 1" if r["flag"] else "flag 0"
        rule = ("" if r["flag"] == r.get("rule_flag", r["flag"])
                else "  (exact rule disagrees)")
        return (f"{clock} {mark} {r['stream']:>10} seq {r['seq']:<7} value {r['value']:.4f} "
                f"{arrow} p={r['probability']:.3f}{rule}")
    except (ValueError, KeyError, TypeError):
        return (value or b"").decode("utf-8", "replace")


def tail(kafka: KafkaSettings, topic: str, from_beginning: bool, stop: threading.Event,
         limit: int | None = None, out: Callable[[str], None] = print,
         note: Callable[[str], None] = _note) -> int:
    """Print records of every partition of ``topic`` until ``stop`` or ``limit`` records; with
    ``from_beginning`` and a ``limit``, also at the end of the topic as it was when reading
    began. A topic that does not exist yet is waited for (said once, through ``note``)."""
    acl.check(kafka, acl.tail(topic))
    n = topics.partition_count(kafka, topic)
    if n is None:
        note(f"tail: topic {topic} does not exist yet on {kafka.bootstrap_servers}; waiting for "
             "it (Ctrl-C stops)")
        while n is None and not stop.wait(WAIT_FOR_TOPIC_S):
            n = topics.partition_count(kafka, topic)
        if n is None:
            return 0
    consumer = clients.consumer(kafka, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed")
    tps = [TopicPartition(topic, p) for p in range(n)]
    consumer.assign(tps)
    if from_beginning:
        consumer.seek_to_beginning(*tps)
    else:
        _seek_to_fetched_end(consumer, tps, stop)
    # The end as a fetch first reports it: the local broker's ListOffsets falls short of it.
    ends: dict[TopicPartition, int] | None = {} if from_beginning and limit else None
    shown = 0
    try:
        while not stop.is_set() and (limit is None or shown < limit):
            for recs in consumer.poll(timeout_ms=200).values():
                for r in recs:
                    out(describe(r.value, r.headers))
                    shown += 1
                    if limit is not None and shown >= limit:
                        return shown
            if ends is not None and _at_end(consumer, tps, ends):
                return shown
    finally:
        consumer.close(autocommit=False)
    return shown


#: How often ``tail`` looks again for a topic that does not exist yet.
WAIT_FOR_TOPIC_S = 1.0


#: How long ``tail`` may take to learn where each partition ends, from fetches.
FIND_END_S = 10.0


def _seek_to_fetched_end(consumer: KafkaConsumer, tps: list[TopicPartition],
                         stop: threading.Event) -> None:
    """Start at each partition's end as a fetch reports it: the local broker answers
    ListOffsets(latest) short of the end (by a batch, and by many when it is busy), which
    printed minutes-old records as new ones. What the fetches return before it is dropped."""
    consumer.seek_to_end(*tps)
    ends: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + FIND_END_S
    while len(ends) < len(tps) and not stop.is_set() and time.monotonic() < deadline:
        consumer.poll(timeout_ms=200)
        ends |= {tp: high for tp in tps if (high := consumer.highwater(tp)) is not None}
    for tp, end in ends.items():
        consumer.seek(tp, end)


def _at_end(consumer: KafkaConsumer, tps: list[TopicPartition],
            ends: dict[TopicPartition, int]) -> bool:
    """Whether every partition is read up to the end its first fetch reported (``ends`` fills
    in as fetches report them)."""
    for tp in tps:
        high = consumer.highwater(tp)
        if tp not in ends and high is not None:
            ends[tp] = high
    return len(ends) == len(tps) and all((clients.position(consumer, tp) or 0) >= end
                                         for tp, end in ends.items())

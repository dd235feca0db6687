"""Alertmanager's side: one alert per trend run, and the client that posts them (API v2).

One alert per run, labelled ``alertname="TrendRun"``, ``stream``, ``direction``, ``model`` and
``start_seq`` (so two runs of one stream are two alerts); a pattern model's run
``alertname="PatternRun"`` with its ``pattern`` instead of a direction. The model version is
an annotation (a run that spans a swap keeps its identity). ``detector.alerts.bridge`` decides
when each is posted.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

from detector.stream.codec import RunAlert

ALERTNAME = "TrendRun"
#: A run of a model trained on someone's labels: labelled with its ``pattern``.
PATTERN_ALERTNAME = "PatternRun"
MAX_ALERTS_PER_POST = 500


class PostFailed(Exception):
    """Alertmanager did not accept a request; ``reason`` is a metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Alertmanager:
    """Alertmanager's v2 API: ``POST /api/v2/alerts`` with a JSON list of alerts."""

    def __init__(self, url: str, timeout_s: float):
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.timeout_s = timeout_s

    def post(self, alerts: list[dict]) -> None:
        request = urllib.request.Request(
            self.endpoint, data=json.dumps(alerts).encode(), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "trend-detector"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()[:300].decode("utf-8", "replace").strip()
            reason = "rejected" if exc.code < 500 else "server_error"
            raise PostFailed(reason, f"Alertmanager answered {exc.code}: {body}") from exc
        except TimeoutError as exc:
            raise PostFailed("timeout", f"no answer within {self.timeout_s:g} s") from exc
        except (urllib.error.URLError, OSError) as exc:
            cause = getattr(exc, "reason", exc)
            if isinstance(cause, TimeoutError):
                raise PostFailed("timeout", f"no answer within {self.timeout_s:g} s") from exc
            raise PostFailed("unreachable", f"cannot reach {self.endpoint}: {cause}") from exc


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass
class Run:
    """A run the bridge knows of and has not finished with: open, or its resolution unsent."""

    partition: int
    offset: int  #: of the record that made it known; commits stay at or below it
    firing: RunAlert | None  #: None: known only by a resolution (its firing was read earlier)
    resolved: RunAlert | None = None
    posted_at: float | None = None  #: monotonic time of the last accepted post while firing
    first_posted_at: float | None = None  #: ... and of the first

    @property
    def first(self) -> RunAlert:
        return self.firing or self.resolved  # type: ignore[return-value]


def alert(run: Run, now: float, ttl_s: float, resolved: bool) -> dict:
    """The Alertmanager alert for a run, firing or resolved (``now``: wall-clock seconds)."""
    first = run.first
    starts = first.time
    if first.pattern:
        labels = {"alertname": PATTERN_ALERTNAME, "stream": first.stream,
                  "pattern": first.pattern, "model": first.model,
                  "start_seq": str(first.start_seq)}
        doing, did, unit = f"showing {first.pattern}", f"showed {first.pattern}", "flags"
    else:
        labels = {"alertname": ALERTNAME, "stream": first.stream, "direction": first.direction,
                  "model": first.model, "start_seq": str(first.start_seq)}
        way = "up" if first.direction == "up" else "down"
        doing, did, unit = f"trending {way}", f"trended {way}", "values"
    if not resolved:
        r = run.firing
        assert r is not None
        ends = max(now, starts) + ttl_s
        summary = (f"{r.stream} {doing} since seq {r.start_seq}: {r.length} {unit} "
                   f"so far (seq {r.seq}, value {r.value:.6g})")
    else:
        r = run.resolved
        assert r is not None
        ends = max(r.time, starts)
        ended = (f"seq {r.seq} (value {r.value:.6g}) ended it" if not r.reason else
                 f"the model serving it changed after seq {r.seq} (value {r.value:.6g})")
        summary = f"{r.stream} {did} for {r.length} {unit} from seq {r.start_seq}; {ended}"
    return {
        "labels": labels,
        "annotations": {"summary": summary, "length": str(r.length), "seq": str(r.seq),
                        "value": f"{r.value:.6g}", "model_version": str(r.model_version),
                        **({"ended_by": r.reason} if r.reason else {})},
        "startsAt": _rfc3339(starts),
        "endsAt": _rfc3339(ends),
    }

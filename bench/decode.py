"""What decoding an input record costs per event: JSON against InfluxDB line protocol.

    python bench/decode.py [--records 1000] [--repeat 21]

``InputMapping.decode`` (the decoder the pipeline calls for every record) over the same
metrics in each shape, in one process, the shapes taking turns, best of ``--repeat``:

- the producer's JSON record (one event a record);
- Telegraf's JSON serializer (``fields.*``: four numeric fields and a string, one record);
- Telegraf's line protocol, one line a record (the same fields);
- line protocol, 20 lines a record (a gateway or a batching client).

Each line has two tags and a nanosecond timestamp, as Telegraf writes ``cpu``. Prints a
table and saves ``bench/results/decode.json``. Takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import timeit

from detector.settings.input import InputSettings
from detector.stream.codec import encode_event
from detector.stream.mapping import InputMapping

from common import save, say, table

TELEGRAF_JSON = InputSettings(stream_id="{name}.{tags.host}.{tags.cpu}.{field}",
                              value_path="fields.*", seq_path="", time_path="timestamp")
INFLUX = InputSettings(input_format="influx")
FIELDS = ("usage_idle", "usage_user", "usage_system", "usage_iowait")


def metrics(n: int, seed: int = 0) -> list[dict]:
    """``n`` Telegraf ``cpu`` metrics: two tags, four numeric fields (one an integer) and a
    string, a second apart."""
    rng = random.Random(seed)
    return [{"name": "cpu", "tags": {"cpu": f"cpu{i % 4}", "host": f"web-{i % 7}"},
             "fields": {"usage_idle": round(rng.uniform(0, 100), 2),
                        "usage_user": round(rng.uniform(0, 10), 3),
                        "usage_system": round(rng.random(), 4), "usage_iowait": rng.randint(0, 9),
                        "state": "ok"},
             "timestamp": 1764179385 + i} for i in range(n)]


def line(m: dict) -> str:
    tags = "".join(f",{k}={v}" for k, v in sorted(m["tags"].items()))
    fields = ",".join(f"{k}={v}i" if isinstance(v, int) else
                      f'{k}="{v}"' if isinstance(v, str) else f"{k}={v!r}"
                      for k, v in m["fields"].items())
    return f"{m['name']}{tags} {fields} {m['timestamp'] * 10**9}"


def shapes(n: int) -> dict[str, tuple[InputSettings, list[tuple[bytes, bytes]]]]:
    ms = metrics(n)
    rng = random.Random(1)
    producer = [(f"s-{i % 100}".encode(), encode_event(f"s-{i % 100}", i, rng.random(),
                                                       1764179385.0 + i, 1764179000000))
                for i in range(n)]
    lines = [line(m) for m in ms]
    return {
        "JSON, the producer's record": (InputSettings(), producer),
        "JSON, Telegraf (fields.*)": (TELEGRAF_JSON, [(m["tags"]["host"].encode(),
                                                       json.dumps(m).encode()) for m in ms]),
        "line protocol, 1 line a record": (INFLUX, [(b"web", text.encode()) for text in lines]),
        "line protocol, 20 lines a record": (INFLUX, [(b"web", "\n".join(lines[i:i + 20])
                                                       .encode()) for i in range(0, n, 20)]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1000, help="metrics per shape")
    p.add_argument("--repeat", type=int, default=21, help="timings per shape; the best counts")
    args = p.parse_args()
    cases = shapes(args.records)
    runs = {}
    for name, (settings, records) in cases.items():
        mapping = InputMapping(settings)
        events = sum(len(mapping.decode(k, v)) for k, v in records)
        runs[name] = (lambda m=mapping, rs=records: [m.decode(k, v) for k, v in rs],
                      len(records), events)
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeat):  # the shapes take turns: a busy moment hits them alike
        for name, (fn, _, _) in runs.items():
            best[name] = min(best[name], timeit.timeit(fn, number=1))
    rows, results = [], {}
    for name, (_, n_records, n_events) in runs.items():
        per_record, per_event = best[name] / n_records * 1e6, best[name] / n_events * 1e6
        results[name] = {"records": n_records, "events": n_events,
                         "us_per_record": round(per_record, 3),
                         "us_per_event": round(per_event, 3)}
        rows.append([name, n_records, f"{n_events / n_records:g}", f"{per_record:.2f}",
                     f"{per_event:.2f}"])
    say(f"\nInputMapping.decode, best of {args.repeat}\n")
    say(table(["shape", "records", "events/record", "µs/record", "µs/event"], rows))
    save("decode", {"repeat": args.repeat, "results": results},
         f"python bench/decode.py --records {args.records} --repeat {args.repeat}")


if __name__ == "__main__":
    main()

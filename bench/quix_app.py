"""The detector's job for the ``seed`` model as a Quix Streams application (run by bench/quix.py).

    <venv with quixstreams>/bin/python bench/quix_app.py BOOTSTRAP IN_TOPIC OUT_TOPIC EVENTS

Event by event, as a per-message framework runs it: the stream's state in Quix's state store
(previous value and direction, the log of the step scale), the detector's normalized features
``[asinh(step / s), 0, previous direction]`` (the detector also draws steps below 1e-3 of
``s`` up, ``detector.model.features.compress``: one step in a thousand of uniform data, at the
same cost), the converted ``seed`` step through LiteRT (one call per event), a flag record out.
Stops after EVENTS and prints a JSON line: events, seconds from the first processed event to
the last, events/s. Needs quixstreams, numpy and ai-edge-litert, not this project.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from quixstreams import Application
from quixstreams.models.topics.manager import TopicConfig, TopicManager

SCALE_RATE = 0.1  # detector.task.rule: log s <- (1 - r) log s + r log |step| (no dust: uniform)

# The local broker's DescribeConfigs returns no configs, and Quix reads retention.ms from
# them to configure a state store's changelog topic (which is off here anyway).
TopicManager.derive_topic_config = classmethod(lambda cls, topics: TopicConfig(
    num_partitions=max(t.broker_config.num_partitions or 1 for t in topics),
    replication_factor=1, extra_config={"retention.bytes": "-1", "retention.ms": "-1"}))


def main() -> None:
    bootstrap, in_topic, out_topic, expect = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    model = Path(__file__).resolve().parents[1] / "detector" / "model" / "shipped" / "seed.tflite"
    interpreter = Interpreter(model_content=model.read_bytes(), num_threads=1)
    step = interpreter.get_signature_runner(next(iter(interpreter.get_signature_list())))
    app = Application(broker_address=bootstrap, consumer_group="quix-detector",
                      auto_offset_reset="earliest", use_changelog_topics=False,
                      state_dir=f"/tmp/quix-state-{time.time_ns()}")
    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def detect(value: dict, state) -> dict:
        x = float(value["value"])
        prev = state.get("prev")
        out = {"stream": value["stream"], "seq": value["seq"], "ts": value.get("ts")}
        if prev is None:
            out.update(flag=0, probability=0.0)
            direction = 0
        else:
            step_ = x - prev
            log_scale = state.get("log_scale")
            if step_:
                log_step = math.log(abs(step_))
                log_scale = log_step if log_scale is None else (
                    (1 - SCALE_RATE) * log_scale + SCALE_RATE * log_step)
                state.set("log_scale", log_scale)
            u = math.asinh(step_ / math.exp(log_scale)) if log_scale is not None else 0.0
            direction = (step_ > 0) - (step_ < 0)
            features = np.array([[u, 0.0, state.get("dir")]], np.float32)
            probability = float(step(x=features)["probability"][0])
            out.update(flag=int(probability > 0.5), probability=probability)
        state.set("prev", x)
        state.set("dir", direction)
        out["detected_at"] = time.time()
        now = time.monotonic()
        seen["first"] = seen["first"] or now
        seen["last"] = now
        seen["n"] += 1
        if seen["n"] >= expect:
            app.stop()
        return out

    frame = app.dataframe(app.topic(in_topic, value_deserializer="json"))
    frame.apply(detect, stateful=True).to_topic(app.topic(out_topic, value_serializer="json"))
    app.run()
    seconds = seen["last"] - seen["first"]
    print(json.dumps({"events": seen["n"], "seconds": seconds,
                      "events_per_s": seen["n"] / seconds if seconds else 0.0}))


if __name__ == "__main__":
    main()

"""The producer: random values for many streams (or CSV columns), keyed by stream id, into Kafka."""

"""The producer: random values for many streams, keyed by stream id, into Kafka."""

"""The stream core, without Kafka: records in (``mapping``, ``codec``), per-stream state in
compact arrays (``state``), the detection over whole streams at a time (``engine``, over
``segments``), trend runs (``runs``)."""

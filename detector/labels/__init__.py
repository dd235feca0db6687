"""Ground truth on a topic: label records, their join with the flags, live scores, backtests.

Pure modules (``codec``, ``book``, ``truth``, ``matcher``) know no Kafka; ``reading``,
``topic``, ``history``, ``readback`` and ``scorer`` read and write the topics; ``backtest``
replays the input's history through two model versions.
"""

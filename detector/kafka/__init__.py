"""The Kafka side: clients and topics, the output path (``outbox``), the checkpoint protocol,
the partitions of this member (``rebalance``), its consumer group (``group_watch``,
``predecessors``) and the loop that calls them all (``pipeline``)."""

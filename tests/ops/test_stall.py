"""The stall watch: a partition that has not moved for three checkpoints while records wait is
stalled; one that moves, is idle, or only has a transaction's commit marker past it is not."""

from detector.ops.stall import Progress, StallWatch, waiting


def test_a_partition_that_does_not_move_with_records_waiting_is_stalled_after_three():
    watch = StallWatch(checkpoints=3)
    for n, lag in enumerate((10, 40, 70)):
        watch.observe({0: Progress(100, lag), 1: Progress(200 + n, 5)})
        assert watch.why() == ""  # not yet three checkpoints in a row without progress
    watch.observe({0: Progress(100, 100), 1: Progress(210, 5)})
    assert watch.stalled() == {0: 100}
    assert watch.why() == ("partition(s) 0 (100 records waiting) not moved for 3 checkpoints: "
                           "the broker is not serving them")
    watch.observe({0: Progress(101, 99), 1: Progress(211, 5)})  # it moved: ready again
    assert watch.stalled() == {}


def test_idle_and_revoked_partitions_are_never_stalled():
    watch = StallWatch(checkpoints=2)
    for _ in range(5):
        watch.observe({0: Progress(100, 0)})  # nothing waiting: idle, not stalled
    assert watch.stalled() == {}
    for _ in range(3):
        watch.observe({0: Progress(100, 0), 1: Progress(7, 3)})
    assert watch.stalled() == {1: 3}
    watch.observe({0: Progress(100, 0)})  # partition 1 revoked: forgotten
    assert watch.stalled() == {}
    watch.observe({0: Progress(100, 0), 1: Progress(7, 3)})  # back: counted afresh
    assert watch.stalled() == {}


def test_a_commit_marker_past_the_last_record_is_not_waiting():
    """A transactional producer's last record at offset 41 is followed by its commit marker at
    42: the end offset is 43, the committed position 42, and the consumer, having skipped the
    marker, fetches from 43. Nothing is waiting."""
    assert waiting(processed=42, fetch_position=43, end=43) == 0
    assert waiting(processed=42, fetch_position=42, end=50) == 8  # records fetched next
    assert waiting(processed=42, fetch_position=None, end=50) == 8  # no fetch position yet

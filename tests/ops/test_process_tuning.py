"""The process's memory settings (``detector.ops.process_tuning``): real effects on this process."""

from pathlib import Path

import pytest

from detector.ops.process_tuning import _glibc, cap_malloc_arenas, release_free_memory

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def test_the_arena_cap_is_accepted():
    assert cap_malloc_arenas()


def test_freed_memory_between_live_blocks_goes_back_to_the_system():
    """What a poll leaves: transient buffers freed between long-lived ones, which glibc keeps
    (not at the top of its heap) until it is asked to hand them back."""
    kept, transient = [], []
    for _ in range(200):
        transient.extend(bytearray(2048) for _ in range(256))  # 0.5 MiB, then one kept
        kept.append(bytearray(2048))
    before = rss_bytes()
    transient.clear()
    freed = rss_bytes()
    release_free_memory()
    after = rss_bytes()
    assert freed - after > 200 * 256 * 2048 / 2, (before, freed, after)
    assert len(kept) == 200

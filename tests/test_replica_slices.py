"""How an epoch is cut into replica slices under a strategy, and each slice's augmentation key
(cnnspec.training.distributed.replica_slices): checked against the epoch itself."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cnnspec.training.distributed import replica_slices


@given(n=st.integers(1, 300), batch=st.integers(1, 64), workers=st.integers(1, 3),
       local=st.integers(1, 3))
def test_the_slices_of_all_workers_cover_the_epoch_once_each_with_its_own_key(
        n: int, batch: int, workers: int, local: int) -> None:
    replicas = workers * local
    rows = [row for worker in range(workers)
            for row in replica_slices(n, batch, replicas, worker, local)]
    batches = -(-n // batch)
    assert len(rows) == batches * replicas
    # every image of the epoch in exactly one slice
    covered = sorted(i for first, count, _, _ in rows for i in range(first, first + count))
    assert covered == list(range(n))
    # one key per slice: augmentation draws never repeat within an epoch
    keys = [key for *_, key in rows]
    assert sorted(keys) == list(range(batches * replicas))
    for first, count, size, key in rows:
        k, g = divmod(key, replicas)
        start = k * batch
        assert size == min(batch, n - start)  # the global batch the slice belongs to
        # replica g's share of global batch k: as even as it goes
        assert first == start + g * size // replicas
        assert count == (g + 1) * size // replicas - g * size // replicas


def test_one_replica_takes_the_unsharded_batches_and_keys() -> None:
    """With one replica each slice is a whole batch keyed by its number, as the unsharded
    pipeline keys its batches, so augmentation is the same with and without a strategy."""
    assert replica_slices(10, 4, 1, 0, 1) == [(0, 4, 4, 0), (4, 4, 4, 1), (8, 2, 2, 2)]
    # two workers of one replica each: worker 1 takes the second half of every batch
    assert replica_slices(10, 4, 2, 1, 1) == [(2, 2, 4, 1), (6, 2, 4, 3), (9, 1, 2, 5)]

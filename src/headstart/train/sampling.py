"""Batch samplers beyond the trainer's length bucketing.

:func:`no_duplicate_batches` is :func:`headstart.train.trainer.bucketed_batches` (shuffle, pools
of ``50 x batch_size`` sorted by length, batches shuffled) with one more rule: no batch holds two
examples that share a key. Ranking losses with in-batch negatives
(:class:`headstart.train.losses.MultipleNegativesRankingLoss`) need it: when two examples in a
batch have the same query, or the same positive text, each one's positive is scored as a
negative of the other's query although it is a correct answer (a false negative), and the loss
pushes apart what it should pull together. sentence-transformers' ``NoDuplicatesBatchSampler``
solves the same problem without length bucketing.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

POOL_BATCHES = 50
"""Batches per length-sorting pool; the same as the trainer's (a unit test holds them equal)."""

Key = Hashable | tuple[Hashable, ...]


def no_duplicate_batches(keys: Sequence[Key], lengths: Sequence[int], batch_size: int,
                         rng: np.random.Generator) -> list[list[int]]:
    """One epoch of index batches of similar lengths, no two examples of a batch sharing a key.

    ``keys[i]`` is example ``i``'s key: a string (e.g. its query text) or a tuple of components
    (e.g. ``(query, positive)`` or ``(query, positive, negative)``). Two examples conflict when any
    component of one equals any component of the other, in whatever position: a positive that is
    another example's query text conflicts too (sentence-transformers' ``NoDuplicatesBatchSampler``
    reads a row's texts as one set the same way). Prefix the components (``"q:" + text``) to
    compare only by position. ``None`` components are ignored (an example without a negative).

    How it is built, and what it costs. The examples are shuffled and cut into pools of
    ``50 x batch_size`` as in :func:`~headstart.train.trainer.bucketed_batches`; each pool is
    sorted by length (longest first) and placed first-fit: an example joins the earliest open
    batch of its pool that has room and none of its keys, else opens a new one; a batch closes
    when full. Examples that cannot be placed without a duplicate thus go to later batches, which
    hold examples of nearly the same length. The open, unfilled batches left at the end of a pool
    are not emitted: their examples move into the next pool; in the last pool, the unfilled
    batches are merged where a move or a swap with another batch allows (the swap adding the least
    padding). An epoch usually has ``ceil(n / batch_size)`` batches, like ``bucketed_batches``,
    but not always: a key held by ``m`` examples needs at least ``m`` batches, and heavy collisions
    can leave one more (a caller must count the batches it gets). Every index appears
    exactly once; nothing is dropped. Determinism: the result depends on ``rng`` and the inputs
    only, and when no two examples share a key it is exactly ``bucketed_batches``' result for the
    same ``rng`` state.

    Padding cost against ``bucketed_batches`` (padded tokens = sum over batches of longest length
    x batch size; measured in ``tests/unit/test_sampling.py``: batch 32, 6,000 examples with
    lognormal lengths, 3 seeds): with 5% of the queries duplicated (in groups of 2 to 5), at most
    0.04% more; with every positive shared by 5 queries (a reading-comprehension layout such as
    xquad: one paragraph, several questions), 0.7-1.1% more (0.2% at 20,000 examples); both with
    the same batch count. A key that dominates the data costs much more: one query in 10% of
    20,000 examples needs 2,000 batches instead of 625 and 1.64x the padded tokens.

    Cost: ``O(n log n)`` for the sorts plus, per example, the open batches it skips, each of
    which holds one of its keys.
    """
    n = len(lengths)
    if len(keys) != n:
        raise ValueError(f"got {len(keys)} keys for {n} lengths: one key per example")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
    keysets = [_components(k) for k in keys]
    perm = rng.permutation(n)
    pool = batch_size * POOL_BATCHES
    batches: list[list[int]] = []
    carry: list[int] = []
    for start in range(0, n, pool):
        last = start + pool >= n
        # carried examples first, so that a stable sort keeps them ahead of equal-length ones
        chunk = sorted(carry + perm[start : start + pool].tolist(), key=lambda i: -lengths[i])
        full, unfilled = _first_fit(chunk, keysets, batch_size)
        batches.extend(full)
        if last:
            _merge_tail(full, unfilled, keysets, lengths, batch_size)
            batches.extend(b for b in unfilled if b)
            carry = []
        else:
            carry = [i for b in unfilled for i in b]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def _components(key: Key) -> tuple[Hashable, ...]:
    """A key's distinct, non-None components, in a fixed order."""
    parts = key if isinstance(key, tuple) else (key,)
    return tuple(dict.fromkeys(p for p in parts if p is not None))


def _first_fit(chunk: list[int], keysets: list[tuple[Hashable, ...]],
               batch_size: int) -> tuple[list[list[int]], list[list[int]]]:
    """Place ``chunk`` (in its order) first-fit into batches without a shared key component.

    Returns the full batches in the order they filled, and the unfilled ones in creation order.
    """
    full: list[list[int]] = []
    open_batches: dict[int, list[int]] = {}  # insertion-ordered: the earliest open batch first
    holders: dict[Hashable, set[int]] = {}  # key component -> the open batches that hold it
    next_id = 0
    for i in chunk:
        ks = keysets[i]
        target = None
        # A component held by every open batch rules them all out without a scan.
        if not any(len(holders.get(k, ())) == len(open_batches) for k in ks):
            for bid in open_batches:  # only batches holding one of ks are skipped
                if not any(bid in holders.get(k, ()) for k in ks):
                    target = bid
                    break
        if target is None:
            target, next_id = next_id, next_id + 1
            open_batches[target] = []
        batch = open_batches[target]
        batch.append(i)
        for k in ks:
            holders.setdefault(k, set()).add(target)
        if len(batch) == batch_size:
            full.append(open_batches.pop(target))
            for j in batch:
                for k in keysets[j]:
                    held = holders[k]
                    held.discard(target)
                    if not held:
                        del holders[k]
    return full, list(open_batches.values())


def _merge_tail(full: list[list[int]], unfilled: list[list[int]], keysets: list[tuple[Hashable, ...]],
                lengths: Sequence[int], batch_size: int) -> None:
    """Empty the last pool's latest unfilled batches into its earlier ones, in place, where keys
    allow: an example moves into an earlier unfilled batch, or takes the place of an example of
    another batch that moves there instead (of all such moves, the one adding the least padding).
    First-fit cannot do this (a batch it skipped only gains keys), and without it the epoch's tail
    often ends in one batch more than ``ceil(n / batch_size)``.

    Only tried when the unfilled batches hold at most two batches' worth of examples (the usual
    tail); a dominant key leaves many singletons that no swap can merge.
    """
    if len(unfilled) < 2 or sum(map(len, unfilled)) > 2 * batch_size:
        return

    def clashes(i: int, batch: list[int]) -> list[int]:
        ks = keysets[i]
        return [j for j in batch if any(k in ks for k in keysets[j])]

    def cost(batch: list[int], add: int, remove: int | None = None) -> int:
        """Padded tokens ``batch`` gains when ``add`` joins it (in place of ``remove``)."""
        after = [lengths[j] for j in batch if j != remove] + [lengths[add]]
        return max(after) * len(after) - (max(lengths[j] for j in batch) * len(batch) if batch else 0)

    def place(x: int, receivers: list[list[int]], donors: list[list[int]]) -> bool:
        best: tuple[int, list[int], int | None, list[int] | None] | None = None  # (cost, r, y, d)
        for r in receivers:  # straight into an earlier unfilled batch
            if len(r) < batch_size and not clashes(x, r):
                c = cost(r, x)
                if best is None or c < best[0]:
                    best = (c, r, None, None)
        for d in donors:  # or swap: x takes y's place in d, y moves into an unfilled batch
            blocking = clashes(x, d)
            for y in (blocking if len(blocking) == 1 else d if not blocking else []):
                for r in receivers:
                    if r is not d and len(r) < batch_size and not clashes(y, r):
                        c = cost(d, x, remove=y) + cost(r, y)
                        if best is None or c < best[0]:
                            best = (c, r, y, d)
        if best is None:
            return False
        _, r, y, d = best
        if d is None:
            r.append(x)
        else:
            d[d.index(y)] = x
            r.append(y)
        return True

    while len(unfilled) >= 2:
        donor, receivers = unfilled[-1], unfilled[:-1]
        while donor and place(donor[-1], receivers, full + receivers):
            donor.pop()
        if donor:
            return
        unfilled.pop()


__all__ = ["POOL_BATCHES", "no_duplicate_batches"]

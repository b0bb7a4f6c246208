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
    ``50 x batch_size`` and each pool is sorted by length (longest first) and cut into batches,
    exactly as :func:`~headstart.train.trainer.bucketed_batches` does. Then each duplicate is
    repaired by a swap: an example whose key its batch already holds trades places with an
    example of the nearest batch (the next or the previous one, else further out) where both fit
    without a duplicate, of those swaps the one adding the least padding, so it lands among
    examples of nearly its length. An example no
    swap can place (a key held by more examples than the pool has batches) moves to the next pool;
    in the last pool such examples fill extra batches first-fit, which are then merged where a
    move or a swap with another batch allows (the swap adding the least padding). An epoch thus
    has ``ceil(n / batch_size)`` batches, like ``bucketed_batches``, unless a key held by ``m``
    examples needs more (``m`` batches at least; a caller must count the batches it gets). Every
    index appears exactly once; nothing is dropped. Determinism: the result depends on ``rng``
    and the inputs only, and when no two examples share a key it is exactly ``bucketed_batches``'
    result for the same ``rng`` state.

    Padding cost against ``bucketed_batches`` (padded tokens = sum over batches of longest length
    x batch size; measured in ``tests/unit/test_sampling.py``: batch 32, 6,000 examples with
    lognormal lengths, 3 seeds): with 5% of the queries duplicated (in groups of 2 to 5), none;
    with every positive shared by 5 queries (a reading-comprehension layout such as xquad: one
    paragraph, several questions), 1.0-1.7% more (0.0-0.7% at 20,000 examples); with positives
    shared by 1 to 17 questions (xquad's own spread), 0.4-2.1% more, and 8.7-9.7% more when the
    questions of a paragraph also share its length (they must spread over as many batches as
    there are questions); always with the same batch count. An earlier first-fit placement left
    the xquad layout's tail in many small batches (876 XQuAD pairs: 40 batches, 16 of them
    partial, where 28 do: fewer in-batch negatives per step). A key that dominates the data costs
    more: one query in 10% of 20,000 examples needs 2,000 batches
    instead of 625.

    Cost: ``O(n log n)`` for the sorts plus, per duplicate, the batches scanned for a swap
    (usually the neighbouring one).
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
        placed, overflow = _bucket_and_repair(chunk, keysets, lengths, batch_size)
        if last:
            full = [b for b in placed if len(b) == batch_size]
            unfilled = [b for b in placed if len(b) < batch_size] + _first_fit(overflow, keysets, batch_size)
            _merge_tail(full, unfilled, keysets, lengths, batch_size)
            batches.extend(full)
            batches.extend(b for b in unfilled if b)
            carry = []
        else:
            batches.extend(placed)
            carry = overflow
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def _components(key: Key) -> tuple[Hashable, ...]:
    """A key's distinct, non-None components, in a fixed order."""
    parts = key if isinstance(key, tuple) else (key,)
    return tuple(dict.fromkeys(p for p in parts if p is not None))


def _bucket_and_repair(chunk: list[int], keysets: list[tuple[Hashable, ...]], lengths: Sequence[int],
                       batch_size: int) -> tuple[list[list[int]], list[int]]:
    """``chunk`` (sorted by length) cut into batches, each duplicate swapped into the nearest
    batch that takes it; returns the batches and the examples no swap could place."""
    batches = [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    held: list[dict[Hashable, int]] = []  # per batch: key component -> how many examples hold it
    for b in batches:
        counts: dict[Hashable, int] = {}
        for i in b:
            for k in keysets[i]:
                counts[k] = counts.get(k, 0) + 1
        held.append(counts)

    def fits(i: int, bid: int, leaving: int | None) -> bool:
        """Whether ``i`` joins batch ``bid`` (where ``leaving`` leaves it) without a duplicate."""
        gone = keysets[leaving] if leaving is not None else ()
        return all(held[bid].get(k, 0) - (k in gone) == 0 for k in keysets[i])

    def move(i: int, src: int, dst: int) -> None:
        for k in keysets[i]:
            held[src][k] -= 1
            if not held[src][k]:
                del held[src][k]
            held[dst][k] = held[dst].get(k, 0) + 1

    overflow: list[int] = []
    for bid in range(len(batches)):
        pos = 0
        while pos < len(batches[bid]):
            x = batches[bid][pos]
            if all(held[bid][k] == 1 for k in keysets[x]):
                pos += 1
                continue
            # x duplicates a key of its batch: out it goes, and a partner from the nearest batch in
            for k in keysets[x]:
                held[bid][k] -= 1
                if not held[bid][k]:
                    del held[bid][k]
            batches[bid].pop(pos)
            swapped = False
            for ring in _rings(bid, len(batches)):
                # of the swaps that this distance allows, the one adding the least padding
                best: tuple[int, int, int] | None = None  # (cost, other, j)
                here = max((lengths[i] for i in batches[bid]), default=0)
                for other in ring:
                    there = max(lengths[i] for i in batches[other])
                    for j, y in enumerate(batches[other]):
                        if fits(x, other, y) and fits(y, bid, None):
                            rest = max((lengths[i] for i in batches[other] if i != y), default=0)
                            c = (max(rest, lengths[x]) - there) * len(batches[other]) + \
                                max(0, lengths[y] - here) * (len(batches[bid]) + 1)
                            if best is None or c < best[0]:
                                best = (c, other, j)
                if best is not None:
                    _, other, j = best
                    y = batches[other][j]
                    batches[other][j] = x
                    for k in keysets[x]:
                        held[other][k] = held[other].get(k, 0) + 1
                    move(y, other, bid)
                    batches[bid].insert(pos, y)
                    swapped = True
                    break
            if swapped:
                pos += 1
            else:
                overflow.append(x)
    return [b for b in batches if b], overflow


def _rings(bid: int, count: int):
    """The other batch ids by distance from ``bid``: the next and the previous one, then further out."""
    for d in range(1, count):
        ring = [b for b in (bid + d, bid - d) if 0 <= b < count]
        if ring:
            yield ring


def _first_fit(chunk: list[int], keysets: list[tuple[Hashable, ...]], batch_size: int) -> list[list[int]]:
    """Place ``chunk`` (in its order) first-fit into batches without a shared key component."""
    batches: list[list[int]] = []
    held: list[set[Hashable]] = []
    for i in chunk:
        ks = keysets[i]
        for b, h in zip(batches, held):
            if len(b) < batch_size and not any(k in h for k in ks):
                b.append(i)
                h.update(ks)
                break
        else:
            batches.append([i])
            held.append(set(ks))
    return batches


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

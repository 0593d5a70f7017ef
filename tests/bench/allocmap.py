"""The reference scaling family: N threads x M operations on one allocation map.

Each thread cycles through ``pkey_alloc``, ``pkey_mprotect`` and ``pkey_free``
(operation j is the (j mod 3)-th of those), on one process's allocation map.

- **locked**: each operation is one atomic step, as under the mmap lock.
  Verdict Never: no key is ever owned by two threads at once.
- **lock-free**: ``pkey_alloc`` is split into an unlocked read of the map (find
  the lowest free key) and a locked set of that bit. Verdict Sometimes: two
  threads can read the same free key and both set it.

The family is an :class:`pkeyspec.explore.Program` over a compact immutable
state, ``(map, twice, pcs, owned, candidate)``: the map's bits, whether a key
has been owned by two threads at once, each thread's pc, the key each thread
owns (-1: none) and, lock-free only, the key its unlocked read found (-1:
none). The map logic is the model's own: each step runs
:mod:`pkeyspec.keys` (``mm_pkey_alloc``, ``mm_pkey_is_allocated``,
``mm_pkey_free``) on a tiny stand-in for ``struct mm_struct``.

tests/bench/alloc_locked.pml and alloc_lockfree.pml are the same family in
Promela, for Spin.
"""

from __future__ import annotations

from pkeyspec import keys
from pkeyspec.mm import Mm

ALLOC, MPROTECT, FREE, READ, SET = "pkey_alloc", "pkey_mprotect", "pkey_free", "read map", "set bit"
#: Steps that only read the map: two of them commute.
READERS = frozenset({MPROTECT, READ})
#: ``Mm.new(ospke=True)``: key 0 is allocated when the mm is created.
INITIAL_MAP = Mm.new(True).pkey_allocation_map


class TinyMm:
    """The three fields of an mm that :mod:`pkeyspec.keys` reads, around one map value."""

    __slots__ = ("ospke", "pkey_allocation_map", "execute_only_pkey")

    def __init__(self, amap: int) -> None:
        self.ospke = True
        self.pkey_allocation_map = amap
        self.execute_only_pkey = -1


def alloc(amap: int) -> tuple[int, int]:
    """``mm_pkey_alloc``: (the lowest free key, the new map)."""
    mm = TinyMm(amap)
    key = keys.mm_pkey_alloc(mm)
    return key, mm.pkey_allocation_map


def lowest_free(amap: int) -> int:
    """The unlocked read: the key ``mm_pkey_alloc`` would pick, without setting it."""
    return keys.mm_pkey_alloc(TinyMm(amap))


def set_bit(amap: int, key: int) -> int:
    """The locked set: the last line of ``mm_pkey_alloc`` (``map |= 1 << pkey``)."""
    return amap | (1 << key)


def is_allocated(amap: int, key: int) -> bool:
    """``mm_pkey_is_allocated``: the check ``pkey_mprotect`` makes under the lock."""
    return keys.mm_pkey_is_allocated(TinyMm(amap), key)


def free(amap: int, key: int) -> int:
    """``mm_pkey_free``: the map without ``key`` (unchanged, -EINVAL, if it was not set)."""
    mm = TinyMm(amap)
    keys.mm_pkey_free(mm, key)
    return mm.pkey_allocation_map


def _put(values: tuple, i: int, value) -> tuple:
    return values[:i] + (value,) + values[i + 1:]


class AllocMap:
    """N threads x M operations (explore.Program)."""

    def __init__(self, threads: int, operations: int, *, lockfree: bool = False) -> None:
        if threads > 15:
            raise ValueError("at most 15 threads: each may own one of keys 1..15")
        self.lockfree = lockfree
        self.n, self.m = threads, operations
        steps: list[str] = []
        for j in range(operations):
            op = (ALLOC, MPROTECT, FREE)[j % 3]
            steps += [READ, SET] if op == ALLOC and lockfree else [op]
        self.steps = tuple(steps)
        self.thread_names = tuple(f"T{t}" for t in range(threads))
        self.name = f"{'lock-free' if lockfree else 'locked'} {threads}x{operations}"
        #: The stated verdict of "exists: a key owned by two threads at once".
        self.result = "Sometimes" if lockfree and threads > 1 else "Never"

    def initial(self) -> tuple:
        n = self.n
        return (INITIAL_MAP, False, (0,) * n, (-1,) * n, (-1,) * n)

    def length(self, thread: int) -> int:
        return len(self.steps)

    def run(self, state: tuple, t: int, i: int) -> tuple:
        amap, twice, pcs, owned, cand = state
        pcs = _put(pcs, t, i + 1)
        kind = self.steps[i]
        if kind == ALLOC or kind == SET:
            if kind == ALLOC:
                key, amap = alloc(amap)
            else:
                key, amap = cand[t], set_bit(amap, cand[t])
                cand = _put(cand, t, -1)
            twice = twice or key in owned          # owned[t] is -1 here
            owned = _put(owned, t, key)
        elif kind == READ:
            cand = _put(cand, t, lowest_free(amap))
        elif kind == MPROTECT:
            is_allocated(amap, owned[t])           # the check; the state has no VMA to change
        else:
            amap = free(amap, owned[t])
            owned = _put(owned, t, -1)
        return (amap, twice, pcs, owned, cand)

    def dependent(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        # Every step touches the map; only two readers commute.
        return a[0] == b[0] or not (self.steps[a[1]] in READERS and self.steps[b[1]] in READERS)

    def fingerprint(self, state: tuple) -> tuple:
        return state

    def outcome(self, state: tuple) -> tuple[bool, tuple]:
        amap, twice, _, owned, _ = state
        return twice, (("owned twice", twice), ("map", hex(amap)), ("owned", owned))

    def label(self, thread: int, index: int) -> str:
        return f"{self.thread_names[thread]}: {self.steps[index]}"

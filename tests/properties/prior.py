"""Random prior histories: what a process did before the call a property is about.

A :func:`worlds` example is a process on a generated machine (kernel, CPU
vendor, with or without PKU) that first maps an *arena* of ``ARENA_PAGES``
read-write pages, each holding a known byte, and then runs a generated
history: ``pkey_alloc``, ``pkey_free``, ``mmap`` and ``munmap`` in the arena,
``pkey_mprotect`` (key -1 is a plain ``mprotect``, and a plain
``mprotect(PROT_EXEC)`` is a step of its own, so that many histories take an
execute-only key), ``wrpkru`` and ``clone``, each made by one of the
process's threads. A step that fails is part of the history too. So the
call under test meets VMAs with different keys and prots, holes, freed and
reused keys, an execute-only key, and threads whose PKRU is anything.

The helpers at the end read what Linux's rules need straight from the
model's state (the VMAs, the allocation map, a thread's PKRU); they never
call the model's own checks.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from hypothesis import strategies as st

from pkeyspec import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_EXEC, System

ARENA_PAGES = 8
#: The kernels the model knows, and stable releases on both sides of a version boundary.
KERNELS = ("6.1", "6.12", "7.2")
STABLE = ("6.12.4", "6.12.5")
#: Every combination of PROT_READ, PROT_WRITE and PROT_EXEC.
PROTS = tuple(range(8))
#: Integers as a C caller may pass them: small, boundary and huge, of either sign.
ANY_INT = st.one_of(
    st.integers(), st.integers(-2**70, 2**70),
    st.sampled_from([0, 1, -1, -2, 3, 4, 15, 16, 2**31 - 1, -2**31, 2**32 - 1, 2**32, 2**32 + 1,
                     2**63, 2**64 - 1, 2**64, 9999, 0x1000, 0x01000000, 0x02000000, 0x03000000]))
#: Keys a history hands to pkey_mprotect and pkey_free: -1 (half the time), every
#: hardware key, and one past them.
HISTORY_KEYS = st.one_of(st.just(-1), st.integers(0, 16))


def mostly(good, *bad):
    """``good`` three times in four, else one of ``bad``."""
    return st.integers(0, 3).flatmap(lambda i: st.one_of(*bad) if i == 3 else good)


def _step(pku: bool, exec_only: bool):
    prot = st.sampled_from([p for p in PROTS if exec_only or p != PROT_EXEC])
    page, pages = st.integers(0, ARENA_PAGES - 1), st.integers(1, 3)
    who = st.integers(0, 2)
    steps = [
        st.tuples(st.just("pkey_alloc"), who, st.integers(0, 3)),
        st.tuples(st.just("pkey_free"), who, HISTORY_KEYS),
        st.tuples(st.just("mmap"), who, page, pages, prot),
        st.tuples(st.just("munmap"), who, page, pages),
        st.tuples(st.just("pkey_mprotect"), who, page, pages, prot, HISTORY_KEYS),
        st.tuples(st.just("clone"), who),
    ]
    if exec_only:
        steps.append(st.tuples(st.just("pkey_mprotect"), who, page, pages, st.just(PROT_EXEC),
                               st.just(-1)))
    if pku:     # without PKU, WRPKRU is #UD: the process would die of SIGILL
        steps.append(st.tuples(st.just("wrpkru"), who, st.integers(0, 2**32 - 1)))
    return st.one_of(steps)


def histories(pku: bool = True, exec_only: bool = True, max_size: int = 8):
    """Lists of steps; ``exec_only=False`` never asks for exactly PROT_EXEC."""
    return st.lists(_step(pku, exec_only), max_size=max_size)


@dataclass
class World:
    """A process after its history: ``t`` is the main thread, the one that makes the call."""

    system: System
    history: list
    arena: int = 0
    threads: list = field(default_factory=list)

    @property
    def t(self):
        return self.threads[0]

    @property
    def mm(self):
        return self.threads[0].process.mm

    def page(self, i: int) -> int:
        return self.arena + i * PAGE_SIZE

    def __repr__(self) -> str:
        s = self.system
        return (f"World(kernel={'.'.join(map(str, s.kernel))}"
                f"{'' if s.kernel_patch is None else f'.{s.kernel_patch}'}, "
                f"pku={s.pku}, {s.cpu_vendor}, history={self.history!r})")


def run(system: System, history: list) -> World:
    """Spawn a process on ``system``, map and fill the arena, then make the history's calls."""
    t = system.spawn()
    w = World(system, [], threads=[t])
    w.arena = t.mmap(0, ARENA_PAGES * PAGE_SIZE, 3, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(ARENA_PAGES):
        t.store(w.page(i), 0x10 + i)
    return replay(w, history)


def replay(w: World, history: list) -> World:
    """Make the calls of ``history`` in ``w`` (a failing call is ignored) and return ``w``."""
    w.history = w.history + list(history)
    for name, who, *args in history:
        caller = w.threads[who % len(w.threads)]
        try:
            if name == "pkey_alloc":
                caller.pkey_alloc(0, *args)
            elif name == "pkey_free":
                caller.pkey_free(*args)
            elif name == "mmap":
                first, n, prot = args
                caller.mmap(w.page(first), n * PAGE_SIZE, prot,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
            elif name == "munmap":
                first, n = args
                caller.munmap(w.page(first), n * PAGE_SIZE)
            elif name == "pkey_mprotect":
                first, n, prot, key = args
                caller.pkey_mprotect(w.page(first), n * PAGE_SIZE, prot, key)
            elif name == "wrpkru":
                caller.wrpkru(*args)
            elif name == "clone":
                w.threads.append(caller.clone())
        except OSError:
            pass
    return w


@st.composite
def worlds(draw, pku=(True,), kernels=KERNELS, vendors=("intel", "amd"), exec_only=True,
           max_size=8):
    """A :class:`World`: a machine drawn from ``pku`` x ``kernels`` x ``vendors``, and a history."""
    has_pku = draw(st.sampled_from(pku))
    system = System(pku=has_pku, kernel=draw(st.sampled_from(kernels)),
                    cpu_vendor=draw(st.sampled_from(vendors)))
    return run(system, draw(histories(has_pku, exec_only, max_size)))


# --- Linux's rules, read from the state ----------------------------------------------------

def c_int(value: int) -> int:
    """A C ``int``: the low 32 bits, two's complement."""
    value %= 2**32
    return value - 2**32 if value >= 2**31 else value


def map_bits(mm) -> set[int]:
    """The keys whose bit is set in the allocation map."""
    return {k for k in range(16) if mm.pkey_allocation_map >> k & 1}


def user_keys(mm) -> list[int]:
    """The keys the system calls accept: set in the map, 0 to 15 (with PKU), not execute-only."""
    if not mm.ospke:
        return []
    return sorted(k for k in map_bits(mm) if k != mm.execute_only_pkey)


def free_keys(mm) -> list[int]:
    """The keys pkey_alloc can still hand out, lowest first."""
    return [k for k in range(16) if k not in map_bits(mm)] if mm.ospke else []


def rights(pkru: int, key: int) -> int:
    """The two PKRU bits of ``key``: AD is 1, WD is 2."""
    return pkru >> (2 * key) & 3


def key_of(mm, addr: int):
    """The key of the VMA holding ``addr``; None when nothing is mapped there."""
    v = mm.find_vma(addr)
    return None if v is None else v.pkey


def byte_at(mm, addr: int) -> int:
    """The byte of private memory at ``addr`` (the arena's; 0 on a page mapped afresh)."""
    return mm.memory.get(addr, 0)


def exec_only(mm, addr: int) -> bool:
    """Is the VMA at ``addr`` exactly PROT_EXEC and tagged with the execute-only key?"""
    v = mm.find_vma(addr)
    return v is not None and v.flags & 7 == PROT_EXEC and v.pkey == mm.execute_only_pkey


def mapped_run(mm, addr: int, n: int) -> int:
    """How many of the ``n`` pages from ``addr`` are mapped before the first hole."""
    for i in range(n):
        if mm.find_vma(addr + i * PAGE_SIZE) is None:
            return i
    return n


def outcome(call, *args):
    """What the call returned, or the name of its errno."""
    try:
        return call(*args)
    except OSError as e:
        return errno.errorcode[e.errno]


def twin(w: World) -> World:
    """An independent copy of ``w``: the same state in another System."""
    system = w.system.copy()
    tids = {t.tid: t for t in system.processes[w.t.process.pid].threads}
    return World(system, w.history, w.arena, [tids[t.tid] for t in w.threads])

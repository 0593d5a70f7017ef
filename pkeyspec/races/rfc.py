"""Races from the 2016 review of the RFC ``pkey_get``/``pkey_set`` system calls.

Mel Gorman asked three things: whether a successful ``pkey_get`` means the
key is still the caller's (it does not: "like a stat()"), whether two
concurrent ``pkey_set`` calls can lose an update (they cannot: PKRU is
per thread), and whether lockless readers can see the map half-written (not
with ``WRITE_ONCE``).
"""

from __future__ import annotations

from .. import rfc as rfc_calls
from ..hardware import pkru_rights, pkru_with_rights
from ..system import System
from ..uapi import PKEY_DISABLE_ACCESS
from . import Race, World, local, race, register, syscall


def _two_threads(**values) -> World:
    system = System()
    a = system.spawn()
    b = a.clone(stack=a.sp - 0x10000)
    return World(system, {"A": a, "B": b}, **values)


def _get_stat_setup() -> World:
    w = _two_threads()
    w.v["k"] = w.A.pkey_alloc(0, 0)
    return w


GET_STAT_A = (
    local("pkey_get(k, 0): READ_ONCE(map) says k is allocated",
          lambda w: w.do("seen", rfc_calls.read_map, w.A, w.v["k"], 0), reads=("map",)),
    register("pkey_get(k, 0) returns A's rights for k",
             lambda w: w.do("get", rfc_calls.get_rights, w.A, w.v["k"], w.v["seen"]), write=False),
)

race(Race(
    name="MP+rfcget+freealloc",
    family="rfc",
    question=(
        "A asks the RFC's pkey_get for the rights of its key k while B frees k and "
        "allocates a key for its own data. Can pkey_get succeed for a k that now names "
        "B's allocation? Dave Hansen: a valid return means only that the key was "
        "allocated at some point during the call, like stat()."),
    setup=_get_stat_setup,
    threads={
        "A": GET_STAT_A,
        "B": (
            syscall("pkey_free(k)", lambda w: w.do("free", w.B.pkey_free, w.v["k"])),
            syscall("k2 = pkey_alloc(0, 0)", lambda w: w.do("k2", w.B.pkey_alloc, 0, 0), pkru=True),
        ),
    },
    exists=lambda w: isinstance(w.v.get("get"), int) and w.v.get("k2") == w.v["k"]
    and w.v.get("seen") is True,
    exists_text="A's pkey_get(k) succeeds and B's new key k2 is k",
    result="Sometimes",
    facts=("RACE-RFC-GET-STAT", "RFC-STAT-ANALOGY", "RFC-LOCKLESS"),
    observe=("get", "k2"),
))

race(Race(
    name="MP+rfcget+alloc",
    family="rfc",
    variant_of="MP+rfcget+freealloc",
    variant="As above, but B allocates without freeing k first: k keeps one owner.",
    question="If B never frees k, can A's pkey_get(k) answer for an allocation that is not A's?",
    setup=_get_stat_setup,
    threads={
        "A": GET_STAT_A,
        "B": (syscall("k2 = pkey_alloc(0, 0)", lambda w: w.do("k2", w.B.pkey_alloc, 0, 0), pkru=True),),
    },
    exists=lambda w: isinstance(w.v.get("get"), int) and w.v.get("k2") == w.v["k"],
    exists_text="A's pkey_get(k) succeeds and B's new key k2 is k",
    result="Never",
    facts=("RACE-RFC-GET-STAT", "SYS-ALLOC-LOWEST"),
    observe=("get", "k2"),
))


def _set_steps(thread: str, key_var: str, rights: int):
    """glibc/RFC-style pkey_set as read-modify-write of one PKRU register."""
    return (
        register(f"p = RDPKRU  (pkey_set({key_var}, {rights}))",
                 lambda w: w.v.__setitem__(f"{thread}.p", w.t[thread].rdpkru()), write=False),
        register(f"WRPKRU(p with {key_var} = {rights})",
                 lambda w: w.t[thread].wrpkru(
                     pkru_with_rights(w.v[f"{thread}.p"], w.v[key_var], rights)), write=True),
    )


def _no_lost_update_setup() -> World:
    w = _two_threads()
    w.v["k1"] = w.A.pkey_alloc(0, PKEY_DISABLE_ACCESS)
    w.v["k2"] = w.A.pkey_alloc(0, PKEY_DISABLE_ACCESS)
    # B starts with the same rights as A (as if cloned after the allocations).
    w.B.pkru = w.A.pkru
    return w


race(Race(
    name="2+2W+pkeyset+pkeyset",
    family="rfc",
    question=(
        "Mel Gorman asked whether two threads calling pkey_set at once can overwrite each "
        "other's update. A opens k1 while B opens k2. Can either update be lost?"),
    setup=_no_lost_update_setup,
    threads={"A": _set_steps("A", "k1", 0), "B": _set_steps("B", "k2", 0)},
    exists=lambda w: pkru_rights(w.A.pkru, w.v["k1"]) != 0 or pkru_rights(w.B.pkru, w.v["k2"]) != 0,
    exists_text="A's k1 or B's k2 is still closed in that thread's own PKRU",
    result="Never",
    facts=("RFC-NO-LOST-UPDATE", "HW-X86-THREAD-LOCAL", "THR-NO-REMOTE-SET"),
    observe=(),
    note="PKRU is per thread: each read-modify-write touches only its own register.",
))


def _shared_setup() -> World:
    w = _no_lost_update_setup()
    w.v["R"] = w.A.pkru           # one register shared by both threads (hypothetical)
    return w


def _shared_steps(thread: str, key_var: str):
    return (
        local(f"p = R  (read the shared register; pkey_set({key_var}, 0))",
              lambda w: w.v.__setitem__(f"{thread}.p", w.v["R"]), reads=("R",)),
        local(f"R = p with {key_var} = 0",
              lambda w: w.v.__setitem__("R", pkru_with_rights(w.v[f"{thread}.p"], w.v[key_var], 0)),
              writes=("R",)),
    )


race(Race(
    name="2+2W+sharedreg+sharedreg",
    family="rfc",
    variant_of="2+2W+pkeyset+pkeyset",
    variant="As above, but both threads update one shared register (not x86: a hypothetical).",
    question="If the rights lived in one register shared by all threads, could an update be lost?",
    setup=_shared_setup,
    threads={"A": _shared_steps("A", "k1"), "B": _shared_steps("B", "k2")},
    exists=lambda w: pkru_rights(w.v["R"], w.v["k1"]) != 0 or pkru_rights(w.v["R"], w.v["k2"]) != 0,
    exists_text="the shared register still has k1 or k2 closed",
    result="Sometimes",
    facts=("RFC-NO-LOST-UPDATE",),
    observe=("R",),
))

# The allocation map is a u16 written by pkey_alloc/pkey_free (under the
# mmap lock) and, in the RFC, read locklessly. OLD -> NEW crosses a byte
# boundary: freeing key 7 and allocating key 8 in one update.
_OLD, _NEW = 0x00FF, 0x017F


def _map_setup() -> World:
    return World(System(), {}, map=_OLD)


def _reader():
    return (local("r = READ_ONCE(map)", lambda w: w.v.__setitem__("r", w.v["map"]), reads=("map",)),)


race(Race(
    name="MP+writeonce+readonce",
    family="rfc",
    question=(
        "The RFC reads the allocation map without the mmap lock. The writer updates it "
        f"from {_OLD:#06x} to {_NEW:#06x} with one WRITE_ONCE. Can the lockless reader see a "
        "value that was never in the map?"),
    setup=_map_setup,
    threads={
        "W": (local("WRITE_ONCE(map, NEW)", lambda w: w.v.__setitem__("map", _NEW), writes=("map",)),),
        "R": _reader(),
    },
    exists=lambda w: w.v["r"] not in (_OLD, _NEW),
    exists_text="r is neither the old nor the new map",
    result="Never",
    facts=("RFC-LOCKLESS",),
    observe=("r",),
))

race(Race(
    name="MP+splitstores+readonce",
    family="rfc",
    variant_of="MP+writeonce+readonce",
    variant="As above, but the compiler splits the store in two byte stores, as the kernel comment warns.",
    question="Without WRITE_ONCE the store may tear. Can the reader then see a map that never existed?",
    setup=_map_setup,
    threads={
        "W": (
            local("map.lo = NEW.lo", lambda w: w.v.__setitem__("map", (w.v["map"] & 0xFF00) | (_NEW & 0xFF)),
                  writes=("map",)),
            local("map.hi = NEW.hi", lambda w: w.v.__setitem__("map", (w.v["map"] & 0x00FF) | (_NEW & 0xFF00)),
                  writes=("map",)),
        ),
        "R": _reader(),
    },
    exists=lambda w: w.v["r"] not in (_OLD, _NEW),
    exists_text="r is neither the old nor the new map",
    result="Sometimes",
    facts=("RFC-LOCKLESS",),
    observe=("r",),
))

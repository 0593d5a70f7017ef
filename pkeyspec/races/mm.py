"""Races on the address space: pkey_mprotect over several VMAs.

``pkey_mprotect`` walks the VMAs of its range one by one and stops at the
first error without undoing what it already changed (SYS-MPROT-NONATOMIC).
The call itself is atomic (it holds the mmap lock), but what it finds
depends on what other threads mapped or unmapped before it.
"""

from __future__ import annotations

from ..uapi import PAGE_SIZE, PROT_READ
from . import Race, World, race, syscall
from .lifetime import ANON, RW, reads_mm, two_threads


def _three_vmas_setup() -> World:
    """[a, a+3P): V1 (r--), V2 (rw-), V3 (r--), three VMAs because their prots differ."""
    w = two_threads()
    t1 = w.T1
    a = t1.mmap(0, 3 * PAGE_SIZE, RW, ANON)
    t1.mprotect(a, PAGE_SIZE, PROT_READ)
    t1.mprotect(a + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ)
    w.v["a"] = a
    w.v["k"] = t1.pkey_alloc(0, 0)
    return w


def _keys_of_v1_v2(w: World) -> None:
    w.v["p1"] = w.T1.smaps_pkey(w.v["a"])
    w.v["p2"] = w.T1.smaps_pkey(w.v["a"] + PAGE_SIZE)


race(Race(
    name="PARTIAL+pkeymprotect+munmap",
    family="mm",
    question=(
        "T1 tags three adjacent VMAs V1, V2, V3 with key k in one pkey_mprotect call, while T2 "
        "unmaps V3. If the munmap wins the mmap lock, pkey_mprotect re-tags V1 and V2, finds "
        "the hole and fails with ENOMEM, with no rollback. Can the call fail and still leave "
        "V1 and V2 with the new key?"),
    setup=_three_vmas_setup,
    threads={
        "T1": (
            syscall("mp = pkey_mprotect(a, 3 * PAGE_SIZE, PROT_READ, k)",
                    lambda w: w.do("mp", w.T1.pkey_mprotect, w.v["a"], 3 * PAGE_SIZE, PROT_READ,
                                   w.v["k"])),
            reads_mm('p1, p2 = "ProtectionKey:" of V1 and V2 in /proc/self/smaps', _keys_of_v1_v2),
        ),
        "T2": (syscall("munmap(a + 2 * PAGE_SIZE, PAGE_SIZE)",
                       lambda w: w.do("unmap", w.T2.munmap, w.v["a"] + 2 * PAGE_SIZE, PAGE_SIZE)),),
    },
    exists=lambda w: w.v.get("mp") == "ENOMEM" and w.v.get("p1") == w.v["k"] == w.v.get("p2"),
    exists_text="pkey_mprotect fails with ENOMEM, yet V1 and V2 carry k",
    result="Sometimes",
    facts=("RACE-PKEY-MPROTECT-PARTIAL", "SYS-MPROT-NONATOMIC", "SYS-SERIALIZED"),
    observe=("mp", "p1", "p2"),
))

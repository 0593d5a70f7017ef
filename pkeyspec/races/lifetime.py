"""Races over a key's lifetime: allocation, use, free and reuse.

A key number outlives the allocation it named: ``pkey_free`` revokes
nothing and looks at no VMA (SYS-FREE-NO-INUSE-CHECK), and ``pkey_alloc``
hands out the lowest free number again (SYS-ALLOC-LOWEST). ``pkey_alloc``'s
rights reach the calling thread only (SYS-ALLOC-RIGHTS-CALLER-ONLY), so
every other thread has for a new key whatever its own PKRU says. The races
below are those facts in motion. Every one runs two threads of one process
on the default kernel and CPU unless it says otherwise.

Several races publish with a flag, the ``MP`` (message passing) shape of
the Linux memory model: the first thread protects memory and then writes
``ready``; the second reads ``ready`` and touches the memory only if it is
set. On x86 (TSO) a reader that sees the flag also sees the protection,
so the question is only what the reader's own PKRU allows.

The helpers at the top are shared by the other family modules
(:mod:`~pkeyspec.races.exec_only`, :mod:`~pkeyspec.races.signals`,
:mod:`~pkeyspec.races.mm`).
"""

from __future__ import annotations

from typing import Any, Callable

from .. import glibc
from ..hardware import pkru_rights, pkru_with_rights
from ..signals import Killed
from ..system import System
from ..uapi import (
    MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PKEY_DISABLE_ACCESS, PROT_READ, PROT_WRITE, SEGV_PKUERR,
)
from . import Race, Step, World, access, local, race, register, syscall

PAGE = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
#: The byte a thread keeps behind a key.
SECRET = 0x5A


# --- helpers shared by the family modules ------------------------------------------

def two_threads(system: System | None = None, names: tuple[str, str] = ("T1", "T2"),
                **values: Any) -> World:
    """A process whose main thread cloned a second thread at once: both start with init_pkru."""
    system = System() if system is None else system
    first = system.spawn()
    second = first.clone(stack=first.sp - 0x10000)
    return World(system, {names[0]: first, names[1]: second}, **values)


def page(thread, value: int = 0) -> int:
    """mmap one private read-write page (key 0) and store ``value`` in its first byte.

    The store faults the page in, so its PTE is present: later accesses
    meet the key in the hardware, not in the fault handler.
    """
    addr = thread.mmap(0, PAGE, RW, ANON)
    thread.store(addr, value)
    return addr


def write_once(var: str, src: str) -> Step:
    """``WRITE_ONCE(var, src)``: publish a thread's result ``src`` in the shared variable ``var``."""
    return local(f"WRITE_ONCE({var}, {src})", lambda w: w.v.__setitem__(var, w.v[src]),
                 writes=(var,))


def reads_mm(label: str, action: Callable[[World], Any]) -> Step:
    """A step that only reads the address space under the mmap read lock (``/proc/self/smaps``)."""
    return Step(label, action, frozenset({"mm"}), frozenset())


def set_flag(var: str) -> Step:
    """``WRITE_ONCE(var, 1)``."""
    return local(f"WRITE_ONCE({var}, 1)", lambda w: w.v.__setitem__(var, 1), writes=(var,))


def read_once(reg: str, var: str) -> Step:
    """``reg = READ_ONCE(var)``: read a shared variable into a thread's own result."""
    return local(f"{reg} = READ_ONCE({var})", lambda w: w.v.__setitem__(reg, w.v[var]),
                 reads=(var,))


def load_if(thread: str, reg: str, addr: str, flag: str) -> Step:
    """``if (flag) reg = *addr``: a one-byte load, only when the thread saw the flag set."""
    def act(w: World) -> None:
        if w.v[flag]:
            w.do(reg, w.t[thread].load, w.v[addr])
    return access(f"if ({flag}) {reg} = *{addr}", act)


def load(thread: str, reg: str, addr: str) -> Step:
    """``reg = *addr``: a one-byte load."""
    return access(f"{reg} = *{addr}", lambda w: w.do(reg, w.t[thread].load, w.v[addr]))


def alloc(thread: str, reg: str, rights: int, rights_text: str, *, record_pkru: bool = False) -> Step:
    """``reg = pkey_alloc(0, rights)``; ``record_pkru`` also shows the PKRU as ``<thread>.pkru``.

    Only the calling thread writes its own PKRU, so the value recorded by
    its last PKRU-writing step is its PKRU at the end of the race.
    """
    def act(w: World) -> None:
        w.do(reg, w.t[thread].pkey_alloc, 0, rights)
        if record_pkru:
            w.v[f"{thread}.pkru"] = w.t[thread].pkru
    return syscall(f"{reg} = pkey_alloc(0, {rights_text})", act, pkru=True)


def pkey_mprotect(thread: str, addr: str, key: str, *, prot: int = RW,
                  prot_text: str = "PROT_READ | PROT_WRITE", reg: str = "mp") -> Step:
    """``reg = pkey_mprotect(addr, PAGE_SIZE, prot, key)``; ``key`` names a result or is a number."""
    def act(w: World) -> None:
        k = w.v[key] if key in w.v else int(key)
        w.do(reg, w.t[thread].pkey_mprotect, w.v[addr], PAGE, prot, k)
    return syscall(f"{reg} = pkey_mprotect({addr}, PAGE_SIZE, {prot_text}, {key})", act)


def pkey_set_if(thread: str, flag: str, key: str, rights: int) -> tuple[Step, Step]:
    """``if (flag) pkey_set(key, rights)`` as glibc runs it: RDPKRU, then WRPKRU."""
    p = f"{thread}.p"

    def rd(w: World) -> None:
        if w.v[flag]:
            w.v[p] = w.t[thread].rdpkru()

    def wr(w: World) -> None:
        if w.v[flag]:
            w.t[thread].wrpkru(pkru_with_rights(w.v[p], w.v[key], rights))
    return (register(f"if ({flag}) p = RDPKRU  (pkey_set({key}, {rights}))", rd, write=False),
            register(f"if ({flag}) WRPKRU(p with {key} = {rights})", wr, write=True))


def killed_by_pkuerr(value: Any) -> bool:
    """Did this access end the process with SIGSEGV/SEGV_PKUERR?"""
    return (isinstance(value, Killed) and value.siginfo is not None
            and value.siginfo.si_code == SEGV_PKUERR)


# --- RACE-PKEY-UAF -------------------------------------------------------------------

def _uaf_setup() -> World:
    w = two_threads(names=("A", "B"))
    w.v["secret"] = page(w.A, SECRET)
    return w


_UAF_B = (alloc("B", "k2", 0, "0"), load("B", "x", "secret"))

race(Race(
    name="UAF+mprotectfree+allocload",
    family="lifetime",
    question=(
        "Library A keeps a secret behind a key it allocated with access disabled, then frees "
        "the key while the secret still carries it. Library B, in another thread, allocates a "
        "key for itself with full rights and reads the memory at the secret's address. Can B "
        "read A's secret? The key number is reused and B's init rights open it: a use after "
        "free of the protection key, which libmpk names as a weakness of MPK."),
    setup=_uaf_setup,
    threads={
        "A": (
            alloc("A", "k", PKEY_DISABLE_ACCESS, "PKEY_DISABLE_ACCESS"),
            pkey_mprotect("A", "secret", "k"),
            syscall("pkey_free(k)", lambda w: w.do("free", w.A.pkey_free, w.v["k"])),
        ),
        "B": _UAF_B,
    },
    exists=lambda w: w.v.get("k2") == w.v.get("k") and w.v.get("x") == SECRET,
    exists_text="B's new key k2 is A's freed k, and B reads A's secret",
    result="Sometimes",
    facts=("RACE-PKEY-UAF", "SEC-PKEY-UAF", "SYS-FREE-NO-INUSE-CHECK", "SEC-FREE-DOESNT-REVOKE",
           "SYS-ALLOC-LOWEST"),
    observe=("k", "k2", "x"),
))

race(Race(
    name="UAF+mprotectunmapfree+allocload",
    family="lifetime",
    variant_of="UAF+mprotectfree+allocload",
    variant="As above, but A unmaps the secret before it frees the key.",
    question=(
        "If no memory carries a key when it is freed, is its reuse harmless? B may still get "
        "A's old key number, but nothing of A's is tagged with it any more."),
    setup=_uaf_setup,
    threads={
        "A": (
            alloc("A", "k", PKEY_DISABLE_ACCESS, "PKEY_DISABLE_ACCESS"),
            pkey_mprotect("A", "secret", "k"),
            syscall("munmap(secret, PAGE_SIZE)",
                    lambda w: w.do("unmap", w.A.munmap, w.v["secret"], PAGE)),
            syscall("pkey_free(k)", lambda w: w.do("free", w.A.pkey_free, w.v["k"])),
        ),
        "B": _UAF_B,
    },
    exists=lambda w: w.v.get("k2") == w.v.get("k") and w.v.get("x") == SECRET,
    exists_text="B's new key k2 is A's freed k, and B reads A's secret",
    result="Never",
    facts=("RACE-PKEY-UAF", "SYS-FREE-NO-INUSE-CHECK"),
    observe=("k", "k2", "x"),
))


# --- RACE-STALE-RIGHTS-REALLOC ----------------------------------------------------------

def _stale_setup() -> World:
    w = two_threads(ready=0)
    w.v["secret"] = page(w.T1, SECRET)
    w.v["k"] = w.T1.pkey_alloc(0, PKEY_DISABLE_ACCESS)
    # Earlier, during this lifetime of k, T2 opened it for itself.
    glibc.pkey_set(w.T2, w.v["k"], 0)
    return w


_STALE_T2 = (read_once("r", "ready"), load_if("T2", "x", "secret", "r"))

race(Race(
    name="MP+freeallocprotect+staleload",
    family="lifetime",
    question=(
        "T2 once opened key k for itself with pkey_set. T1 frees k, allocates a key with "
        "access disabled (the lowest free number: k again), puts a secret under it and "
        "raises a flag. T2 sees the flag and reads the secret. Does 'deny by default' "
        "protect the secret from T2? pkey_alloc's rights land in T1's PKRU only, and T2's "
        "PKRU still has k open from its previous lifetime."),
    setup=_stale_setup,
    threads={
        "T1": (
            syscall("pkey_free(k)", lambda w: w.do("free", w.T1.pkey_free, w.v["k"])),
            alloc("T1", "k2", PKEY_DISABLE_ACCESS, "PKEY_DISABLE_ACCESS"),
            pkey_mprotect("T1", "secret", "k2"),
            write_once("ready", "k2"),
        ),
        "T2": _STALE_T2,
    },
    exists=lambda w: w.v.get("x") == SECRET,
    exists_text="T2 sees ready and reads the secret",
    result="Sometimes",
    facts=("RACE-STALE-RIGHTS-REALLOC", "SYS-ALLOC-RIGHTS-CALLER-ONLY", "THR-NEW-KEY-OTHER-THREADS",
           "SYS-ALLOC-LOWEST"),
    observe=("k2", "r", "x"),
))

race(Race(
    name="MP+allocprotect+staleload",
    family="lifetime",
    variant_of="MP+freeallocprotect+staleload",
    variant="As above, but T1 keeps k allocated, so the new key is a number T2 never opened.",
    question=(
        "If T1 never frees k, the new key is a fresh number for which T2's PKRU still has the "
        "access-disable bit of init_pkru. Can T2 read the secret now?"),
    setup=_stale_setup,
    threads={
        "T1": (
            alloc("T1", "k2", PKEY_DISABLE_ACCESS, "PKEY_DISABLE_ACCESS"),
            pkey_mprotect("T1", "secret", "k2"),
            write_once("ready", "k2"),
        ),
        "T2": _STALE_T2,
    },
    exists=lambda w: w.v.get("x") == SECRET,
    exists_text="T2 sees ready and reads the secret",
    result="Never",
    facts=("RACE-STALE-RIGHTS-REALLOC", "THR-DENY-BY-DEFAULT-X86", "INIT-PKRU-VALUE"),
    observe=("k2", "r", "x"),
))


# --- RACE-NEW-KEY-EXISTING-THREAD ----------------------------------------------------------

def _shared_buf_setup() -> World:
    w = two_threads(ready=0)
    w.v["buf"] = page(w.T1, SECRET)
    return w


_PUBLISH_OPEN = (
    alloc("T1", "k", 0, "0"),
    pkey_mprotect("T1", "buf", "k"),
    write_once("ready", "k"),
)

race(Race(
    name="MP+allocopenprotect+load",
    family="lifetime",
    question=(
        "T1 allocates a key with full rights, puts a buffer it means to share under it and "
        "publishes the key. T2, already running, sees the key and reads the buffer. Does "
        "T2 get in? Its PKRU was set from init_pkru when it was created and still has "
        "access disabled for every key but 0; pkey_alloc opened the key for T1 only."),
    setup=_shared_buf_setup,
    threads={"T1": _PUBLISH_OPEN,
             "T2": (read_once("r", "ready"), load_if("T2", "x", "buf", "r"))},
    exists=lambda w: killed_by_pkuerr(w.v.get("x")),
    exists_text="T2 sees ready, reads buf and the process dies of SIGSEGV/SEGV_PKUERR",
    result="Sometimes",
    facts=("RACE-NEW-KEY-EXISTING-THREAD", "SYS-ALLOC-RIGHTS-CALLER-ONLY", "THR-DENY-BY-DEFAULT-X86",
           "THR-NO-REMOTE-SET"),
    observe=("r", "x"),
))

race(Race(
    name="MP+allocopenprotect+pkeysetload",
    family="lifetime",
    variant_of="MP+allocopenprotect+load",
    variant="As above, but T2 opens the published key for itself with pkey_set before it reads.",
    question=(
        "No interface changes another thread's PKRU, so each thread that is to use a new key "
        "must open it itself. If T2 calls pkey_set(k, 0) on the key it received, can the read "
        "still fault?"),
    setup=_shared_buf_setup,
    threads={"T1": _PUBLISH_OPEN,
             "T2": (read_once("r", "ready"), *pkey_set_if("T2", "r", "r", 0),
                    load_if("T2", "x", "buf", "r"))},
    exists=lambda w: killed_by_pkuerr(w.v.get("x")),
    exists_text="T2 sees ready, reads buf and the process dies of SIGSEGV/SEGV_PKUERR",
    result="Never",
    facts=("RACE-NEW-KEY-EXISTING-THREAD", "THR-NO-REMOTE-SET", "GLIBC-X86-SET"),
    observe=("r", "x"),
))


# --- RACE-CLONE-BEFORE-PROTECT --------------------------------------------------------------

def _clone_early_setup(init_pkru: int | None) -> Callable[[], World]:
    def setup() -> World:
        system = System() if init_pkru is None else System(init_pkru=init_pkru)
        w = two_threads(system, names=("A", "B"), ready=0)   # B cloned before any key exists
        w.v["data"] = page(w.A, SECRET)
        return w
    return setup


_PROTECT_DENY = (
    alloc("A", "k", PKEY_DISABLE_ACCESS, "PKEY_DISABLE_ACCESS"),
    pkey_mprotect("A", "data", "k"),
    write_once("ready", "k"),
)
_B_LOADS = (read_once("r", "ready"), load_if("B", "x", "data", "r"))

race(Race(
    name="MP+allocdenyprotect+pkru0load",
    family="lifetime",
    question=(
        "Before the restrictive default of 2016, a new context started with PKRU 0, the "
        "hardware init value: every key open. Thread B is created early, before any key "
        "exists. A then allocates a key with access disabled, protects its data with it and "
        "says so. Can B, which never touched its PKRU, read the data?"),
    setup=_clone_early_setup(0),
    threads={"A": _PROTECT_DENY, "B": _B_LOADS},
    exists=lambda w: w.v.get("x") == SECRET,
    exists_text="B sees ready and reads A's protected data",
    result="Sometimes",
    facts=("RACE-CLONE-BEFORE-PROTECT", "INIT-PKRU-VS-HW-INIT", "INIT-PKRU-TUNABLE",
           "THR-CLONE-INHERITS"),
    observe=("r", "x"),
    note="System(init_pkru=0): the permissive default of the pre-4.9 design (or init_pkru=0 at boot).",
))

race(Race(
    name="MP+allocdenyprotect+load",
    family="lifetime",
    variant_of="MP+allocdenyprotect+pkru0load",
    variant="As above, but with Linux's default init_pkru, 0x55555554.",
    question=(
        "With the default init_pkru every new context has access disabled for keys 1 to 15. "
        "Can the early thread B still read data protected after it was created?"),
    setup=_clone_early_setup(None),
    threads={"A": _PROTECT_DENY, "B": _B_LOADS},
    exists=lambda w: w.v.get("x") == SECRET,
    exists_text="B sees ready and reads A's protected data",
    result="Never",
    facts=("RACE-CLONE-BEFORE-PROTECT", "INIT-PKRU-VALUE", "THR-DENY-BY-DEFAULT-X86"),
    observe=("r", "x"),
))


# --- RACE-FREE-VS-MPROTECT -------------------------------------------------------------------

def _free_vs_mprotect_setup() -> World:
    w = two_threads()
    w.v["a"] = page(w.T1)
    w.v["k"] = w.T1.pkey_alloc(0, PKEY_DISABLE_ACCESS)
    return w


race(Race(
    name="UAF+pkeymprotect+free",
    family="lifetime",
    question=(
        "T1 tags a page with key k while T2 frees k. Both calls take the mmap lock, so one "
        "runs entirely before the other. If pkey_mprotect runs first it succeeds and the free "
        "that follows leaves the page tagged with a free key, ready to be reused; if the free "
        "runs first pkey_mprotect fails with EINVAL. Linux allows both orders; can the first "
        "one happen?"),
    setup=_free_vs_mprotect_setup,
    threads={
        "T1": (pkey_mprotect("T1", "a", "k", prot=PROT_READ, prot_text="PROT_READ"),),
        "T2": (syscall("free = pkey_free(k)", lambda w: w.do("free", w.T2.pkey_free, w.v["k"])),),
    },
    exists=lambda w: w.v.get("mp") == 0 and w.v.get("free") == 0,
    exists_text="both calls succeed: the page is left tagged with a freed key",
    result="Sometimes",
    facts=("RACE-FREE-VS-MPROTECT", "SYS-SERIALIZED", "SYS-FREE-NO-INUSE-CHECK"),
    observe=("mp", "free"),
    note="Both outcomes are legal Linux behaviour: the model must allow each of them.",
))


# --- RACE-ALLOC-VS-ALLOC ---------------------------------------------------------------------

race(Race(
    name="RMW+alloc+alloc",
    family="lifetime",
    question=(
        "Two threads call pkey_alloc at once. The calls are serialized by the mmap lock and "
        "each takes the lowest free key, so they get different keys; which thread gets which "
        "depends on who takes the lock first. Can T1 get key 1?"),
    setup=two_threads,
    threads={"T1": (alloc("T1", "k1", 0, "0"),), "T2": (alloc("T2", "k2", 0, "0"),)},
    exists=lambda w: w.v.get("k1") == 1,
    exists_text="T1 gets key 1 (and T2 key 2)",
    result="Sometimes",
    facts=("RACE-ALLOC-VS-ALLOC", "SYS-SERIALIZED", "SYS-ALLOC-LOWEST"),
    observe=("k1", "k2"),
))

race(Race(
    name="RMW+allocdeny+allocopen",
    family="lifetime",
    variant_of="RMW+alloc+alloc",
    variant="As above, but T1 asks for PKEY_DISABLE_ACCESS and T2 for full rights.",
    question=(
        "Each thread's init rights land in its own PKRU only. Whatever the order, can T1 end up "
        "with T2's init rights (full access) for T2's key?"),
    setup=two_threads,
    threads={
        "T1": (alloc("T1", "k1", PKEY_DISABLE_ACCESS, "PKEY_DISABLE_ACCESS", record_pkru=True),),
        "T2": (alloc("T2", "k2", 0, "0", record_pkru=True),),
    },
    exists=lambda w: pkru_rights(w.v["T1.pkru"], w.v["k2"]) == 0,
    exists_text="T1's PKRU gives it full access to T2's key k2",
    result="Never",
    facts=("RACE-ALLOC-VS-ALLOC", "SYS-ALLOC-RIGHTS-CALLER-ONLY", "THR-NO-REMOTE-SET"),
    observe=("k1", "k2", "T1.pkru", "T2.pkru"),
))


# --- RACE-SMAPS-SCAN ---------------------------------------------------------------------------

def _smaps_setup() -> World:
    w = two_threads()
    w.v["buf"] = page(w.T1)
    w.v["k"] = w.T1.pkey_alloc(0, 0)
    return w


def _count_key(w: World) -> int:
    """How many VMAs /proc/self/smaps shows with ``ProtectionKey: k``."""
    lines = w.T1.smaps().splitlines()
    return sum(1 for line in lines
               if line.startswith("ProtectionKey:") and int(line.split()[1]) == w.v["k"])


def _free_if_unused(w: World) -> None:
    if w.v["n"] == 0:
        w.do("free", w.T1.pkey_free, w.v["k"])


def _scan_then_free(w: World) -> None:
    w.v["n"] = _count_key(w)
    _free_if_unused(w)


_SMAPS_T2_LABEL = "mp = pkey_mprotect(buf, PAGE_SIZE, PROT_READ | PROT_WRITE, k)"

race(Race(
    name="TOCTOU+smapsfree+mprotect",
    family="lifetime",
    question=(
        "pkeys(7) suggests checking /proc/self/smaps before pkey_free, to be sure no memory "
        "still carries the key. T1 reads smaps and finds no VMA with key k; T2 tags a buffer "
        "with k; T1 frees k. Reading smaps takes the mmap lock only for the read, so the "
        "answer can be stale before T1 acts on it. Can the buffer end up tagged with a "
        "freed key?"),
    setup=_smaps_setup,
    threads={
        "T1": (reads_mm('n = VMAs with "ProtectionKey: k" in /proc/self/smaps',
                        lambda w: w.v.__setitem__("n", _count_key(w))),
               syscall("if (n == 0) free = pkey_free(k)", _free_if_unused)),
        "T2": (pkey_mprotect("T2", "buf", "k"),),
    },
    exists=lambda w: w.v.get("mp") == 0 and w.v.get("free") == 0,
    exists_text="T2 tags buf with k and T1 frees k",
    result="Sometimes",
    facts=("RACE-SMAPS-SCAN", "PROC-LEAK-CHECK", "SYS-FREE-NO-INUSE-CHECK"),
    observe=("n", "free", "mp"),
))

race(Race(
    name="TOCTOU+lockedsmapsfree+lockedmprotect",
    family="lifetime",
    variant_of="TOCTOU+smapsfree+mprotect",
    variant="As above, but the application holds one lock of its own over the scan and the free, "
            "and over every pkey_mprotect with k.",
    question=(
        "The smaps check is safe only if the application serializes every user of k. With "
        "its own lock around check-and-free and around pkey_mprotect, can the buffer still "
        "end up tagged with a freed key?"),
    setup=_smaps_setup,
    threads={
        "T1": (syscall('lock(&keys); n = VMAs with "ProtectionKey: k" in smaps; '
                       "if (n == 0) free = pkey_free(k); unlock(&keys)", _scan_then_free),),
        "T2": (syscall(f"lock(&keys); {_SMAPS_T2_LABEL}; unlock(&keys)",
                       lambda w: w.do("mp", w.T2.pkey_mprotect, w.v["buf"], PAGE, RW, w.v["k"])),),
    },
    exists=lambda w: w.v.get("mp") == 0 and w.v.get("free") == 0,
    exists_text="T2 tags buf with k and T1 frees k",
    result="Never",
    facts=("RACE-SMAPS-SCAN", "PROC-LEAK-CHECK"),
    observe=("n", "free", "mp"),
))

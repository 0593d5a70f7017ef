"""Races around the x86 execute-only key.

A plain ``mprotect(addr, len, PROT_EXEC)`` makes the kernel allocate, once
per mm, a hidden key (the lowest free one), tag the mapping with it and
set access-disable for it in the calling thread's PKRU only
(XO-X86-IMPLICIT, XO-X86-HIDDEN-KEY). Two consequences race with other
threads: a thread whose PKRU leaves that key open can read "execute-only"
code, and a library that expects the first key it allocates to be 1 may
find 1 taken.
"""

from __future__ import annotations

from ..uapi import PAGE_SIZE, PROT_EXEC
from . import Race, Step, World, race, syscall
from .lifetime import alloc, load_if, page, pkey_mprotect, read_once, set_flag, two_threads

#: The first byte of the "code" page: RET.
CODE = 0xC3


def _mprotect_exec(thread: str) -> Step:
    return syscall("mprotect(code, PAGE_SIZE, PROT_EXEC)",
                   lambda w: w.do("xo", w.t[thread].mprotect, w.v["code"], PAGE_SIZE, PROT_EXEC),
                   pkru=True)


# --- RACE-XO-OTHER-THREAD ------------------------------------------------------------------

def _xo_setup(t2_pkru: int | None):
    def setup() -> World:
        w = two_threads(ready=0)
        w.v["code"] = page(w.T1, CODE)
        if t2_pkru is not None:
            w.T2.wrpkru(t2_pkru)
        return w
    return setup


_XO_T1 = (_mprotect_exec("T1"), set_flag("ready"))
_XO_T2 = (read_once("r", "ready"), load_if("T2", "x", "code", "r"))


race(Race(
    name="MP+mprotectexec+pkru0load",
    family="exec_only",
    question=(
        "T2 runs with PKRU 0 (it wrote the register wholesale, as a JIT or a sandbox might). "
        "T1 makes a code page execute-only with a plain mprotect(PROT_EXEC) and then says so. "
        "The kernel allocates the execute-only key and sets access-disable for it in T1's "
        "PKRU, and in no other thread's. Can T2 read the execute-only code?"),
    setup=_xo_setup(0),
    threads={"T1": _XO_T1, "T2": _XO_T2},
    exists=lambda w: w.v.get("x") == CODE,
    exists_text="T2 sees ready and reads a byte of the execute-only page",
    result="Sometimes",
    facts=("RACE-XO-OTHER-THREAD", "XO-X86-IMPLICIT", "XO-X86-PKRU-SHORTCUT",
           "SYS-ALLOC-RIGHTS-CALLER-ONLY"),
    observe=("r", "x"),
))

race(Race(
    name="MP+mprotectexec+load",
    family="exec_only",
    variant_of="MP+mprotectexec+pkru0load",
    variant="As above, but T2 keeps the PKRU it started with (init_pkru, 0x55555554).",
    question=(
        "Execute-only holds for other threads only because their PKRU denies every key but 0 "
        "from the start. If T2 never changed its PKRU, can it read the code?"),
    setup=_xo_setup(None),
    threads={"T1": _XO_T1, "T2": _XO_T2},
    exists=lambda w: w.v.get("x") == CODE,
    exists_text="T2 sees ready and reads a byte of the execute-only page",
    result="Never",
    facts=("RACE-XO-OTHER-THREAD", "THR-DENY-BY-DEFAULT-X86", "INIT-PKRU-VALUE"),
    observe=("r", "x"),
))


# --- RACE-EXEC-ONLY-FIRST-ALLOC -------------------------------------------------------------

def _first_alloc_setup() -> World:
    w = two_threads()
    w.v["buf"] = page(w.T1)
    w.v["code"] = page(w.T2, CODE)
    return w


race(Race(
    name="XO+allocuse1+mprotectexec",
    family="exec_only",
    question=(
        "A library in T1 allocates a key and, assuming the first key a process gets is 1, "
        "tags its buffer with key 1. Meanwhile T2 (or the dynamic loader) maps code with a "
        "plain mprotect(PROT_EXEC), and the kernel takes the lowest free key as the hidden "
        "execute-only key. Can T1's pkey_mprotect with key 1 fail?"),
    setup=_first_alloc_setup,
    threads={
        "T1": (alloc("T1", "k", 0, "0"), pkey_mprotect("T1", "buf", "1")),
        "T2": (_mprotect_exec("T2"),),
    },
    exists=lambda w: w.v.get("mp") == "EINVAL",
    exists_text="pkey_mprotect(buf, ..., 1) fails with EINVAL: key 1 is the hidden execute-only key",
    result="Sometimes",
    facts=("RACE-EXEC-ONLY-FIRST-ALLOC", "SYS-ALLOC-LOWEST", "XO-X86-HIDDEN-KEY", "XO-X86-IMPLICIT"),
    observe=("k", "mp"),
))

race(Race(
    name="XO+allocusek+mprotectexec",
    family="exec_only",
    variant_of="XO+allocuse1+mprotectexec",
    variant="As above, but T1 tags its buffer with the key pkey_alloc returned.",
    question=(
        "pkey_alloc says which key the caller got; the number is whatever was free. If T1 uses "
        "the returned key instead of assuming 1, can its pkey_mprotect fail?"),
    setup=_first_alloc_setup,
    threads={
        "T1": (alloc("T1", "k", 0, "0"), pkey_mprotect("T1", "buf", "k")),
        "T2": (_mprotect_exec("T2"),),
    },
    exists=lambda w: w.v.get("mp") == "EINVAL",
    exists_text="pkey_mprotect(buf, ..., k) fails with EINVAL",
    result="Never",
    facts=("RACE-EXEC-ONLY-FIRST-ALLOC", "SYS-ALLOC-LOWEST"),
    observe=("k", "mp"),
))

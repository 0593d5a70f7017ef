"""Races with signals: a signal arrives between two instructions of its target.

A signal is modelled as a thread of its own, ``S``, whose single step is
the kernel delivering it to thread ``T``: the frame is written, the handler
runs with PKRU = init_pkru, and ``rt_sigreturn`` restores the PKRU saved in
the frame (SIG-X86-HANDLER-RIGHTS, SIG-X86-RESTORE). That step reads and
writes ``T``'s PKRU (``pkru:T``) and its stack (``mm``), so it is ordered
against every step of ``T`` and lands between any two of them.

The page fault of RACE-SIPKEY-STALE is split the same way Linux splits it:
the CPU raises #PF with the error code (the PTE's key decided it), and only
later does the kernel's fault handler lock and find the VMA (the per-VMA
lock, ``lock_vma_under_rcu``, from 6.4; the mmap lock before) and fill in
``si_pkey`` from it (:func:`pkeyspec.access.do_user_addr_fault`).

RACE-AMD-XINUSE runs on ``System(cpu_vendor="amd", kernel="6.12.4")``: the
model's XSAVE leaves XSTATE_BV[PKRU] clear when an AMD CPU holds PKRU = 0,
as 6.12 makes it hold while it writes the frame.
"""

from __future__ import annotations

from functools import partial

from .. import glibc
from ..access import do_user_addr_fault
from ..hardware import check_user_access, pkru_rights, pkru_with_rights
from ..signals import SA_ONSTACK, Killed, SignalContext, force_sig_fault, send_signal
from ..system import System
from ..uapi import (
    PAGE_SHIFT, PAGE_SIZE, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE, SIGUSR1,
)
from . import Race, Step, World, access, race, register
from .lifetime import ANON, RW, SECRET, killed_by_pkuerr, page, pkey_mprotect, two_threads


def deliver(label: str, target: str = "T", signo: int = SIGUSR1, *, record_pkru: bool = False,
            record_ran: bool = False) -> Step:
    """The kernel delivers ``signo`` to ``target`` between two of its steps: handler, then sigreturn.

    Records what delivery returned as ``sig`` (None: the handler ran and
    returned; a :class:`~pkeyspec.signals.Killed`: the process died). With
    ``record_pkru`` also records the target's PKRU afterwards as
    ``<target>.pkru``; with ``record_ran``, whether the handler wrote the
    byte at ``w.v["flag"]`` (read from the model's memory, not by a thread)
    as ``ran``.
    """
    def act(w: World) -> None:
        t = w.t[target]
        t._enter()
        w.v["sig"] = send_signal(t, signo)
        if record_pkru:
            w.v[f"{target}.pkru"] = t.pkru
        if record_ran:
            w.v["ran"] = bool(t.process.mm.memory.get(w.v["flag"], 0))
    res = frozenset({f"pkru:{target}", "mm", "life"})   # a signal can end the process
    return Step(label, act, res, res)


# --- RACE-GLIBC-SET-VS-SIGNAL ------------------------------------------------------------------

def _revoke_write_by_wrpkru(k2: int, ctx: SignalContext) -> None:
    """Handler: ``pkey_set(k2, PKEY_DISABLE_WRITE)``, which changes the handler's own PKRU."""
    glibc.pkey_set(ctx.thread, k2, PKEY_DISABLE_WRITE)


def _revoke_write_in_frame(k2: int, ctx: SignalContext) -> None:
    """Handler: set WD for k2 in the PKRU saved in the frame, which sigreturn loads."""
    saved = ctx.frame_pkru()
    ctx.set_frame_pkru(pkru_with_rights(saved, k2, PKEY_DISABLE_WRITE))


def _pkey_set_setup(handler):
    def setup() -> World:
        system = System()
        t = system.spawn()
        w = World(system, {"T": t})
        w.v["k1"] = t.pkey_alloc(0, PKEY_DISABLE_ACCESS)
        w.v["k2"] = t.pkey_alloc(0, 0)
        t.sigaction(SIGUSR1, partial(handler, w.v["k2"]))
        w.v["T.pkru"] = t.pkru
        return w
    return setup


def _rdpkru(w: World) -> None:
    w.v["p"] = w.T.rdpkru()


def _wrpkru_k1_open(w: World) -> None:
    w.T.wrpkru(pkru_with_rights(w.v["p"], w.v["k1"], 0))
    w.v["T.pkru"] = w.T.pkru


_PKEY_SET_T = (
    register("p = RDPKRU  (pkey_set(k1, 0))", _rdpkru, write=False),
    register("WRPKRU(p with k1 = 0)", _wrpkru_k1_open, write=True),
)

race(Race(
    name="RMW+pkeyset+sigwrpkru",
    family="signals",
    question=(
        "T opens key k1 with glibc's pkey_set, which is RDPKRU, then WRPKRU. A signal arrives "
        "at some point, and its handler revokes write access to key k2 with pkey_set. On x86 "
        "the handler starts with init_pkru and its WRPKRU changes only the handler's PKRU: "
        "sigreturn loads the interrupted PKRU from the frame. Can the handler's change to k2 "
        "survive in T?"),
    setup=_pkey_set_setup(_revoke_write_by_wrpkru),
    threads={
        "T": _PKEY_SET_T,
        "S": (deliver("tgkill(T, SIGUSR1): handler does pkey_set(k2, PKEY_DISABLE_WRITE)",
                      record_pkru=True),),
    },
    exists=lambda w: pkru_rights(w.v["T.pkru"], w.v["k2"]) == PKEY_DISABLE_WRITE,
    exists_text="after the handler T's PKRU has write disabled for k2",
    result="Never",
    facts=("RACE-GLIBC-SET-VS-SIGNAL", "SIG-X86-HANDLER-WRPKRU-LOST", "SIG-X86-RESTORE",
           "SIG-X86-HANDLER-RIGHTS", "GLIBC-X86-SET"),
    observe=("T.pkru",),
))

race(Race(
    name="RMW+pkeyset+sigframepkru",
    family="signals",
    variant_of="RMW+pkeyset+sigwrpkru",
    variant="As above, but the handler writes its change into the PKRU saved in the signal frame.",
    question=(
        "On x86 a handler makes a PKRU change outlive sigreturn by editing the frame's saved "
        "PKRU. If the signal lands between pkey_set's RDPKRU and its WRPKRU, T writes back the "
        "value it read before the handler ran. Can the handler's revocation of write access "
        "to k2 be lost?"),
    setup=_pkey_set_setup(_revoke_write_in_frame),
    threads={
        "T": _PKEY_SET_T,
        "S": (deliver("tgkill(T, SIGUSR1): handler sets WD for k2 in the frame's PKRU",
                      record_pkru=True),),
    },
    exists=lambda w: pkru_rights(w.v["T.pkru"], w.v["k2"]) != PKEY_DISABLE_WRITE,
    exists_text="in the end T's PKRU does not have write disabled for k2: the handler's change is lost",
    result="Sometimes",
    facts=("RACE-GLIBC-SET-VS-SIGNAL", "SIG-FRAME-PKRU-IS-INPUT", "SIG-X86-HANDLER-WRPKRU-LOST",
           "GLIBC-X86-SET"),
    observe=("T.pkru",),
))


# --- RACE-PRE612-ALTSTACK -------------------------------------------------------------------------

def _altstack_setup(kernel: str, rseq: bool = False):
    """T with a key-0 alternate stack; without rseq, like the selftests' raw threads."""
    def setup() -> World:
        system = System(kernel=kernel)
        t = system.spawn()
        if not rseq:
            t.rseq_unregister()
        w = World(system, {"T": t})
        alt = t.mmap(0, 2 * PAGE_SIZE, RW, ANON)      # key 0, as the 6.12 selftests use
        t.sigaltstack(alt, 2 * PAGE_SIZE)
        flag = t.mmap(0, PAGE_SIZE, RW, ANON)           # key 0: the handler can write it
        t.sigaction(SIGUSR1, partial(_handler_returns, flag), SA_ONSTACK)
        w.v["p"] = t.pkru
        w.v["flag"] = flag
        return w
    return setup


def _handler_returns(flag: int, ctx: SignalContext) -> None:
    """A handler that notes in memory that it ran (a store to ``flag``), and returns."""
    ctx.thread.store(flag, 1)


def _handler_does_nothing(ctx: SignalContext) -> None:
    """A handler that does nothing and returns."""


_DENY0_T = (
    register("wrpkru(p | PKEY_DISABLE_ACCESS << 0)  /* deny key 0 */",
             lambda w: w.do("w1", w.T.wrpkru, w.v["p"] | PKEY_DISABLE_ACCESS), write=True),
    register("wrpkru(p)  /* key 0 open again */",
             lambda w: w.do("w2", w.T.wrpkru, w.v["p"]), write=True),
)
_TGKILL = (deliver("tgkill(T, SIGUSR1): SA_ONSTACK handler on a key-0 altstack", record_ran=True),)

race(Race(
    name="ALTSTACK61+denykey0+tgkill",
    family="signals",
    question=(
        "T briefly denies itself key 0, the key of its stacks, alternate signal stack included, "
        "and then opens it again. A SIGUSR1 with an SA_ONSTACK handler arrives at any moment. "
        "Before 6.12 the kernel writes the signal frame under the interrupted PKRU: if key 0 "
        "is denied at that moment the write faults, the kernel forces SIGSEGV and the process "
        "dies, although it has a handler and a valid alternate stack. Can it die?"),
    setup=_altstack_setup("6.1"),
    threads={"T": _DENY0_T, "S": _TGKILL},
    exists=lambda w: isinstance(w.v.get("sig"), Killed),
    exists_text="the signal kills the process instead of running the handler",
    result="Sometimes",
    facts=("RACE-PRE612-ALTSTACK", "SIG-X86-612-PERMISSIVE-XSAVE", "SIG-HANDLER-STACK-KEY"),
    observe=("sig", "ran", "w1", "w2"),
    note="System(kernel=\"6.1\"): before commit 70044df250d0.",
))

race(Race(
    name="ALTSTACK612+denykey0+tgkill",
    family="signals",
    variant_of="ALTSTACK61+denykey0+tgkill",
    variant="As above, but on Linux 6.12, which opens every key while it writes the frame.",
    question=(
        "Since 6.12 the kernel sets PKRU to 0 while it writes the frame and stores the "
        "interrupted PKRU into it; the handler starts with init_pkru, which opens key 0. Can "
        "the signal still kill the process?"),
    setup=_altstack_setup("6.12"),
    threads={"T": _DENY0_T, "S": _TGKILL},
    exists=lambda w: isinstance(w.v.get("sig"), Killed),
    exists_text="the signal kills the process instead of running the handler",
    result="Never",
    facts=("RACE-PRE612-ALTSTACK", "SIG-X86-612-PERMISSIVE-XSAVE", "SIG-SELFTESTS-612"),
    observe=("sig", "ran", "w1", "w2"),
    note="System(kernel=\"6.12\"); T has no rseq area, like the selftests' raw threads.",
))

race(Race(
    name="ALTSTACK612+denykey0+tgkill+rseq",
    family="signals",
    variant_of="ALTSTACK612+denykey0+tgkill",
    variant="As above, but T is an ordinary glibc thread, with its rseq area registered (in key-0 memory).",
    question=(
        "glibc registers a struct rseq for every thread, in key-0 memory, and the kernel "
        "updates it at signal delivery under the interrupted PKRU, before it writes the frame. "
        "A failed update queues a SIGSEGV, which is not blocked while SIGUSR1 is delivered. "
        "If the signal lands while T denies key 0, can the process still die on 6.12?"),
    setup=_altstack_setup("6.12", rseq=True),
    threads={"T": _DENY0_T, "S": _TGKILL},
    exists=lambda w: isinstance(w.v.get("sig"), Killed),
    exists_text="the signal ends the process, before the SIGUSR1 handler has run",
    result="Sometimes",
    facts=("RACE-PRE612-ALTSTACK", "SIG-SELFTESTS-612", "KERN-RSEQ-PERMISSIVE"),
    observe=("sig", "ran", "w1", "w2"),
    note=("System(kernel=\"6.12\"); the death, with the handler never run, was observed by the "
          "conformance harness on 6.1, 6.12 and 7.2 (scenario o7_tgkill_denykey0_ad_rseq)."),
))


# --- RACE-SIPKEY-STALE -----------------------------------------------------------------------

def _sipkey_setup() -> World:
    w = two_threads()
    t1 = w.T1
    w.v["foo"] = page(t1, SECRET)                      # the PTE is present
    w.v["k"] = t1.pkey_alloc(0, PKEY_DISABLE_ACCESS)   # T1: access disabled for k
    w.v["k2"] = t1.pkey_alloc(0, 0)                    # T1: k2 open
    t1.pkey_mprotect(w.v["foo"], PAGE_SIZE, RW, w.v["k"])
    return w


def _hardware_load(w: World) -> None:
    """The CPU walks to foo's PTE and checks its key against T1's PKRU."""
    t1, mm = w.T1, w.T1.process.mm
    t1._enter()
    addr = w.v["foo"]
    pte = mm.ptes.get(addr >> PAGE_SHIFT)
    fault = check_user_access(pte, t1.pkru, write=False, fetch=False, pke=mm.ospke)
    if fault is None:
        w.v["x"] = t1.load(addr)                       # completes without a fault
    else:
        w.v["err"] = fault.error_code
        w.v["pte_key"] = pte.pkey if pte is not None else None


def _kernel_fault(w: World) -> None:
    """``do_user_addr_fault`` (VMA lock from 6.4, mmap lock before), then the signal; no handler: death."""
    if "err" not in w.v:
        return
    t1 = w.T1
    t1._enter()
    info = do_user_addr_fault(t1.process.mm, t1.pkru, w.v["foo"], w.v["err"])
    if info is None:                                   # the page was filled in: run the load again
        w.v["x"] = t1.load(w.v["foo"])
    else:
        w.v["x"] = force_sig_fault(t1, info, w.v["err"])


race(Race(
    name="SIPKEY+fault+pkeymprotect",
    family="signals",
    question=(
        "T1 reads foo, whose PTE carries key k for which T1 has access disabled: the CPU "
        "raises a page fault with the PK bit. Before the kernel's fault handler finds the VMA "
        "(under the per-VMA lock from 6.4, the mmap lock before), T2 re-tags foo with key k2, "
        "which T1 may even access. The handler then reads the key from the VMA, not from the "
        "PTE that faulted. Can si_pkey name a key other "
        "than the one that denied the access?"),
    setup=_sipkey_setup,
    threads={
        "T1": (
            access("x = *foo: #PF(PK), the CPU reports the error code; the PTE had key pte_key",
                   _hardware_load, write_mm=False),
            access("if (#PF) do_user_addr_fault(): lock the VMA; si_pkey = vma_pkey(vma of foo)",
                   _kernel_fault),
        ),
        "T2": (pkey_mprotect("T2", "foo", "k2"),),
    },
    exists=lambda w: killed_by_pkuerr(w.v.get("x")) and w.v["x"].siginfo.si_pkey != w.v.get("pte_key"),
    exists_text="T1 dies of SEGV_PKUERR with si_pkey different from the key in the faulting PTE",
    result="Sometimes",
    facts=("RACE-SIPKEY-STALE", "ERR-SIGINFO", "HW-X86-PFEC-PK", "SYS-SERIALIZED"),
    observe=("pte_key", "x"),
    note="The kernel's own comment in bad_area_access_error admits it; ppc and arm64 do the same.",
))


# --- RACE-AMD-XINUSE ---------------------------------------------------------------------------

_RESTRICTIVE = 0xFFFF0000      # keys 8..15 denied, as in the bug report


def _xinuse_setup(kernel: str, vendor: str):
    def setup() -> World:
        system = System(kernel=kernel, cpu_vendor=vendor)
        t = system.spawn()
        t.sigaction(SIGUSR1, _handler_does_nothing)
        return World(system, {"T": t})
    return setup


_XINUSE_T = (
    register(f"wrpkru({_RESTRICTIVE:#x})  /* deny keys 8..15 */",
             lambda w: w.T.wrpkru(_RESTRICTIVE), write=True),
    register("p = rdpkru()  /* what the thread runs with now */",
             lambda w: w.do("p", w.T.rdpkru), write=False),
)

race(Race(
    name="XINUSE+wrpkru+tgkill",
    family="signals",
    question=(
        "T restricts itself with wrpkru(0xffff0000); a signal arrives and its handler returns. "
        "Linux 6.12 writes PKRU = 0 before it XSAVEs the frame, and AMD's init tracker then "
        "records PKRU as unused (XSTATE_BV bit 9 clear), although the kernel stores T's value "
        "in the frame afterwards. Does T come back from sigreturn with every key open?"),
    setup=_xinuse_setup("6.12.4", "amd"),
    threads={"T": _XINUSE_T, "S": (deliver("tgkill(T, SIGUSR1): a handler that returns"),)},
    exists=lambda w: w.v.get("p") == 0,
    exists_text="after the signal T runs with PKRU = 0: every key open",
    result="Sometimes",
    facts=("RACE-AMD-XINUSE", "HW-X86-INIT-TRACKER", "SIG-X86-613-XSTATE_BV"),
    observe=("p",),
    note='System(kernel="6.12.4", cpu_vendor="amd"): before the fix, from the kernel mail, not run.',
))

race(Race(
    name="XINUSE+wrpkru+tgkill+fixed",
    family="signals",
    variant_of="XINUSE+wrpkru+tgkill",
    variant="As above, but on 6.12.5, where the kernel sets XSTATE_BV bit 9 itself after storing the saved PKRU.",
    question="With the fix (6.13-rc2, backported to 6.12.5), can T still come back with PKRU = 0?",
    setup=_xinuse_setup("6.12.5", "amd"),
    threads={"T": _XINUSE_T, "S": (deliver("tgkill(T, SIGUSR1): a handler that returns"),)},
    exists=lambda w: w.v.get("p") == 0,
    exists_text="after the signal T runs with PKRU = 0: every key open",
    result="Never",
    facts=("RACE-AMD-XINUSE", "SIG-X86-613-XSTATE_BV"),
    observe=("p",),
    note='System(kernel="6.12.5", cpu_vendor="amd").',
))

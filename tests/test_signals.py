"""Signals and PKRU on x86: the handler's PKRU, the frame, sigreturn, and where Linux versions differ.

Every expected value is Linux's: the observed rows of
``/work/shared/linux-observed.md`` (named "row e", "row f", "row o1", ...),
the facts of ``pkeys-facts.md`` (IDs in the docstrings), or the kernel source
named in the docstring. A handler is a Python callable that receives a
``SignalContext``; ``touches_stack=False`` stands for an assembly handler
whose first instruction does not push.
"""

import errno

import pytest

from pkeyspec import (
    MAP_ANONYMOUS, MAP_PRIVATE, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE, PROT_READ, PROT_WRITE,
    SA_NODEFER, SA_ONSTACK, SA_RESETHAND, SIG_DFL, SIG_IGN, SIGSEGV, SIGUSR1, SIGUSR2, SS_DISABLE,
    Exited, Killed, Livelock, System, glibc, pkru_with_rights,
)
from pkeyspec.signals import SI_TKILL
from tests.helpers import err_of, bits

KERNELS = ("6.1", "6.12", "7.2")
PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
AD = PKEY_DISABLE_ACCESS
WD = PKEY_DISABLE_WRITE
INIT_PKRU = 0x55555554
# Linux UAPI values (include/uapi/linux/signal.h, arch/x86/include/uapi/asm/signal.h).
SS_ONSTACK = 1
SS_AUTODISARM = 1 << 31
MINSIGSTKSZ = 2048
SEGV_PKUERR = 4
SI_KERNEL = 0x80
#: The XSAVE image in the frame: XSTATE_BV at byte 512, PKRU at byte 2688 (observed, row f).
XSTATE_BV = 512
XSAVE_PKRU = 2688
XFEATURE_PKRU_BIT = 1 << 9


def spawn(kernel="7.2", **kw):
    return System(kernel=kernel, pku=True, **kw).spawn()


def populated(t, pages=1, value=0x5A):
    p = t.mmap(0, pages * PAGE, RW, ANON)
    for i in range(pages):
        assert t.store(p + i * PAGE, value) is None
    return p


def keyed_page(t, rights, value=0x5A):
    """A populated page holding ``value`` whose key is allocated with ``rights`` by ``t``."""
    p = populated(t, value=value)
    k = t.pkey_alloc(0, rights)
    assert t.pkey_mprotect(p, PAGE, RW, k) == 0
    return p, k




def frame_pkru(ctx):
    """The handler's own 4-byte load of the PKRU slot of the frame's XSAVE image."""
    return ctx.thread.load(ctx.fpstate + XSAVE_PKRU, 4)


def frame_xstate_bv(ctx):
    return ctx.thread.load(ctx.fpstate + XSTATE_BV, 8)


def assert_killed_sigsegv(end, si_code=None):
    assert isinstance(end, Killed), end
    assert end.signo == SIGSEGV
    if si_code is not None:
        assert end.siginfo.si_code == si_code


# --- the handler starts with init_pkru -------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("interrupted", [0x55555558, 0x0, 0xFFFFFFFC, 0x55555554, 0x15555550])
def test_handler_starts_with_init_pkru_whatever_was_interrupted(kernel, interrupted):
    """Whatever the interrupted PKRU, the handler's first RDPKRU reads 0x55555554.

    Row f: "PKRU inside a SIGUSR1 handler (interrupted PKRU 0x55555558)" ->
    "0x55555554 (= init_pkru)" on 6.1, 6.12 and 7.2.

    Facts: SIG-X86-HANDLER-RIGHTS, INIT-PKRU-VALUE, SEC-HANDLER-GETS-KEY0.
    """
    t = spawn(kernel)
    assert t.wrpkru(interrupted) is None
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()))
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [0x55555554]
    assert t.rdpkru() == interrupted


def test_handler_starts_with_the_debugfs_value_at_delivery_time():
    """The handler gets the global init_pkru as it is when the signal is delivered.

    Two deliveries with a debugfs write in between: 0x55555554, then the
    written 0x55555550. The thread's own PKRU is not touched by the write.

    Facts: SIG-HANDLER-RIGHTS-GLOBAL, INIT-PKRU-TUNABLE.
    """
    t = spawn()
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()))
    assert t.raise_signal(SIGUSR1) is None
    assert t.system.debugfs_write("x86/init_pkru", "0x55555550") == 10
    assert t.rdpkru() == 0x55555554
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [0x55555554, 0x55555550]


def test_handler_starts_with_the_boot_parameter_value():
    """With ``init_pkru=0x15555554`` on the command line, handlers start with 0x15555554.

    Row p (6.1, 7.2): "PID 1, main process and handlers start with it".

    Facts: INIT-PKRU-TUNABLE, SIG-HANDLER-RIGHTS-GLOBAL.
    """
    t = spawn(init_pkru="0x15555554")
    assert t.wrpkru(0) is None
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()))
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [0x15555554]
    assert t.rdpkru() == 0


def test_nested_handler_starts_with_init_pkru_and_saves_the_outer_handlers_pkru():
    """A handler interrupted by another signal: the inner one starts with init_pkru too.

    The outer handler opens every key (WRPKRU 0) and raises SIGUSR2: the
    inner handler starts with 0x55555554, its frame holds 0 (the outer
    handler's PKRU), and after it returns the outer handler has 0 again;
    after the outer returns the thread has its own 0x55555558.

    Facts: SIG-X86-HANDLER-RIGHTS ("nested ones included"), SIG-X86-RESTORE.
    """
    t = spawn()
    assert t.pkey_alloc(0, WD) == 1
    assert t.rdpkru() == 0x55555558
    events = []

    def inner(ctx):
        events.append(("inner starts", ctx.thread.rdpkru(), frame_pkru(ctx)))

    def outer(ctx):
        events.append(("outer starts", ctx.thread.rdpkru(), frame_pkru(ctx)))
        assert ctx.thread.wrpkru(0) is None
        assert ctx.thread.raise_signal(SIGUSR2) is None
        events.append(("outer after inner", ctx.thread.rdpkru(), None))

    t.sigaction(SIGUSR1, outer)
    t.sigaction(SIGUSR2, inner)
    assert t.raise_signal(SIGUSR1) is None
    assert events == [("outer starts", 0x55555554, 0x55555558),
                      ("inner starts", 0x55555554, 0x0),
                      ("outer after inner", 0x0, None)]
    assert t.rdpkru() == 0x55555558


# --- the frame: PKRU at XSAVE+2688, XSTATE_BV bit 9 ------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
def test_frame_holds_interrupted_pkru_at_xsave_offset_2688(kernel):
    """Row f: "PKRU in the frame's XSAVE area (offset 2688)" -> "0x55555558" on all kernels.

    The interrupted PKRU is 0x55555558 (key 1 allocated with WD); the
    handler reads 4 bytes at the XSAVE image + 2688.

    Facts: SIG-X86-RESTORE, HW-X86-XSAVE-COMPONENT.
    """
    t = spawn(kernel)
    assert t.pkey_alloc(0, WD) == 1
    seen = []

    def handler(ctx):
        assert ctx.frame_pkru_address == ctx.fpstate + 2688
        seen.append(frame_pkru(ctx))

    t.sigaction(SIGUSR1, handler)
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [0x55555558]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("interrupted", [0x55555558, 0x0])
def test_frame_xstate_bv_has_bit_9_also_when_pkru_is_0(kernel, interrupted):
    """Row f: "xstate_bv bit 9" -> "bit set (also set when PKRU=0)".

    With PKRU 0 (the hardware init value) XSAVE could report PKRU in its
    init state; Linux forces the bit so that sigreturn's XRSTOR loads the
    slot (the AMD fix).

    Facts: HW-X86-XSAVE-COMPONENT, SIG-X86-613-XSTATE_BV, RACE-AMD-XINUSE.
    """
    t = spawn(kernel)
    assert t.wrpkru(interrupted) is None
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append((frame_xstate_bv(ctx), frame_pkru(ctx))))
    assert t.raise_signal(SIGUSR1) is None
    [(bv, pkru)] = seen
    assert bv & XFEATURE_PKRU_BIT
    assert pkru == interrupted


@pytest.mark.parametrize("kernel", KERNELS)
def test_wrpkru_in_handler_is_lost_at_sigreturn(kernel):
    """Row f: "wrpkru inside the handler, then return" -> "lost: PKRU back to 0x55555558".

    The WRPKRU itself works (the handler reads 0 back); sigreturn reloads
    the frame's value.

    Facts: SIG-X86-HANDLER-WRPKRU-LOST, SIG-X86-RESTORE.
    """
    t = spawn(kernel)
    assert t.pkey_alloc(0, WD) == 1
    seen = []

    def handler(ctx):
        assert ctx.thread.wrpkru(0) is None
        seen.append(ctx.thread.rdpkru())

    t.sigaction(SIGUSR1, handler)
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [0]
    assert t.rdpkru() == 0x55555558


def test_glibc_pkey_set_in_handler_is_lost_too():
    """glibc's pkey_set is RDPKRU + WRPKRU in user space, so it is lost like a WRPKRU.

    Facts: SIG-X86-HANDLER-WRPKRU-LOST, GLIBC-X86-SET, RACE-GLIBC-SET-VS-SIGNAL.
    """
    t = spawn()
    k = t.pkey_alloc(0, AD)
    before = t.rdpkru()
    t.sigaction(SIGUSR1, lambda ctx: glibc.pkey_set(ctx.thread, k, 0))
    assert t.raise_signal(SIGUSR1) is None
    assert t.rdpkru() == before
    assert bits(t.rdpkru(), k) == AD


@pytest.mark.parametrize("kernel", KERNELS)
def test_frame_edit_is_kept_after_sigreturn(kernel):
    """Row f: "edit the frame PKRU, then return" -> "takes effect (0x59555558)".

    A WRPKRU in the same handler after the edit does not matter: the frame wins.

    Facts: SIG-FRAME-PKRU-IS-INPUT, SIG-X86-HANDLER-WRPKRU-LOST.
    """
    t = spawn(kernel)
    assert t.pkey_alloc(0, WD) == 1

    def handler(ctx):
        assert ctx.set_frame_pkru(0x59555558) is None
        assert ctx.thread.wrpkru(0x0) is None

    t.sigaction(SIGUSR1, handler)
    assert t.raise_signal(SIGUSR1) is None
    assert t.rdpkru() == 0x59555558


@pytest.mark.parametrize("kernel", KERNELS)
def test_clearing_xstate_bv_bit_9_gives_pkru_0_not_init_pkru(kernel):
    """XSTATE_BV bit 9 clear: XRSTOR loads PKRU's hardware init value 0 (every key open).

    The handler keeps every other XSTATE_BV bit and leaves the PKRU slot
    alone (0x55555558); after sigreturn PKRU is 0, not 0x55555554 and not
    the slot's value.

    Facts: INIT-PKRU-VS-HW-INIT, SEC-SIGRETURN, HW-X86-XSAVE-COMPONENT.
    """
    t = spawn(kernel)
    assert t.pkey_alloc(0, WD) == 1

    def handler(ctx):
        bv = frame_xstate_bv(ctx)
        assert ctx.thread.store(ctx.fpstate + XSTATE_BV, bv & ~XFEATURE_PKRU_BIT, 8) is None

    t.sigaction(SIGUSR1, handler)
    assert t.raise_signal(SIGUSR1) is None
    assert t.rdpkru() == 0x0


# --- repairing a protection-key fault ------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
def test_sigsegv_handler_repairs_pkey_fault_by_editing_the_frame(kernel):
    """Row f: "SIGSEGV handler clears AD in the frame, then returns" -> "faulting load
    re-executes and succeeds, 1 handler call".

    The handler sees SEGV_PKUERR with si_pkey = k and the exact address, and
    err 0x25 (row e, populated page); after the repair the thread keeps the
    repaired PKRU.

    Facts: SIG-FRAME-PKRU-IS-INPUT, ERR-SIGINFO, SIG-X86-RESTORE.
    """
    t = spawn(kernel)
    p, k = keyed_page(t, AD, value=42)
    calls = []

    def repair(ctx):
        calls.append((ctx.info.si_signo, ctx.info.si_code, ctx.info.si_addr, ctx.info.si_pkey,
                      ctx.err))
        assert ctx.set_frame_pkru(pkru_with_rights(frame_pkru(ctx), ctx.info.si_pkey, 0)) is None

    t.sigaction(SIGSEGV, repair)
    before = t.rdpkru()
    assert t.load(p + 7) == 0
    assert t.load(p) == 42
    assert calls == [(SIGSEGV, SEGV_PKUERR, p + 7, k, 0x25)]
    assert t.rdpkru() == pkru_with_rights(before, k, 0)


def test_sigsegv_handler_repairs_a_write_disabled_store():
    """A store to a WD page faults once; the handler clears WD in the frame; the store is done.

    Facts: SIG-FRAME-PKRU-IS-INPUT, HW-X86-AD-WD-SEMANTICS.
    """
    t = spawn()
    p, k = keyed_page(t, WD)
    calls = []

    def repair(ctx):
        calls.append((ctx.info.si_code, ctx.info.si_pkey, ctx.err))
        assert ctx.set_frame_pkru(pkru_with_rights(frame_pkru(ctx), k, 0)) is None

    t.sigaction(SIGSEGV, repair)
    assert t.store(p + 1, 0x77) is None
    assert calls == [(SEGV_PKUERR, k, 0x27)]
    assert t.load(p + 1) == 0x77


def test_sigsegv_handler_repairs_by_retagging_the_page():
    """A handler may fix the page instead of PKRU: pkey_mprotect it back to key 0.

    One call; the load re-executes on the re-keyed page; the thread's PKRU
    (AD for k) is restored unchanged by sigreturn.

    Facts: SEC-REMAP-RETAG, SEC-PKEY-MPROTECT-NO-PKRU-CHECK, SIG-X86-RESTORE.
    """
    t = spawn()
    p, k = keyed_page(t, AD, value=9)
    before = t.rdpkru()
    calls = []

    def retag(ctx):
        calls.append(ctx.info.si_pkey)
        assert ctx.thread.pkey_mprotect(p, PAGE, RW, 0) == 0

    t.sigaction(SIGSEGV, retag)
    assert t.load(p) == 9
    assert calls == [k]
    assert t.rdpkru() == before
    assert t.smaps_pkey(p) == 0


def test_handler_that_does_not_repair_gives_a_livelock_record():
    """A SIGSEGV handler that returns without repairing: the load faults again and again.

    Linux re-executes forever; the model stops and records a Livelock, ends
    the process with it, and called the handler more than once, with the same
    siginfo each time.

    Facts: SIG-X86-RESTORE, ERR-SIGINFO.
    """
    t = spawn()
    p, k = keyed_page(t, AD)
    calls = []
    t.sigaction(SIGSEGV, lambda ctx: calls.append((ctx.info.si_code, ctx.info.si_addr,
                                                  ctx.info.si_pkey)))
    end = t.load(p)
    assert isinstance(end, Livelock), end
    assert end.siginfo.si_code == SEGV_PKUERR
    assert end.siginfo.si_pkey == k
    assert t.process.end is end
    assert len(calls) >= 2
    assert set(calls) == {(SEGV_PKUERR, p, k)}
    with pytest.raises(ProcessLookupError):
        t.rdpkru()


def test_handler_repairing_with_wrpkru_only_gives_a_livelock():
    """Opening the key with WRPKRU in the handler is lost at sigreturn, so the fault repeats.

    Facts: SIG-X86-HANDLER-WRPKRU-LOST.
    """
    t = spawn()
    p, k = keyed_page(t, AD)
    calls = []

    def wrong_repair(ctx):
        calls.append(ctx.info.si_pkey)
        assert ctx.thread.wrpkru(0) is None

    t.sigaction(SIGSEGV, wrong_repair)
    end = t.load(p)
    assert isinstance(end, Livelock), end
    assert len(calls) >= 2


@pytest.mark.parametrize("kernel", KERNELS)
def test_fault_inside_the_handler_of_the_same_signal_kills(kernel):
    """A SIGSEGV handler that itself faults: SIGSEGV is blocked in its handler, so the
    forced signal is reset to SIG_DFL and kills the process (one handler call).

    The handler runs with init_pkru, which denies key k: its own load of the
    page faults with SEGV_PKUERR.

    Facts: SIG-X86-HANDLER-RIGHTS, SIG-HANDLER-STACK-KEY. Source:
    kernel/signal.c ``force_sig_info_to_task`` (blocked or ignored: handler
    reset to SIG_DFL, signal unblocked).
    """
    t = spawn(kernel)
    p, k = keyed_page(t, 0)
    q, k2 = keyed_page(t, AD)
    calls = []

    def handler(ctx):
        calls.append(ctx.info.si_addr)
        ctx.thread.load(p)              # key k is AD under init_pkru

    t.sigaction(SIGSEGV, handler)
    end = t.load(q)
    assert_killed_sigsegv(end, SEGV_PKUERR)
    assert end.siginfo.si_addr == p
    assert end.siginfo.si_pkey == k
    assert calls == [q]
    assert t.process.end == end


def test_sig_ign_does_not_ignore_a_forced_fault():
    """SIGSEGV set to SIG_IGN: a protection-key fault still kills (the handler is reset).

    The twin: SIG_IGN for SIGUSR1 sent with raise() is ignored and the
    process runs on.

    Facts: ERR-SIGINFO. Source: kernel/signal.c ``force_sig_info_to_task``.
    """
    t = spawn()
    p, k = keyed_page(t, AD)
    t.sigaction(SIGSEGV, SIG_IGN)
    t.sigaction(SIGUSR1, SIG_IGN)
    assert t.raise_signal(SIGUSR1) is None
    assert t.alive
    end = t.load(p)
    assert_killed_sigsegv(end, SEGV_PKUERR)
    assert end.siginfo.si_pkey == k


def test_default_action_of_sigusr1_kills():
    """No handler: SIGUSR1 ends the process (WIFSIGNALED, WTERMSIG = SIGUSR1)."""
    t = spawn()
    end = t.raise_signal(SIGUSR1)
    assert isinstance(end, Killed)
    assert end.signo == SIGUSR1
    assert not t.alive


# --- SA_NODEFER, SA_RESETHAND ---------------------------------------------------------------

def test_sa_nodefer_fault_in_the_handler_runs_the_handler_again_nested():
    """With SA_NODEFER, SIGSEGV is not blocked in its handler: a fault there nests.

    The main thread faults on a page with key k (AD); the handler (with
    init_pkru, AD for k) loads the same page and faults; the nested call
    repairs its own frame (init_pkru with k open), the outer handler's load
    then succeeds; the outer handler repairs the main thread's frame. Two
    calls, and the main thread's load succeeds. Without SA_NODEFER the
    nested fault kills (test above).

    Facts: SIG-X86-HANDLER-RIGHTS, SIG-FRAME-PKRU-IS-INPUT. Source: kernel/signal.c
    ``signal_delivered`` (the signal is added to the mask unless SA_NODEFER).
    """
    t = spawn()
    p, k = keyed_page(t, AD, value=5)
    calls = []

    def handler(ctx):
        calls.append(frame_pkru(ctx))
        if len(calls) == 1:
            calls.append(("outer loaded", ctx.thread.load(p)))
        assert ctx.set_frame_pkru(pkru_with_rights(frame_pkru(ctx), k, 0)) is None

    t.sigaction(SIGSEGV, handler, SA_NODEFER)
    interrupted = t.rdpkru()
    assert t.load(p) == 5
    assert calls == [interrupted, INIT_PKRU, ("outer loaded", 5)]


@pytest.mark.parametrize(("flags", "order"), [
    (0, ["enter", "leave", "enter", "leave"]),
    (SA_NODEFER, ["enter", "enter", "leave", "leave"]),
])
def test_raise_in_handler_pending_until_sigreturn_unless_sa_nodefer(flags, order):
    """A handler that raises its own signal: delivered after sigreturn, or at once with SA_NODEFER.

    Source: kernel/signal.c ``signal_delivered`` (SA_NODEFER), ``rt_sigreturn``
    restores the mask from the frame, and the pending signal is delivered on
    the way back to user space.
    """
    t = spawn()
    events = []

    def handler(ctx):
        events.append("enter")
        if events.count("enter") == 1:
            assert ctx.thread.raise_signal(SIGUSR1) is None
        events.append("leave")

    t.sigaction(SIGUSR1, handler, flags)
    assert t.raise_signal(SIGUSR1) is None
    assert events == order
    assert t.alive


def test_sa_resethand_second_signal_kills():
    """SA_RESETHAND: the disposition is SIG_DFL once the handler is entered.

    The first SIGUSR1 runs the handler; sigaction then reports SIG_DFL as
    the old action; the second SIGUSR1 kills.

    Source: kernel/signal.c ``get_signal`` (SA_ONESHOT).
    """
    t = spawn()
    calls = []
    t.sigaction(SIGUSR1, lambda ctx: calls.append(ctx.info.si_signo), SA_RESETHAND)
    assert t.raise_signal(SIGUSR1) is None
    assert calls == [SIGUSR1]
    old = t.sigaction(SIGUSR1, SIG_DFL)
    assert old.handler == SIG_DFL
    end = t.raise_signal(SIGUSR1)
    assert isinstance(end, Killed) and end.signo == SIGUSR1
    assert calls == [SIGUSR1]


def test_sa_resethand_without_nodefer_blocks_the_signal_in_the_handler():
    """SA_RESETHAND alone does not imply SA_NODEFER: a raise in the handler stays pending.

    The handler runs to its end ("leave"), and only then does the pending
    SIGUSR1, now SIG_DFL, kill the process.

    Source: kernel/signal.c ``signal_delivered`` (only SA_NODEFER skips the mask).
    """
    t = spawn()
    events = []

    def handler(ctx):
        events.append("enter")
        assert ctx.thread.raise_signal(SIGUSR1) is None
        events.append("leave")

    t.sigaction(SIGUSR1, handler, SA_RESETHAND)
    end = t.raise_signal(SIGUSR1)
    assert events == ["enter", "leave"]
    assert isinstance(end, Killed) and end.signo == SIGUSR1


def test_dispositions_are_shared_by_the_threads_of_a_process():
    """sigaction in one thread sets the handler for every thread of the process.

    Facts: THR-NO-REMOTE-SET (the PKRU, not the disposition, is per thread).
    """
    t = spawn()
    u = t.clone()
    seen = []
    u.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.tid))
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [t.tid]


# --- sigaltstack -------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [99, 3, 4, 0x7FFFFFFF])
def test_sigaltstack_unknown_flags_einval(flags):
    """ss_flags other than 0, SS_ONSTACK, SS_DISABLE (plus SS_AUTODISARM): EINVAL.

    Source: kernel/signal.c ``do_sigaltstack`` (``ss_mode = ss_flags & ~SS_FLAG_BITS``).
    """
    t = spawn()
    alt = populated(t, 2)
    assert err_of(t.sigaltstack, alt, 2 * PAGE, flags) == errno.EINVAL


def test_sigaltstack_einval_is_checked_before_enomem():
    """Bad flags and a too-small size: EINVAL (the mode is checked first)."""
    t = spawn()
    assert err_of(t.sigaltstack, 0x10000, 16, 99) == errno.EINVAL


@pytest.mark.parametrize(("size", "ok"), [(0, False), (2047, False), (MINSIGSTKSZ, True),
                                          (2 * PAGE, True)])
def test_sigaltstack_smaller_than_minsigstksz_enomem(size, ok):
    """ss_size below MINSIGSTKSZ (2048 on x86): ENOMEM; 2048 is accepted.

    Source: kernel/signal.c ``do_sigaltstack``; arch/x86/include/uapi/asm/signal.h.
    """
    t = spawn()
    alt = populated(t, 2)
    if ok:
        assert t.sigaltstack(alt, size) == 0
    else:
        assert err_of(t.sigaltstack, alt, size) == errno.ENOMEM


def test_sigaltstack_disable_needs_no_size_and_ss_onstack_flag_is_accepted():
    """SS_DISABLE ignores ss_sp and ss_size; SS_ONSTACK as ss_flags is accepted like 0."""
    t = spawn()
    alt = populated(t, 2)
    assert t.sigaltstack(0, 0, SS_DISABLE) == 0
    assert t.sigaltstack(alt, 2 * PAGE, SS_ONSTACK) == 0


@pytest.mark.parametrize("mode", [0, SS_DISABLE])
def test_sigaltstack_ss_autodisarm_is_accepted(mode):
    """SS_AUTODISARM (1 << 31) is a flag bit, not a mode: sigaltstack returns 0.

    Linux 4.7 and later mask it out before checking the mode
    (``SS_FLAG_BITS``). The 6.12 pkeys series reads the altstack settings
    back from the frame at sigreturn because of it (SIG-X86-ALTSTACK-ORDER).

    Facts: SIG-X86-ALTSTACK-ORDER. Source: kernel/signal.c ``do_sigaltstack``,
    include/uapi/linux/signal.h (``SS_AUTODISARM``, ``SS_FLAG_BITS``).
    """
    t = spawn()
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE, mode | SS_AUTODISARM) == 0


def test_sigaltstack_while_on_it_eperm():
    """A handler running on the alternate stack cannot change or disable it: EPERM.

    EPERM comes before the flags check. Once the handler has returned the
    same call works.

    Source: kernel/signal.c ``do_sigaltstack`` (``on_sig_stack(sp)``).
    """
    t = spawn()
    alt = populated(t, 2)
    other = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    errs = []

    def handler(ctx):
        assert alt <= ctx.frame < alt + 2 * PAGE
        errs.append(err_of(ctx.thread.sigaltstack, other, 2 * PAGE))
        errs.append(err_of(ctx.thread.sigaltstack, 0, 0, SS_DISABLE))
        errs.append(err_of(ctx.thread.sigaltstack, other, 2 * PAGE, 99))

    t.sigaction(SIGUSR1, handler, SA_ONSTACK)
    assert t.raise_signal(SIGUSR1) is None
    assert errs == [errno.EPERM] * 3
    assert t.sigaltstack(other, 2 * PAGE) == 0


def test_sigaltstack_reports_its_flags():
    """``sigaltstack(NULL, &old)``: SS_DISABLE at first, 0 off the stack, SS_ONSTACK on it,
    SS_AUTODISARM kept as given (observed: r0_sigaltstack_flags, r2).

    Source: kernel/signal.c ``do_sigaltstack``, include/linux/sched/signal.h ``sas_ss_flags``.
    """
    t = spawn()
    alt = populated(t, 2)
    assert t.get_sigaltstack() == (0, 0, SS_DISABLE)
    assert t.sigaltstack(alt, 2 * PAGE, SS_ONSTACK) == 0
    assert t.get_sigaltstack() == (alt, 2 * PAGE, 0)
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.get_sigaltstack()[2]), SA_ONSTACK)
    assert t.raise_signal(SIGUSR1) is None and seen == [SS_ONSTACK]
    assert t.sigaltstack(0, 0, SS_DISABLE | SS_AUTODISARM) == 0
    assert t.get_sigaltstack() == (0, 0, SS_DISABLE | SS_AUTODISARM)


def test_sigaltstack_without_change_returns_before_the_size_check():
    """Setting what is already set returns 0 at once (``do_sigaltstack``: "Return before
    taking any locks if no actual sigaltstack changes were requested")."""
    t = spawn()
    assert t.sigaltstack(0, 0, SS_DISABLE) == 0
    assert err_of(t.sigaltstack, 0, 0) == errno.ENOMEM
    assert t.altstack_flags == SS_DISABLE


def test_sigaltstack_size_is_only_checked_against_minsigstksz():
    """x86's ``sigaltstack_size_valid`` compares with the signal frame size only under
    ``strict_sas_size`` or after ``ARCH_REQ_XCOMP_PERM``; the model has neither."""
    from pkeyspec.tasks import sigaltstack_size_valid
    t = spawn()
    assert sigaltstack_size_valid(t, MINSIGSTKSZ)
    assert t.sigaltstack(populated(t, 1), MINSIGSTKSZ) == 0


def test_ss_autodisarm_disarms_while_the_handler_runs_and_sigreturn_rearms():
    """With SS_AUTODISARM the kernel resets the alternate stack when it delivers a signal
    (``save_altstack``), so the handler on it may call sigaltstack; sigreturn restores the
    saved one (``restore_altstack``). Observed: r3_sigaltstack_in_handler_autodisarm.
    """
    t = spawn()
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE, SS_AUTODISARM) == 0
    seen = []

    def handler(ctx):
        assert alt <= ctx.frame < alt + 2 * PAGE
        seen.append(ctx.thread.get_sigaltstack()[2])
        seen.append(ctx.thread.sigaltstack(0, 0, SS_DISABLE))

    t.sigaction(SIGUSR1, handler, SA_ONSTACK)
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [SS_DISABLE, 0]
    assert t.get_sigaltstack() == (alt, 2 * PAGE, SS_AUTODISARM)


def test_sigreturn_restores_the_altstack_a_handler_changed():
    """A handler on the ordinary stack may disable the alternate stack, but sigreturn sets
    the one saved in the frame again. Observed: r4_sigaltstack_in_handler_off_altstack."""
    t = spawn()
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.sigaltstack(0, 0, SS_DISABLE)))
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [0]
    assert t.get_sigaltstack() == (alt, 2 * PAGE, 0)


def test_execve_clears_the_altstack_but_keeps_its_flags():
    """``begin_new_exec`` zeroes sas_ss_sp and sas_ss_size only."""
    t = spawn()
    assert t.sigaltstack(populated(t, 2), 2 * PAGE, SS_AUTODISARM) == 0
    t = t.execve()
    assert t.get_sigaltstack() == (0, 0, SS_DISABLE | SS_AUTODISARM)


def test_frame_goes_on_the_altstack_only_with_sa_onstack():
    """The frame is on the alternate stack for an SA_ONSTACK handler, else on the thread's stack.

    After SS_DISABLE an SA_ONSTACK handler's frame is on the thread's stack again.

    Source: arch/x86/kernel/signal.c ``get_sigframe``.
    """
    t = spawn()
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    frames = []
    t.sigaction(SIGUSR1, lambda ctx: frames.append(ctx.frame), SA_ONSTACK)
    t.sigaction(SIGUSR2, lambda ctx: frames.append(ctx.frame))
    assert t.raise_signal(SIGUSR1) is None
    assert t.raise_signal(SIGUSR2) is None
    assert t.sigaltstack(0, 0, SS_DISABLE) == 0
    assert t.raise_signal(SIGUSR1) is None
    on_alt = [alt <= f < alt + 2 * PAGE for f in frames]
    assert on_alt == [True, False, False]
    assert all(f < t.sp for f in frames[1:])


# --- asynchronous signals: pending, tgkill ------------------------------------------------

def test_signal_raised_in_its_handler_is_delivered_after_sigreturn_with_restored_pkru():
    """The pending SIGUSR1 is delivered after sigreturn, interrupting the restored context.

    Its frame holds the thread's own PKRU (0x55555558), not the first
    handler's (the first handler did WRPKRU 0); it starts with init_pkru.

    Facts: SIG-X86-RESTORE, SIG-X86-HANDLER-RIGHTS.
    """
    t = spawn()
    assert t.pkey_alloc(0, WD) == 1
    seen = []

    def handler(ctx):
        seen.append((frame_pkru(ctx), ctx.thread.rdpkru()))
        if len(seen) == 1:
            assert ctx.thread.wrpkru(0) is None
            assert ctx.thread.raise_signal(SIGUSR1) is None
            assert len(seen) == 1          # still pending: SIGUSR1 is blocked here

    t.sigaction(SIGUSR1, handler)
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [(0x55555558, INIT_PKRU), (0x55555558, INIT_PKRU)]
    assert t.rdpkru() == 0x55555558


def test_tgkill_to_another_thread_is_delivered_to_that_thread_at_its_next_step():
    """tgkill(tid of u, SIGUSR1): u runs the handler (with init_pkru) before its next step.

    The handler's frame holds u's PKRU, and u continues with its own PKRU;
    the sender's PKRU is not involved.

    Facts: HW-X86-THREAD-LOCAL, SIG-X86-HANDLER-RIGHTS, SIG-X86-RESTORE.
    """
    t = spawn()
    u = t.clone()
    assert u.wrpkru(0x15555550) is None
    assert t.wrpkru(0x0) is None
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append((ctx.thread.tid, ctx.thread.rdpkru(),
                                                 frame_pkru(ctx))))
    assert t.tgkill(u.tid, SIGUSR1) == 0
    assert u.rdpkru() == 0x15555550
    assert seen == [(u.tid, INIT_PKRU, 0x15555550)]
    assert t.rdpkru() == 0x0


def test_tgkill_to_self_is_delivered_before_tgkill_returns():
    """A signal a thread sends to itself is delivered on its return from the call."""
    t = spawn()
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.tid))
    assert t.tgkill(t.tid, SIGUSR1) == 0
    assert seen == [t.tid]


def test_tgkill_unknown_thread_esrch():
    """tgkill to a tid that is not a thread of the process: ESRCH (ProcessLookupError)."""
    t = spawn()
    with pytest.raises(ProcessLookupError) as exc:
        t.tgkill(12345, SIGUSR1)
    assert exc.value.errno == errno.ESRCH


def test_tgkill_and_raise_with_signal_0_send_nothing():
    """Signal 0 checks that the target exists and sends nothing: the process runs on.

    Source: kernel/signal.c ``do_send_specific`` (``if (!error && sig)``),
    tgkill(2) ("If sig is 0, then no signal is sent, but existence and
    permission checks are still performed").
    """
    t = spawn()
    u = t.clone()
    assert t.tgkill(u.tid, 0) == 0
    assert u.rdpkru() == INIT_PKRU
    assert t.raise_signal(0) is None
    assert t.alive
    assert t.process.end is None


@pytest.mark.parametrize("signo", [65, -1, 1000])
def test_tgkill_invalid_signal_einval(signo):
    """A signal number outside 1..64 (and not 0): EINVAL, nothing is queued.

    Source: kernel/signal.c ``do_tkill`` -> ``do_send_specific`` ->
    ``check_kill_permission`` (``if (!valid_signal(sig)) return -EINVAL``).
    """
    t = spawn()
    u = t.clone()
    assert err_of(t.tgkill, u.tid, signo) == errno.EINVAL
    assert u.rdpkru() == INIT_PKRU
    assert t.alive


def test_fatal_signal_to_another_thread_ends_the_whole_process_at_once():
    """tgkill(u, SIGUSR1) with the default action: the whole thread group exits now.

    Linux does not wait for u to run: ``complete_signal`` sees a fatal
    signal, sets SIGNAL_GROUP_EXIT and queues SIGKILL to every thread, so
    the sender does not return to user space either. Status: killed by SIGUSR1.

    Source: kernel/signal.c ``complete_signal`` ("This signal will be fatal
    to the whole group").
    """
    t = spawn()
    u = t.clone()
    t.tgkill(u.tid, SIGUSR1)
    assert isinstance(t.process.end, Killed)
    assert t.process.end.signo == SIGUSR1
    with pytest.raises(ProcessLookupError):
        t.rdpkru()


# --- kernel versions: the frame written under the interrupted PKRU (6.1) or all-open (6.12+) ---

@pytest.mark.parametrize(("kernel", "handler_runs"), [
    ("6.1", False), ("6.11", False), ("6.12", True), ("6.13", True), ("7.2", True),
])
@pytest.mark.parametrize(("key0_rights", "frame_value"), [(WD, 0x55555556), (AD, 0x55555555)])
def test_key0_denied_then_stack_touched_with_sigsegv_handler(kernel, handler_runs, key0_rights,
                                                             frame_value):
    """Key 0 WD (or AD), then a push: before 6.12 the frame cannot be written and the
    process dies of SIGSEGV (SI_KERNEL); from 6.12 the handler runs with si_code 4,
    si_pkey 0 and the interrupted PKRU in the frame.

    Row e: "key 0 WD (or AD), then touch the stack, with a SIGSEGV handler" ->
    6.1 "killed by SIGSEGV (no frame)", 6.12/7.2 "handler runs: si_code 4,
    si_pkey 0, frame PKRU 0x55555556". The change is commit 70044df250d0 in
    6.12, so 6.11 behaves as 6.1 and 6.13 as 6.12.

    Facts: SIG-X86-612-PERMISSIVE-XSAVE, RACE-PRE612-ALTSTACK, SIG-SELFTESTS-612.
    """
    t = spawn(kernel)
    seen = []

    def report(ctx):
        seen.append((ctx.info.si_code, ctx.info.si_pkey, ctx.info.si_addr, frame_pkru(ctx),
                     ctx.thread.rdpkru()))
        ctx.thread.exit_group(17)

    t.sigaction(SIGSEGV, report)
    assert t.wrpkru(pkru_with_rights(INIT_PKRU, 0, key0_rights)) is None
    sp = t.sp
    end = t.store(sp - 8, 0, 8)
    if handler_runs:
        assert end == Exited(17)
        assert seen == [(SEGV_PKUERR, 0, sp - 8, frame_value, INIT_PKRU)]
    else:
        assert_killed_sigsegv(end, SI_KERNEL)
        assert seen == []


@pytest.mark.parametrize(("kernel", "key0_rights", "survives"), [
    ("6.12", WD, False), ("7.2", WD, True), ("6.12", AD, False), ("7.2", AD, False),
])
def test_key0_denied_handler_repairs_its_stack_fault_but_rseq_may_kill(kernel, key0_rights,
                                                                      survives):
    """From 6.12 the SIGSEGV handler runs and can clear key 0's bits in the frame; whether
    the process survives depends on glibc's rseq area, which is in key-0 memory.

    At delivery the kernel reads ``rseq_cs`` and (before the rseq rework,
    so on 6.12 but not on 7.2) writes the CPU number, under the interrupted
    PKRU. With key 0 WD the write fails on 6.12 only; with key 0 AD the read
    fails on both. The failure is a forced SIGSEGV that ends the process as
    soon as the handler returns. Otherwise the push re-executes, succeeds,
    and the thread runs with the repaired 0x55555554.

    Observed by the project's conformance runs (conformance/observations/*.jsonl,
    scenarios e_key0_wd_stack_handler_fixes_frame: 6.12 "killed SIGSEGV",
    7.2 "exited 0, pkru=0x55555554"; e_key0_ad_stack_handler_fixes_frame:
    "killed SIGSEGV" on both; one handler call each).

    Facts: SIG-X86-612-PERMISSIVE-XSAVE, SIG-FRAME-PKRU-IS-INPUT, KERN-RSEQ-PERMISSIVE.
    Source: kernel/rseq.c ``__rseq_handle_notify_resume`` (``force_sigsegv``).
    """
    t = spawn(kernel)
    calls = []

    def repair(ctx):
        calls.append(ctx.info.si_pkey)
        assert ctx.set_frame_pkru(pkru_with_rights(frame_pkru(ctx), 0, 0)) is None

    t.sigaction(SIGSEGV, repair)
    assert t.wrpkru(pkru_with_rights(INIT_PKRU, 0, key0_rights)) is None
    sp = t.sp
    end = t.store(sp - 8, 0x1234, 8)
    assert calls == [0]
    if survives:
        assert end is None
        assert t.rdpkru() == INIT_PKRU
        assert t.load(sp - 8, 8) == 0x1234
    else:
        assert_killed_sigsegv(end)


def altstack_with_key(t, rights_for_thread):
    """A 2-page alternate stack with a fresh key k, allocated with the given rights for ``t``."""
    alt = populated(t, 2)
    k = t.pkey_alloc(0, rights_for_thread)
    assert t.pkey_mprotect(alt, 2 * PAGE, RW, k) == 0
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    return alt, k


@pytest.mark.parametrize(("kernel", "handler_runs"), [("6.1", False), ("6.12", True),
                                                      ("7.2", True)])
@pytest.mark.parametrize("rights", [AD, WD], ids=["AD", "WD"])
def test_altstack_with_denied_key_and_asm_handler(kernel, handler_runs, rights):
    """Altstack on key k, the thread has AD (or WD) for k, an assembly handler that opens
    PKRU first.

    6.1: the frame cannot be written under the thread's PKRU: killed by
    SIGSEGV. 6.12/7.2: the handler runs, starts with init_pkru, and after its
    return the thread has AD for k again (row o1).

    Row o1: "altstack key k, thread AD on k, asm handler" -> 6.1 "killed
    SIGSEGV", 6.12 "handler runs (PKRU init), PKRU restored to AD after
    return", 7.2 "= 6.12". The WD case is the conformance runs' scenario
    o5_altstack_wd_key_asm_handler: 6.1 "killed SIGSEGV"; 6.12 and 7.2
    "h.pkru=0x55555554; h.frame_pkru=0x55555558; after=0x55555558".

    Facts: SIG-X86-612-PERMISSIVE-XSAVE, SIG-HANDLER-STACK-KEY.
    """
    t = spawn(kernel)
    alt, k = altstack_with_key(t, rights)
    interrupted = t.rdpkru()
    seen = []

    def asm(ctx):
        seen.append(ctx.thread.rdpkru())
        assert ctx.thread.wrpkru(0) is None
        seen.append((alt <= ctx.frame < alt + 2 * PAGE, frame_pkru(ctx)))

    t.sigaction(SIGUSR1, asm, SA_ONSTACK, touches_stack=False)
    end = t.raise_signal(SIGUSR1)
    if handler_runs:
        assert end is None
        assert seen == [INIT_PKRU, (True, interrupted)]
        assert t.rdpkru() == interrupted
        assert bits(t.rdpkru(), k) == rights
    else:
        assert_killed_sigsegv(end, SI_KERNEL)
        assert seen == []


@pytest.mark.parametrize("kernel", ["6.12", "7.2"])
def test_asm_handler_on_denied_altstack_that_keeps_init_pkru_dies_at_sigreturn(kernel):
    """rt_sigreturn reads the frame with the handler's PKRU; init_pkru denies the altstack's key.

    The frame is written (6.12+), the handler returns without opening key
    k, and sigreturn cannot read the frame: SIGSEGV.

    Facts: SIG-X86-612-PERMISSIVE-XSAVE, SIG-X86-ALTSTACK-ORDER, SIG-HANDLER-STACK-KEY.
    Source: arch/x86/kernel/signal_64.c ``rt_sigreturn`` (badframe -> signal_fault).
    """
    t = spawn(kernel)
    altstack_with_key(t, AD)
    calls = []
    t.sigaction(SIGUSR1, lambda ctx: calls.append(1), SA_ONSTACK, touches_stack=False)
    end = t.raise_signal(SIGUSR1)
    assert calls == [1]
    assert_killed_sigsegv(end)


@pytest.mark.parametrize("kernel", KERNELS)
def test_plain_c_handler_on_altstack_denied_by_init_pkru_is_killed_everywhere(kernel):
    """The thread allows the altstack's key, the handler is plain C: killed on every version.

    The frame is written (the thread's PKRU allows k); the handler starts
    with init_pkru, which denies k, and its first push faults with
    SEGV_PKUERR for key k while SIGUSR1 has no SIGSEGV handler.

    Row o2: "altstack key k, thread allows k, plain C handler" -> "killed
    SIGSEGV (init_pkru denies k)" on all three.

    Facts: SIG-HANDLER-STACK-KEY, SIG-X86-HANDLER-RIGHTS.
    """
    t = spawn(kernel)
    alt, k = altstack_with_key(t, 0)
    calls = []
    t.sigaction(SIGUSR1, lambda ctx: calls.append(1), SA_ONSTACK)
    end = t.raise_signal(SIGUSR1)
    assert_killed_sigsegv(end, SEGV_PKUERR)
    assert end.siginfo.si_pkey == k
    assert alt <= end.siginfo.si_addr < alt + 2 * PAGE
    assert calls == []


@pytest.mark.parametrize("kernel", KERNELS)
def test_asm_handler_opening_pkru_first_on_allowed_altstack_works_everywhere(kernel):
    """Row o3: "same as o2, asm handler that does wrpkru(0) first" -> "works" (all kernels).

    Facts: SIG-HANDLER-STACK-KEY, SIG-X86-HANDLER-WRPKRU-LOST.
    """
    t = spawn(kernel)
    alt, k = altstack_with_key(t, 0)
    before = t.rdpkru()
    calls = []

    def asm(ctx):
        assert ctx.thread.wrpkru(0) is None
        assert ctx.thread.store(ctx.frame - 8, 1, 8) is None
        calls.append(ctx.frame)

    t.sigaction(SIGUSR1, asm, SA_ONSTACK, touches_stack=False)
    assert t.raise_signal(SIGUSR1) is None
    assert len(calls) == 1 and alt <= calls[0] < alt + 2 * PAGE
    assert t.rdpkru() == before


@pytest.mark.parametrize(("kernel", "handler_runs"), [("6.1", False), ("6.12", True),
                                                      ("7.2", True)])
def test_thread_denying_key0_with_altstack_on_key0_without_rseq(kernel, handler_runs):
    """The thread has AD for key 0; its altstack is on key 0; SIGUSR1 with a C handler.
    The thread has no rseq area (raw system calls, as in the selftests).

    6.1 writes the frame under the thread's PKRU and kills; 6.12+ writes it
    with every key open, the handler (init_pkru: key 0 open) runs, and
    sigreturn restores the key-0-denying PKRU.

    Facts: RACE-PRE612-ALTSTACK, SIG-X86-612-PERMISSIVE-XSAVE, SIG-SELFTESTS-612.
    """
    t = spawn(kernel)
    assert t.rseq_unregister() == 0
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()), SA_ONSTACK)
    assert t.wrpkru(0x55555555) is None
    end = t.raise_signal(SIGUSR1)
    if handler_runs:
        assert end is None
        assert seen == [INIT_PKRU]
        assert t.rdpkru() == 0x55555555
    else:
        assert_killed_sigsegv(end, SI_KERNEL)
        assert seen == []


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.2"])
def test_thread_denying_key0_with_glibc_rseq_dies_before_its_sigusr1_handler(kernel):
    """The same with glibc's rseq area (key 0) registered: the failed rseq read (key 0 AD)
    forces a SIGSEGV, which is not blocked while SIGUSR1 is delivered, so it comes first
    and, without a SIGSEGV handler, ends the process before the SIGUSR1 handler runs.

    Observed by the conformance harness (o7_tgkill_denykey0_ad_rseq: "killed SIGSEGV" and
    no handler call on 6.1, 6.12 and 7.2).

    Facts: SIG-X86-612-PERMISSIVE-XSAVE, KERN-RSEQ-PERMISSIVE, SIG-SELFTESTS-612.
    """
    t = spawn(kernel)
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()), SA_ONSTACK)
    assert t.wrpkru(0x55555555) is None
    end = t.raise_signal(SIGUSR1)
    assert seen == []
    assert_killed_sigsegv(end, SI_KERNEL)


@pytest.mark.parametrize(("kernel", "survives"), [("6.1", False), ("6.12", False), ("7.2", True)])
def test_thread_write_disabling_key0_with_rseq_and_sigusr1(kernel, survives):
    """Key 0 write-disabled only: before the 6.19 rseq rework the kernel also writes the
    rseq area at delivery, which fails; from 6.19 it only reads it, and the handler runs.

    Observed: o8_tgkill_denykey0_wd_rseq (killed SIGSEGV on 6.1 and 6.12, exit 0 on 7.2).

    Facts: KERN-RSEQ-PERMISSIVE, SIG-SELFTESTS-612.
    """
    t = spawn(kernel)
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.info.si_code), SA_ONSTACK)
    assert t.wrpkru(0x55555556) is None
    end = t.raise_signal(SIGUSR1)
    if survives:
        assert end is None and seen == [SI_TKILL] and t.rdpkru() == 0x55555556
    else:
        assert seen == []
        assert_killed_sigsegv(end, SI_KERNEL)


@pytest.mark.parametrize(("kernel", "order"), [("6.1", []), ("6.12", ["SIGSEGV", "SIGUSR1"]),
                                               ("7.2", ["SIGSEGV", "SIGUSR1"])])
def test_forced_sigsegv_reaches_a_sigsegv_handler_first(kernel, order):
    """With a SIGSEGV handler as well, the forced SIGSEGV (SI_KERNEL) is delivered first, on
    top of the SIGUSR1 frame, then the SIGUSR1 handler runs and the thread goes on with its
    own PKRU. On 6.1 the SIGUSR1 frame cannot be written under the interrupted PKRU either,
    and the SIGSEGV handler's frame neither: the process dies.

    Observed: o10_tgkill_denykey0_ad_rseq_segv_handler_returns (and o9, whose SIGSEGV
    handler exits 17 before the SIGUSR1 handler has run).

    Facts: KERN-RSEQ-PERMISSIVE, SIG-X86-612-PERMISSIVE-XSAVE.
    """
    t = spawn(kernel)
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(("SIGUSR1", ctx.info.si_code)), SA_ONSTACK)
    t.sigaction(SIGSEGV, lambda ctx: seen.append(("SIGSEGV", ctx.info.si_code)), SA_ONSTACK)
    assert t.wrpkru(0x55555555) is None
    end = t.raise_signal(SIGUSR1)
    assert [name for name, _ in seen] == order
    if order:
        assert end is None and seen == [("SIGSEGV", SI_KERNEL), ("SIGUSR1", SI_TKILL)]
        assert t.rdpkru() == 0x55555555
    else:
        assert_killed_sigsegv(end, SI_KERNEL)


@pytest.mark.parametrize(("flags", "calls"), [(0, 1), (SA_NODEFER, 0)])
def test_rseq_failure_while_delivering_sigsegv(flags, calls):
    """When the signal being delivered is SIGSEGV, force_sigsegv makes it fatal: the handler
    runs (SIGSEGV is blocked while it does) and the process dies when it returns; with
    SA_NODEFER SIGSEGV is not blocked, and the process dies before the handler runs.

    Observed for the first case: e_key0_ad_stack_handler_fixes_frame on 6.12 and 7.2.

    Facts: KERN-RSEQ-PERMISSIVE, SIG-SELFTESTS-612.
    """
    t = spawn("6.12")
    seen = []

    def repair(ctx):
        seen.append(ctx.info.si_code)
        ctx.set_frame_pkru(0x55555554)

    t.sigaction(SIGSEGV, repair, flags)
    assert t.wrpkru(0x55555555) is None
    end = t.store(t.sp - 8, 0, 8)
    assert len(seen) == calls
    assert_killed_sigsegv(end, SI_KERNEL)


@pytest.mark.parametrize(("kernel", "expected"), [("6.1", None), ("6.12", 17), ("7.2", 17)])
def test_pkey_fault_with_handler_on_ad_altstack(kernel, expected):
    """Row o4: "pkey SIGSEGV, handler on an AD altstack" -> 6.1 "killed SIGSEGV",
    6.12 "handler runs (exit 17)", 7.2 "= 6.12".

    The handler is the assembly kind: it calls _exit(17) without touching its stack.

    Facts: SIG-X86-612-PERMISSIVE-XSAVE, RACE-PRE612-ALTSTACK.
    """
    t = spawn(kernel)
    altstack_with_key(t, AD)
    p, k = keyed_page(t, AD)
    seen = []

    def asm_exit(ctx):
        seen.append((ctx.info.si_code, ctx.info.si_pkey))
        ctx.thread.exit_group(17)

    t.sigaction(SIGSEGV, asm_exit, SA_ONSTACK, touches_stack=False)
    end = t.load(p)
    if expected is None:
        assert_killed_sigsegv(end)
        assert seen == []
    else:
        assert end == Exited(expected)
        assert seen == [(SEGV_PKUERR, k)]


@pytest.mark.parametrize("kernel", KERNELS)
def test_pkey_fault_with_c_handler_on_ad_altstack_is_killed_everywhere(kernel):
    """A C SIGSEGV handler on an AD altstack: killed on every version (6.1: no frame; 6.12+:
    the handler's first push faults under init_pkru while SIGSEGV is blocked).

    Conformance runs, scenario o4c_pkey_fault_on_ad_altstack_c_handler: "killed SIGSEGV"
    on 6.1, 6.12 and 7.2.

    Facts: SIG-HANDLER-STACK-KEY, SIG-X86-612-PERMISSIVE-XSAVE.
    """
    t = spawn(kernel)
    altstack_with_key(t, AD)
    p, k = keyed_page(t, AD)
    calls = []
    t.sigaction(SIGSEGV, lambda ctx: calls.append(1), SA_ONSTACK)
    end = t.load(p)
    assert_killed_sigsegv(end)
    assert calls == []


# --- exec and fork -------------------------------------------------------------------------------

def test_execve_resets_handlers_but_keeps_sig_ign():
    """After execve a caught signal has SIG_DFL (kills) and an ignored one stays ignored.

    Source: fs/exec.c ``flush_signal_handlers(current, 0)``; execve(2),
    signal(7) ("the dispositions of ignored signals are left unchanged").
    """
    t = spawn()
    calls = []
    t.sigaction(SIGUSR1, lambda ctx: calls.append(1))
    t.sigaction(SIGUSR2, SIG_IGN)
    t = t.execve()
    assert t.raise_signal(SIGUSR2) is None
    assert t.alive
    end = t.raise_signal(SIGUSR1)
    assert isinstance(end, Killed) and end.signo == SIGUSR1
    assert calls == []


def test_execve_removes_the_alternate_stack():
    """execve(2): "Any alternate signal stack is not preserved"; an SA_ONSTACK frame goes on the stack."""
    t = spawn()
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    t = t.execve()
    frames = []
    t.sigaction(SIGUSR1, lambda ctx: frames.append(ctx.frame), SA_ONSTACK)
    assert t.raise_signal(SIGUSR1) is None
    assert len(frames) == 1
    assert t.process.mm.find_vma(frames[0]).name == "[stack]"


def test_execve_from_a_handler_starts_the_new_program_with_init_pkru():
    """A program that execs from inside a signal handler starts with PKRU = init_pkru.

    execve never returns to the handler: there is no sigreturn, and the new
    image's PKRU is the init value (0x55555554), not what the handler had
    (0) nor the interrupted value.

    Facts: EXEC-RESET, INIT-PKRU-VALUE. Source: arch/x86/kernel/process.c
    ``flush_thread`` -> ``pkru_flush_thread``.
    """
    t = spawn()
    assert t.wrpkru(0x55555558) is None

    def handler(ctx):
        assert ctx.thread.wrpkru(0) is None
        ctx.thread.execve()

    t.sigaction(SIGUSR1, handler)
    t.raise_signal(SIGUSR1)
    assert t.alive
    assert t.rdpkru() == INIT_PKRU


def test_execve_keeps_the_signal_mask():
    """The signal mask survives execve: exec from a SIGUSR1 handler leaves SIGUSR1 blocked.

    The new program's raise(SIGUSR1) (default action: terminate) stays
    pending and the process runs on.

    Source: sigprocmask(2) ("the signal mask is preserved across
    execve(2)"); fs/exec.c does not touch ``current->blocked``.
    """
    t = spawn()
    t.sigaction(SIGUSR1, lambda ctx: ctx.thread.execve())
    t.raise_signal(SIGUSR1)
    assert t.alive
    assert t.raise_signal(SIGUSR1) is None
    assert t.alive


def test_fork_copies_handlers_and_they_run_in_the_child():
    """The child inherits the dispositions; a change in the child does not reach the parent.

    Source: kernel/fork.c ``copy_sighand``; fork(2).
    """
    t = spawn()
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.process.pid))
    t.sigaction(SIGUSR2, SIG_IGN)
    child = t.fork()
    assert child.raise_signal(SIGUSR1) is None
    assert child.raise_signal(SIGUSR2) is None
    assert seen == [child.process.pid]
    child.sigaction(SIGUSR1, SIG_DFL)
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [child.process.pid, t.process.pid]


def test_fork_copies_the_alternate_stack():
    """sigaltstack(2): a child created by fork inherits the alternate stack settings."""
    t = spawn()
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    child = t.fork()
    frames = []
    child.sigaction(SIGUSR1, lambda ctx: frames.append(ctx.frame), SA_ONSTACK)
    assert child.raise_signal(SIGUSR1) is None
    assert len(frames) == 1 and alt <= frames[0] < alt + 2 * PAGE


def test_new_thread_has_no_alternate_stack():
    """clone with CLONE_VM (a thread) disables the alternate stack in the new thread.

    Source: sigaltstack(2) NOTES; kernel/fork.c ``copy_process`` (``sas_ss_reset``
    for CLONE_VM without CLONE_VFORK).
    """
    t = spawn()
    alt = populated(t, 2)
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    u = t.clone()
    frames = []
    t.sigaction(SIGUSR1, lambda ctx: frames.append(ctx.frame), SA_ONSTACK)
    assert u.raise_signal(SIGUSR1) is None
    assert len(frames) == 1
    assert not alt <= frames[0] < alt + 2 * PAGE
    assert frames[0] < u.sp


def test_fork_inside_a_handler_gives_the_child_the_handlers_pkru():
    """fork in a handler: the child's PKRU is the calling thread's current one, init_pkru.

    Facts: FORK-PKRU, SIG-X86-HANDLER-RIGHTS.
    """
    t = spawn()
    assert t.wrpkru(0x0) is None
    children = []
    t.sigaction(SIGUSR1, lambda ctx: children.append(ctx.thread.fork()))
    assert t.raise_signal(SIGUSR1) is None
    assert children[0].rdpkru() == INIT_PKRU
    assert t.rdpkru() == 0x0


def test_fork_inside_a_handler_gives_the_child_the_signal_mask():
    """The child inherits the caller's signal mask: SIGUSR1 is blocked in a child forked
    from the SIGUSR1 handler, so its raise(SIGUSR1) stays pending.

    Source: sigprocmask(2) ("A child created via fork(2) inherits a copy of
    its parent's signal mask"); kernel/fork.c (``dup_task_struct`` copies
    ``blocked``; only the pending set is cleared).
    """
    t = spawn()
    children = []
    t.sigaction(SIGUSR1, lambda ctx: children.append(ctx.thread.fork()))
    assert t.raise_signal(SIGUSR1) is None
    child = children[0]
    child.sigaction(SIGUSR1, SIG_DFL)
    assert child.raise_signal(SIGUSR1) is None
    assert child.alive


# --- default actions (signal(7)), stopped processes, kill(2) ----------------------------

#: signal(7)'s table for x86 ("Standard signals"): the default action of each signal.
#: Every real-time signal (32 to 64) terminates the process ("Real-time signals").
SIGNAL7 = {
    1: "Term", 2: "Term", 3: "Core", 4: "Core", 5: "Core", 6: "Core", 7: "Core", 8: "Core",
    9: "Term", 10: "Term", 11: "Core", 12: "Term", 13: "Term", 14: "Term", 15: "Term",
    16: "Term", 17: "Ign", 18: "Cont", 19: "Stop", 20: "Stop", 21: "Stop", 22: "Stop",
    23: "Ign", 24: "Core", 25: "Core", 26: "Term", 27: "Term", 28: "Ign", 29: "Term",
    30: "Term", 31: "Core", **{n: "Term" for n in range(32, 65)},
}
SIGTERM, SIGQUIT, SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGKILL = 15, 3, 17, 18, 19, 20, 9
SI_USER, SI_TKILL = 0, -6


@pytest.mark.parametrize("signo", sorted(SIGNAL7))
def test_default_action_of_every_signal_follows_signal7(signo):
    """raise(sig) with no handler does what signal(7) lists: Term and Core end the process
    (killed by that signal), Ign and Cont do nothing, Stop stops every thread of it.

    Source: signal(7) ("Standard signals", "Real-time signals");
    include/linux/signal.h (``SIG_KERNEL_IGNORE_MASK``, ``SIG_KERNEL_STOP_MASK``,
    ``SIG_KERNEL_COREDUMP_MASK``); kernel/signal.c ``get_signal`` (ignore,
    ``do_signal_stop``, ``do_group_exit``). A core dump is not modelled.
    """
    from pkeyspec.signals import default_action
    t = spawn()
    assert default_action(signo) == SIGNAL7[signo]
    result = t.raise_signal(signo)
    if SIGNAL7[signo] in ("Term", "Core"):
        assert isinstance(result, Killed)
        assert result.signo == signo and not t.alive
    elif SIGNAL7[signo] == "Stop":
        assert result is None and t.process.end is None
        assert t.process.stopped == signo
        with pytest.raises(BlockingIOError) as e:
            t.rdpkru()
        assert e.value.errno == errno.EAGAIN
    else:
        assert result is None and t.alive and not t.process.stopped
        assert t.rdpkru() == INIT_PKRU


@pytest.mark.parametrize("signo", [0, 65, -1])
def test_default_action_of_a_number_that_is_no_signal_is_a_value_error(signo):
    """default_action's contract: only 1 to 64 are signals (``valid_signal``, _NSIG = 64)."""
    from pkeyspec.signals import default_action
    with pytest.raises(ValueError, match="1 to 64"):
        default_action(signo)


def test_stopped_process_runs_again_after_sigcont_from_another_process():
    """A stopped process makes no step until SIGCONT, sent here with kill(2) by another process.

    Source: signal(7) ("Stop: Default action is to stop the process.
    Cont: Default action is to continue the process if it is currently
    stopped"); kernel/signal.c ``prepare_signal`` (SIGCONT wakes every
    thread of a stopped group, whatever its disposition).
    """
    s = System()
    t = s.spawn()
    u = t.clone()
    other = s.spawn()
    assert t.raise_signal(SIGSTOP) is None
    for thread in (t, u):
        assert err_of(thread.rdpkru) == errno.EAGAIN
    assert other.kill(t.process.pid, SIGCONT) == 0
    assert not t.process.stopped
    assert t.rdpkru() == INIT_PKRU and u.rdpkru() == INIT_PKRU


def test_sigkill_ends_a_stopped_process():
    """SIGKILL ends a stopped process at once (``wants_signal`` makes an exception for SIGKILL
    only; ``complete_signal`` then starts the group exit).

    Source: kernel/signal.c ``wants_signal``, ``complete_signal``; signal(7).
    """
    s = System()
    t = s.spawn()
    other = s.spawn()
    t.raise_signal(SIGSTOP)
    assert other.kill(t.process.pid, SIGKILL) == 0
    assert t.process.end == Killed(SIGKILL, t.process.end.siginfo)
    assert t.process.end.siginfo.si_code == SI_USER
    assert err_of(t.rdpkru) == errno.ESRCH


def test_term_signal_to_a_stopped_process_waits_for_sigcont():
    """SIGTERM to a stopped process stays pending: no thread of a stopped group "wants" it;
    it ends the process when the process runs again.

    Source: kernel/signal.c ``wants_signal`` (``task_is_stopped_or_traced``),
    ``complete_signal``.
    """
    s = System()
    t = s.spawn()
    other = s.spawn()
    t.raise_signal(SIGSTOP)
    assert other.kill(t.process.pid, SIGTERM) == 0
    assert t.process.end is None and t.process.stopped == SIGSTOP
    assert other.kill(t.process.pid, SIGCONT) == 0
    assert err_of(t.rdpkru) == errno.ESRCH
    assert t.process.end.signo == SIGTERM
    assert t.process.end.siginfo.si_code == SI_USER


def test_sigcont_continues_even_when_caught_and_then_runs_its_handler():
    """SIGCONT continues a stopped process whatever its disposition; a handler for it then runs.

    Source: include/linux/signal.h (the comment above ``SIG_KERNEL_ONLY_MASK``:
    "This happens regardless of blocking, catching, or ignoring SIGCONT").
    """
    s = System()
    t = s.spawn()
    other = s.spawn()
    seen = []
    t.sigaction(SIGCONT, lambda ctx: seen.append(ctx.info.si_code))
    t.raise_signal(SIGTSTP)
    assert t.process.stopped == SIGTSTP and seen == []
    other.kill(t.process.pid, SIGCONT)
    assert t.rdpkru() == INIT_PKRU
    assert seen == [SI_USER]


def test_a_stop_signal_discards_a_pending_sigcont_and_sigcont_a_pending_stop():
    """Sending a stop signal removes a pending SIGCONT, and SIGCONT a pending stop signal.

    Source: kernel/signal.c ``prepare_signal`` (``flush_sigqueue_mask`` of
    ``SIG_KERNEL_STOP_MASK`` or of SIGCONT on every thread).
    """
    t = spawn()
    u = t.clone()
    ran = []
    t.sigaction(SIGCONT, lambda ctx: ran.append(SIGCONT))
    assert t.tgkill(u.tid, SIGCONT) == 0          # a handler: queued for u
    assert t.tgkill(u.tid, SIGSTOP) == 0          # discards it
    assert err_of(u.rdpkru) == errno.EAGAIN       # u takes SIGSTOP: the process stops
    assert ran == [] and t.process.stopped == SIGSTOP

    t = spawn()
    u = t.clone()
    assert t.tgkill(u.tid, SIGTSTP) == 0          # queued for u
    assert t.tgkill(u.tid, SIGCONT) == 0          # discards it
    assert u.rdpkru() == INIT_PKRU and not t.process.stopped


def test_core_signal_to_another_thread_ends_the_process_when_that_thread_runs():
    """A Core signal is not fatal at send time: the target thread takes it when it runs
    (to dump core), unlike a Term signal, which ends the thread group at once.

    Source: kernel/signal.c ``complete_signal`` (``if (!sig_kernel_coredump(sig))``).
    """
    t = spawn()
    u = t.clone()
    assert t.tgkill(u.tid, SIGQUIT) == 0
    assert t.alive and t.rdpkru() == INIT_PKRU
    assert err_of(u.rdpkru) == errno.ESRCH
    assert t.process.end.signo == SIGQUIT


@pytest.mark.parametrize("signo", [SIGKILL, SIGSTOP])
def test_sigaction_for_sigkill_or_sigstop_einval(signo):
    """No handler (not even SIG_IGN) for SIGKILL or SIGSTOP.

    Source: kernel/signal.c ``do_sigaction`` (``act && sig_kernel_only(sig)``: -EINVAL).
    """
    t = spawn()
    for handler in (SIG_IGN, SIG_DFL, lambda ctx: None):
        assert err_of(t.sigaction, signo, handler) == errno.EINVAL


@pytest.mark.parametrize(("signo", "ok"), [(0, False), (1, True), (64, True), (65, False),
                                           (-1, False)])
def test_sigaction_accepts_signals_1_to_64(signo, ok):
    """sigaction: 1 to 64 are signals, 0 and 65 are not (EINVAL).

    Source: kernel/signal.c ``do_sigaction`` (``!valid_signal(sig) || sig < 1``);
    ``_NSIG`` is 64 on x86-64 (arch/x86/include/asm/signal.h).
    """
    t = spawn()
    if ok:
        assert t.sigaction(signo, SIG_IGN).handler == SIG_DFL
    else:
        assert err_of(t.sigaction, signo, SIG_IGN) == errno.EINVAL


def test_signal_64_is_delivered_and_65_refused_by_raise_and_tgkill():
    """raise and tgkill: 64 is the last signal (its default action is Term), 65 is EINVAL.

    Source: kernel/signal.c ``check_kill_permission`` (``valid_signal``).
    """
    t = spawn()
    u = t.clone()
    seen = []
    t.sigaction(64, lambda ctx: seen.append(ctx.info.si_signo))
    assert t.raise_signal(64) is None and t.tgkill(u.tid, 64) == 0
    assert u.rdpkru() == INIT_PKRU
    assert seen == [64, 64]
    assert err_of(t.raise_signal, 65) == errno.EINVAL
    assert err_of(t.tgkill, u.tid, 65) == errno.EINVAL
    t.sigaction(64, SIG_DFL)
    assert t.raise_signal(64).signo == 64


def test_tgkill_looks_up_the_thread_before_checking_the_signal():
    """tgkill: a tid <= 0 is EINVAL; an unknown tid is ESRCH even with signal 65; the tid is a
    C int, so 2**32 + tid names the same thread.

    Source: kernel/signal.c ``SYSCALL_DEFINE3(tgkill)`` (``if (pid <= 0 || tgid <= 0)
    return -EINVAL``), ``do_send_specific`` (``error = -ESRCH`` until the task is
    found, then ``check_kill_permission``).
    """
    t = spawn()
    u = t.clone()
    assert err_of(t.tgkill, 0, SIGUSR1) == errno.EINVAL
    assert err_of(t.tgkill, -5, SIGUSR1) == errno.EINVAL
    assert err_of(t.tgkill, 999, 65) == errno.ESRCH
    assert t.tgkill(2**32 + u.tid, 0) == 0


def test_kill_targets_and_errors():
    """kill(2): ESRCH for a pid or group nobody has (checked before the signal, EINVAL);
    0 probes; an ended process that nobody waited for still takes a signal (and drops it);
    pid 0 is the caller's process group (fork stays in it, a spawned program has its own);
    -1 is every process but the caller's; INT_MIN is ESRCH.

    Source: kernel/signal.c ``kill_something_info``, ``__kill_pgrp_info``,
    ``check_kill_permission``, ``prepare_signal`` (``SIGNAL_GROUP_EXIT``: dropped).
    """
    s = System()
    t = s.spawn()
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.process.pid))
    child = t.fork()
    other = s.spawn()
    assert err_of(t.kill, 999, 65) == errno.ESRCH
    assert err_of(t.kill, other.process.pid, 65) == errno.EINVAL
    assert err_of(t.kill, -(2**31), 0) == errno.ESRCH
    assert err_of(t.kill, -999, 0) == errno.ESRCH
    assert t.kill(other.process.pid, 0) == 0 and other.alive
    assert t.kill(-other.process.pid, SIGTERM) == 0 and not other.alive
    assert t.kill(other.process.pid, SIGTERM) == 0               # a zombie: accepted
    assert t.kill(0, SIGUSR1) == 0                                # t and its child
    assert child.rdpkru() == INIT_PKRU
    assert sorted(seen) == [t.process.pid, child.process.pid]
    third = s.spawn()
    assert t.kill(-1, SIGTERM) == 0
    assert t.alive and not child.alive and not third.alive


def test_kill_to_itself_is_delivered_before_kill_returns():
    """kill(getpid(), sig) in a one-thread process: delivered on the way back, si_code SI_USER.

    Source: kernel/signal.c ``complete_signal`` (the target thread is the caller).
    """
    t = spawn()
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.info.si_code))
    assert t.kill(t.process.pid, SIGUSR1) == 0
    assert seen == [SI_USER]


def test_standard_signal_is_pending_once_a_realtime_signal_every_time():
    """A blocked standard signal sent twice is delivered once; a real-time one twice.

    Source: kernel/signal.c ``legacy_queue`` (``sig < SIGRTMIN &&
    sigismember(&signals->signal, sig)``: not queued again).
    """
    for signo, runs in ((SIGUSR1, 2), (40, 3)):
        t = spawn()
        count = []

        def handler(ctx, signo=signo, count=count):
            count.append(1)
            if len(count) == 1:             # blocked in its own handler: both stay pending
                ctx.thread.raise_signal(signo)
                ctx.thread.raise_signal(signo)

        t.sigaction(signo, handler)
        assert t.raise_signal(signo) is None
        assert len(count) == runs, signo


def test_a_signal_still_blocked_after_sigreturn_stays_pending():
    """A nested handler's sigreturn restores the outer mask; a signal the outer handler
    blocks stays pending (it does not loop) and is delivered after the outer sigreturn.

    Source: kernel/signal.c ``set_current_blocked`` (from ``restore_sigcontext``)
    and ``recalc_sigpending``: only unblocked signals are delivered.
    """
    t = spawn()
    order = []

    def usr1(ctx):
        order.append("usr1")
        if order.count("usr1") == 1:
            ctx.thread.raise_signal(SIGUSR2)

    def usr2(ctx):
        order.append("usr2")
        ctx.thread.raise_signal(SIGUSR1)        # blocked: the outer usr1 handler runs

    t.sigaction(SIGUSR1, usr1)
    t.sigaction(SIGUSR2, usr2)
    assert t.raise_signal(SIGUSR1) is None
    assert order == ["usr1", "usr2", "usr1"]


def test_ignoring_a_signal_discards_it_where_it_is_pending():
    """sigaction(SIG_IGN) for a pending signal discards it (POSIX; Linux flushes the queues).

    Source: kernel/signal.c ``do_sigaction`` (``sig_handler_ignored`` ->
    ``flush_sigqueue_mask`` for every thread).
    """
    t = spawn()
    u = t.clone()
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(1))
    assert t.tgkill(u.tid, SIGUSR1) == 0
    t.sigaction(SIGUSR1, SIG_IGN)
    t.sigaction(SIGUSR1, lambda ctx: seen.append(1))
    assert u.rdpkru() == INIT_PKRU
    assert seen == []


def test_ignored_by_default_signal_sent_to_another_thread_is_dropped():
    """SIGCHLD with SIG_DFL is dropped when sent, not queued (``sig_ignored``): installing a
    handler afterwards does not make it run.

    Source: kernel/signal.c ``sig_ignored``, ``sig_handler_ignored``.
    """
    t = spawn()
    u = t.clone()
    assert t.tgkill(u.tid, SIGCHLD) == 0
    seen = []
    t.sigaction(SIGCHLD, lambda ctx: seen.append(1))
    assert u.rdpkru() == INIT_PKRU and seen == []


@pytest.mark.parametrize("make", [
    lambda: __import__("pkeyspec").Siginfo("11", 1),
    lambda: __import__("pkeyspec").Siginfo(11, 1, si_addr=None),
    lambda: Killed(9, siginfo="x"),
    lambda: Killed(None),
    lambda: Exited(None),
    lambda: Livelock(None),
    lambda: __import__("pkeyspec").SignalContext(None, __import__("pkeyspec").Siginfo(10, 0), 0, 0, None),
])
def test_records_refuse_a_wrong_type_at_once(make):
    """The records the model returns check their fields when made, so a bad one cannot fail
    later (in a repr or a comparison)."""
    with pytest.raises(TypeError):
        make()


def test_record_reprs_of_huge_numbers():
    """A number too long for decimal (Python refuses more than 4300 digits) is shown in hex."""
    assert repr(Exited(10**5000)).startswith("Exited(0x")
    assert repr(Killed(2**70)) == "Killed(0x400000000000000000)"

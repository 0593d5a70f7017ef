"""Signals on x86: siginfo, handlers, the signal frame, sigreturn, and how a process ends.

A fault in the model never raises a Python exception. The kernel turns it
into a signal (:kernel:`7.2 kernel/signal.c force_sig_fault`). With no handler
the signal's default action applies (signal(7): Term, Core, Ign, Stop,
Cont; :func:`default_action`): a fault signal ends the whole process,
recorded as a :class:`Killed` value, the way ``wait(2)`` reports it. With a
handler, the kernel writes a
signal frame on the thread's stack or alternate stack, runs the handler
with PKRU = ``init_pkru``, and ``rt_sigreturn`` restores the PKRU saved in
the frame (:kernel:`7.2 arch/x86/kernel/signal.c get_sigframe handle_signal`;
:kernel:`7.2 arch/x86/kernel/fpu/signal.c copy_fpstate_to_sigframe __fpu_restore_sig`).

Where Linux versions differ (SIG-X86-612-PERMISSIVE-XSAVE): before 6.12 the
frame is written under the interrupted PKRU, so a PKRU that denies the
stack's key kills the process; from 6.12 the frame is written with every key
open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .hardware import PKRU_HW_INIT, XFEATURE_PKRU
from . import cabi
from .uapi import (
    EFAULT, EINVAL, ESRCH, SI_CODE_NAMES, SI_KERNEL, SIGABRT, SIGBUS, SIGCHLD, SIGCONT, SIGFPE,
    SIGILL, SIGKILL, SIGNAL_NAMES, SIGQUIT, SIGSEGV, SIGSTOP, SIGSYS, SIGTRAP, SIGTSTP, SIGTTIN,
    SIGTTOU, SIGURG, SIGWINCH, SIGXCPU, SIGXFSZ,
)

if TYPE_CHECKING:
    from .tasks import Thread

SIG_DFL = 0
SIG_IGN = 1
SA_SIGINFO = 0x00000004
SA_ONSTACK = 0x08000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000
SS_ONSTACK = 1
SS_DISABLE = 2
SS_AUTODISARM = 1 << 31
SI_USER = 0
SI_TKILL = -6
#: ``_NSIG``: signals are numbered 1 to 64 on x86-64 (``valid_signal``).
NSIG = 64
#: The kernel's first real-time signal (glibc keeps 32 and 33 for itself); the
#: default action of every real-time signal is Term.
SIGRTMIN = 32

# The kernel's masks (include/linux/signal.h); they cover signals below SIGRTMIN only.
#: Signals that can be neither caught, blocked nor ignored (``sig_kernel_only``).
SIG_KERNEL_ONLY = frozenset({SIGKILL, SIGSTOP})
#: Default action Stop (``sig_kernel_stop``).
SIG_KERNEL_STOP = frozenset({SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU})
#: Default action Core: end the process and dump core (``sig_kernel_coredump``).
SIG_KERNEL_COREDUMP = frozenset({SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGFPE, SIGSEGV, SIGBUS,
                                 SIGSYS, SIGXCPU, SIGXFSZ})
#: Default action Ign, and Cont for SIGCONT (``sig_kernel_ignore``).
SIG_KERNEL_IGNORE = frozenset({SIGCONT, SIGCHLD, SIGWINCH, SIGURG})
#: Dequeued before any other pending signal (``SYNCHRONOUS_MASK`` in kernel/signal.c).
SYNCHRONOUS_SIGNALS = frozenset({SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE, SIGSYS})
#: ``MINSIGSTKSZ`` of the UAPI; smaller alternate stacks are refused with ENOMEM.
MINSIGSTKSZ = 2048

#: The XSAVE image in the frame: XSTATE_BV at byte 512, PKRU at byte 2688
#: (the offset observed in the frames of all three kernels).
XSAVE_XSTATE_BV_OFFSET = 512
XSAVE_PKRU_OFFSET = 2688
XSAVE_SIZE = 2696
#: The rest of ``struct rt_sigframe`` (return address, ucontext, siginfo).
RT_SIGFRAME_SIZE = 440
#: The x86-64 red zone the kernel skips when it stays on the current stack.
RED_ZONE = 128
#: How often the model lets a faulting instruction run again after a
#: handler returned without fixing anything, before it calls it a livelock.
MAX_REEXECUTIONS = 8
#: How many signal frames the model nests on one thread. A deeper delivery is
#: taken as a frame the kernel cannot write (the stack is used up): SIGSEGV.
MAX_HANDLER_DEPTH = 32


#: si_code values any signal can carry
#: (:kernel:`7.2 include/uapi/asm-generic/siginfo.h SI_USER SI_TKILL SI_KERNEL`).
GENERIC_SI_CODES = {0: "SI_USER", -6: "SI_TKILL", 0x80: "SI_KERNEL"}


def _number(value: int) -> str:
    """An int for a repr: in hex when it is too long to print in decimal."""
    return str(value) if -(1 << 64) < value < 1 << 64 else f"{value:#x}"


def signal_name(signo: int) -> str:
    """``"SIGSEGV"`` for 11; a number without a name (a real-time signal) as itself."""
    return SIGNAL_NAMES.get(cabi.index(signo)) or _number(signo)


def _ints(record, *names: str, optional: tuple[str, ...] = ()) -> None:
    """A record's fields must be ints (None allowed for ``optional``): a TypeError at once."""
    for name in names + optional:
        value = getattr(record, name)
        if not (isinstance(value, int) or (value is None and name in optional)):
            raise TypeError(f"{type(record).__name__}.{name} is an int"
                            f"{' or None' if name in optional else ''}, not {type(value).__name__}")


def _siginfo_or_none(record, name: str, optional: bool) -> None:
    value = getattr(record, name)
    if not (isinstance(value, Siginfo) or (optional and value is None)):
        raise TypeError(f"{type(record).__name__}.{name} is a Siginfo"
                        f"{' or None' if optional else ''}, not {type(value).__name__}")


@dataclass(frozen=True)
class Siginfo:
    """The fields of ``siginfo_t`` a fault fills in.

    ``si_pkey`` is meaningful for SEGV_PKUERR only (ERR-SIGINFO); it is the
    key of the VMA the kernel found while handling the fault, read under the
    mmap lock (RACE-SIPKEY-STALE).
    """

    si_signo: int
    si_code: int
    si_addr: int = 0
    si_pkey: int = 0

    def __post_init__(self) -> None:
        _ints(self, "si_signo", "si_code", "si_addr", "si_pkey")

    def __repr__(self) -> str:
        code = SI_CODE_NAMES.get(self.si_signo, {}).get(self.si_code) or \
            GENERIC_SI_CODES.get(self.si_code) or _number(self.si_code)
        text = f"{signal_name(self.si_signo)}, si_code={code}, si_addr={self.si_addr:#x}"
        if code == "SEGV_PKUERR":
            text += f", si_pkey={_number(self.si_pkey)}"
        return f"Siginfo({text})"


@dataclass(frozen=True)
class Exited:
    """The process called exit: ``WIFEXITED``, ``WEXITSTATUS``."""

    status: int

    def __post_init__(self) -> None:
        _ints(self, "status")

    def __repr__(self) -> str:
        return f"Exited({_number(self.status)})"


@dataclass(frozen=True)
class Killed:
    """The process was ended by a signal: ``WIFSIGNALED``, ``WTERMSIG``.

    ``siginfo`` and ``err`` (the x86 page-fault error code, ``REG_ERR`` in
    the ucontext) describe the fault that raised it, when one did.
    """

    signo: int
    siginfo: Siginfo | None = None
    err: int | None = None

    def __post_init__(self) -> None:
        _ints(self, "signo", optional=("err",))
        _siginfo_or_none(self, "siginfo", True)

    def __repr__(self) -> str:
        text = signal_name(self.signo)
        if self.siginfo is not None:
            text = repr(self.siginfo)[len("Siginfo("):-1]
        if self.err is not None:
            text += f", err={self.err:#x}"
        return f"Killed({text})"


@dataclass(frozen=True)
class Livelock:
    """A handler kept returning without fixing the fault.

    Linux would run the faulting instruction again forever; the model stops
    after :data:`MAX_REEXECUTIONS` and records this instead.
    """

    siginfo: Siginfo

    def __post_init__(self) -> None:
        _siginfo_or_none(self, "siginfo", False)

    def __repr__(self) -> str:
        return f"Livelock({repr(self.siginfo)[len('Siginfo('):-1]})"


@dataclass(frozen=True)
class Sigaction:
    """A ``struct sigaction``: the handler, its flags, and how it starts.

    ``handler`` is SIG_DFL, SIG_IGN or a Python callable taking a
    :class:`SignalContext`. ``touches_stack`` says what its first
    instruction does: a handler compiled from C pushes onto its stack at
    once (so its stack's key must be open under ``init_pkru``:
    SIG-HANDLER-STACK-KEY); an assembly handler such as the selftests' can
    fix PKRU first.
    """

    handler: Callable[[SignalContext], None] | int = SIG_DFL
    flags: int = 0
    touches_stack: bool = True


#: The default disposition of every signal.
_SIG_DFL = Sigaction()


class SignalContext:
    """What a handler sees: the thread, the siginfo, and the frame in memory.

    The frame is user memory: reading or editing the saved PKRU is a load or
    a store by the handler, checked against the handler's PKRU like any
    other access.
    """

    def __init__(self, thread: Thread, info: Siginfo, frame: int, fpstate: int,
                 err: int | None) -> None:
        from .tasks import Thread
        if not isinstance(thread, Thread):
            raise TypeError(f"SignalContext.thread is a Thread, not {type(thread).__name__}")
        self.thread = thread
        self.info = info
        self.frame = frame
        self.fpstate = fpstate
        self.err = err
        _siginfo_or_none(self, "info", False)
        _ints(self, "frame", "fpstate", optional=("err",))

    @property
    def frame_pkru_address(self) -> int:
        """Where ``uc_mcontext.fpregs`` keeps PKRU: the XSAVE image + 2688."""
        return self.fpstate + XSAVE_PKRU_OFFSET

    @property
    def xstate_bv_address(self) -> int:
        return self.fpstate + XSAVE_XSTATE_BV_OFFSET

    def frame_pkru(self):
        """Load the saved PKRU from the frame (the interrupted thread's value)."""
        return self.thread.load(self.frame_pkru_address, 4)

    def set_frame_pkru(self, value: int):
        """Store a new PKRU into the frame; sigreturn will load it (SIG-X86-HANDLER-WRPKRU-LOST)."""
        return self.thread.store(self.frame_pkru_address, value, 4)

    def __repr__(self) -> str:
        return f"<SignalContext {self.info!r} frame={self.frame:#x}>"


def default_action(signo: int) -> str:
    """signal(7)'s action column: ``"Term"``, ``"Core"``, ``"Ign"``, ``"Stop"`` or ``"Cont"``.

    Term and Core both end the process (Core also dumps core, which the model
    does not write); Ign discards the signal; Stop stops every thread of the
    process until a SIGCONT; Cont continues a stopped process, and is
    otherwise ignored. The contract: ``signo`` is a signal, 1 to 64; any
    other int is a ValueError, as it is no signal.

    >>> default_action(SIGSEGV), default_action(SIGCHLD), default_action(64)
    ('Core', 'Ign', 'Term')
    """
    signo = cabi.index(signo)
    if not 1 <= signo <= NSIG:
        raise ValueError(f"signals are numbered 1 to {NSIG}, not {signo}")
    if signo == SIGCONT:
        return "Cont"
    if signo in SIG_KERNEL_IGNORE:
        return "Ign"
    if signo in SIG_KERNEL_STOP:
        return "Stop"
    return "Core" if signo in SIG_KERNEL_COREDUMP else "Term"


def _end_by(thread: Thread, info: Siginfo, err: int | None) -> Killed:
    end = Killed(info.si_signo, info, err)
    thread.process.terminate(end)
    return end


def _action(thread: Thread, signo: int) -> Sigaction:
    return thread.process.sigactions.get(signo, _SIG_DFL)


def sig_ignored(thread: Thread, signo: int) -> bool:
    """``sig_ignored``: is the signal dropped when it is sent to ``thread``?

    A blocked signal is never ignored (its handler may change before it is
    unblocked); otherwise SIG_IGN, or SIG_DFL with the default action Ign or
    Cont, drops it.
    """
    if signo in thread.blocked:
        return False
    handler = _action(thread, signo).handler
    return handler == SIG_IGN or (handler == SIG_DFL and signo in SIG_KERNEL_IGNORE)


def sig_fatal(thread: Thread, signo: int) -> bool:
    """``sig_fatal``: the default action ends the process (Term or Core) and no handler is set."""
    return signo not in SIG_KERNEL_IGNORE | SIG_KERNEL_STOP and _action(thread, signo).handler == SIG_DFL


def prepare_signal(thread: Thread, signo: int) -> bool:
    """``prepare_signal``: job control when a signal is sent; False when it is dropped.

    An ended process drops every signal (``SIGNAL_GROUP_EXIT``). A stop
    signal discards a pending SIGCONT; SIGCONT discards pending stop signals
    and continues a stopped process, whatever its disposition (signal(7),
    include/linux/signal.h). Then a signal the target ignores is dropped.
    """
    proc = thread.process
    if proc.end is not None:
        return False
    if signo in SIG_KERNEL_STOP:
        for t in proc.threads:
            t.pending[:] = [p for p in t.pending if p[0] != SIGCONT]
    elif signo == SIGCONT:
        for t in proc.threads:
            t.pending[:] = [p for p in t.pending if p[0] not in SIG_KERNEL_STOP]
        proc.stopped = 0
    return not sig_ignored(thread, signo)


def queue_signal(thread: Thread, signo: int, code: int) -> None:
    """Make ``signo`` pending for ``thread``; a signal below SIGRTMIN is pending at most once
    (``legacy_queue``), a real-time one queues every time."""
    if signo < SIGRTMIN and any(p[0] == signo for p in thread.pending):
        return
    thread.pending.append((signo, code))


def next_signal(thread: Thread) -> tuple[int, int] | None:
    """``next_signal``: the pending signal to deliver next, or None.

    The lowest-numbered unblocked one, synchronous signals (SIGSEGV, SIGBUS,
    SIGILL, SIGTRAP, SIGFPE, SIGSYS) first; real-time signals in the order
    they were sent.
    """
    ready = [p for p in thread.pending if p[0] not in thread.blocked]
    if not ready:
        return None
    sync = [p for p in ready if p[0] in SYNCHRONOUS_SIGNALS]
    return min(sync or ready, key=lambda p: p[0])


def deliver_pending(thread: Thread):
    """Deliver ``thread``'s unblocked pending signals, as on its way back to user space.

    Stops when none is left, the process has ended (returned) or it has stopped.
    """
    proc = thread.process
    while proc.end is None and not proc.stopped:
        item = next_signal(thread)
        if item is None:
            return None
        thread.pending.remove(item)
        end = deliver(thread, Siginfo(item[0], item[1]), None, _action(thread, item[0]))
        if end is not None:
            return end
    return proc.end


def force_sig_fault(thread: Thread, info: Siginfo, err: int | None = None):
    """Deliver a synchronous fault signal to ``thread`` (``force_sig_fault``).

    A forced signal that the thread blocks (it faulted inside the handler of
    the same signal) or ignores is unblocked and reset to SIG_DFL, so it
    ends the process. Returns the process's end, or None when a handler ran
    and returned, so the faulting instruction runs again.
    """
    action = _action(thread, info.si_signo)
    if info.si_signo in thread.blocked or action.handler == SIG_IGN:
        thread.process.sigactions[info.si_signo] = _SIG_DFL
        thread.blocked.discard(info.si_signo)
        action = _SIG_DFL
    return deliver(thread, info, err, action)


def send_signal(thread: Thread, signo: int, code: int = SI_TKILL, *, current: Thread | None = None):
    """Send ``signo`` to ``thread`` (``send_signal_locked``, ``complete_signal``).

    ``code`` is the si_code: SI_TKILL for ``tgkill`` and ``raise``, SI_USER for
    ``kill`` and for ``send_sig`` from the kernel (SIGPIPE). ``current`` is the
    sending thread; None means ``thread`` sends to itself (``raise``, SIGPIPE).
    A thread's own unblocked signal is delivered before its call returns.
    Another thread's is pending until it next runs, except that a fatal one
    (SIGKILL, or a Term signal with no handler, not blocked by a running
    target) ends the whole process at once. Returns how the process ended,
    or None.
    """
    proc = thread.process
    if not prepare_signal(thread, signo):
        return None
    if (current is None or current is thread) and signo not in thread.blocked:
        return deliver(thread, Siginfo(signo, code), None, _action(thread, signo))
    queue_signal(thread, signo, code)
    if signo == SIGKILL or (sig_fatal(thread, signo) and signo not in thread.blocked
                            and not proc.stopped and signo not in SIG_KERNEL_COREDUMP):
        # complete_signal: "This signal will be fatal to the whole group."
        return _end_by(thread, Siginfo(signo, code), None)
    return None


def force_sigsegv(thread: Thread, sig: int) -> None:
    """``force_sigsegv(sig)``: the kernel could not deliver ``sig``; queue a SIGSEGV (SI_KERNEL).

    If ``sig`` is itself SIGSEGV, the SIGSEGV is made fatal (``force_fatal_sig``:
    its action becomes SIG_DFL). Otherwise it is an ordinary forced signal
    (``force_sig``): only a blocked or ignored SIGSEGV is reset to SIG_DFL and
    unblocked, so a SIGSEGV handler still runs. Either way it is pending until
    the thread next goes back to user space with SIGSEGV unblocked.
    """
    proc = thread.process
    action = proc.sigactions.get(SIGSEGV, Sigaction())
    if sig == SIGSEGV or SIGSEGV in thread.blocked or action.handler == SIG_IGN:
        proc.sigactions[SIGSEGV] = Sigaction()
        thread.blocked.discard(SIGSEGV)
    thread.forced = Siginfo(SIGSEGV, SI_KERNEL, 0)


def deliver_forced(thread: Thread):
    """Deliver a pending forced SIGSEGV if SIGSEGV is not blocked; the end, or None."""
    if thread.forced is None or SIGSEGV in thread.blocked or thread.process.end is not None:
        return None
    info, thread.forced = thread.forced, None
    return deliver(thread, info, None, thread.process.sigactions.get(SIGSEGV, Sigaction()))


def deliver(thread: Thread, info: Siginfo, err: int | None, action: Sigaction):
    """``get_signal`` and ``handle_signal``: the default action, or frame + handler + sigreturn.

    SIG_IGN and the default actions Ign and Cont do nothing; Stop stops the
    process (it takes effect when the current step ends); Term and Core end it.
    A SIGSEGV that the kernel forces while it delivers (the rseq update or the
    frame write failed: :func:`force_sigsegv`) is delivered before the
    handler runs when SIGSEGV is not blocked then, else when sigreturn
    unblocks it.
    """
    if action.handler == SIG_IGN:
        return None
    if action.handler == SIG_DFL:
        what = default_action(info.si_signo)
        if what in ("Ign", "Cont"):
            return None
        if what == "Stop":
            # do_signal_stop. The model has no sessions: it treats every process group
            # as one with a parent outside it, so SIGTSTP, SIGTTIN and SIGTTOU stop too.
            thread.process.stopped = info.si_signo
            return None
        return _end_by(thread, info, err)
    from .uaccess import copy_to_user_with_pkru
    proc, system = thread.process, thread.system
    if thread.handler_depth >= MAX_HANDLER_DEPTH:
        # Handlers that keep raising signals nest frames until the stack is used up; Linux
        # then fails to write a frame and calls force_sigsegv. The model gets there sooner.
        return _end_by(thread, Siginfo(SIGSEGV, SI_KERNEL, 0), None)
    # get_sigframe: the alternate stack when asked for and not already on it.
    on_alt = thread.on_altstack()
    if action.flags & SA_ONSTACK and thread.altstack is not None and not on_alt:
        top = thread.altstack[0] + thread.altstack[1]
    else:
        top = thread.sp - RED_ZONE
    fpstate = (top - XSAVE_SIZE - 4) & ~63
    frame = ((fpstate - RT_SIGFRAME_SIZE) & ~15) - 8
    # The kernel writes the frame with copy_to_user: before 6.12 under the
    # interrupted PKRU; from 6.12 with every key open (PKRU = 0).
    write_pkru = PKRU_HW_INIT if system.kernel >= (6, 12) else thread.pkru
    system.note("interrupted", thread.pkru)
    system.note("kernel writes frame", write_pkru)
    # setup_rt_frame starts with rseq_signal_deliver, under the interrupted PKRU.
    if rseq_signal_deliver(thread):
        force_sigsegv(thread, info.si_signo)
    image = bytearray(top - frame)
    xstate_bv = 1 << XFEATURE_PKRU
    # XSAVE records PKRU as "in use" unless the CPU's init tracker says it is in its init
    # state: AMD does so whenever PKRU is 0, which is what 6.12 writes before XSAVE. From
    # 6.12.5 (and 6.13) the kernel sets the bit itself after it stores the saved PKRU
    # ("x86/pkeys: Ensure updated PKRU value is XRSTOR'd"); 6.12.0-6.12.4 did not
    # (RACE-AMD-XINUSE), so sigreturn's XRSTOR loads PKRU = 0.
    if system.cpu_vendor == "amd" and write_pkru == 0 and not system.kernel_at_least(6, 12, 5):
        xstate_bv &= ~(1 << XFEATURE_PKRU)
    bv_at = fpstate - frame + XSAVE_XSTATE_BV_OFFSET
    pkru_at = fpstate - frame + XSAVE_PKRU_OFFSET
    image[bv_at:bv_at + 8] = xstate_bv.to_bytes(8, "little")
    image[pkru_at:pkru_at + 4] = thread.pkru.to_bytes(4, "little")
    if copy_to_user_with_pkru(thread, frame, bytes(image), write_pkru) < 0:
        # signal_setup_done(failed): force_sigsegv, delivered at once (PKRU and stack unchanged).
        force_sigsegv(thread, info.si_signo)
        return deliver_forced(thread)
    # The frame's uc_stack keeps the alternate stack (save_altstack); SS_AUTODISARM disarms it.
    saved = (thread.sp, set(thread.blocked), thread.altstack, thread.altstack_flags)
    if thread.altstack_flags & SS_AUTODISARM:
        thread.altstack, thread.altstack_flags = None, SS_DISABLE
    # The handler runs with the global init_pkru (SIG-X86-HANDLER-RIGHTS, SIG-HANDLER-RIGHTS-GLOBAL).
    thread.pkru = system.init_pkru_value
    system.note("handler starts", thread.pkru)
    thread.sp = frame
    if not action.flags & SA_NODEFER:
        thread.blocked.add(info.si_signo)
    if action.flags & SA_RESETHAND:
        proc.sigactions[info.si_signo] = Sigaction()
    # Back on the way to user space: a pending forced SIGSEGV comes first, its frame on top.
    end = deliver_forced(thread)
    if end is not None or proc.end is not None:
        return proc.end
    thread.handler_depth += 1
    execs = proc.execs
    try:
        if action.touches_stack and thread.store(frame - 8, 0, 8) is not None:
            return proc.end
        ctx = SignalContext(thread, info, frame, fpstate, err)
        try:
            action.handler(ctx)
        except ProcessLookupError:
            if proc.end is None:
                raise
        if proc.end is not None:
            return proc.end
        if proc.execs != execs or thread not in proc.threads:
            return None             # the handler called execve: it never returns
        return sigreturn(thread, fpstate, saved)
    finally:
        thread.handler_depth -= 1


#: Where ``struct rseq`` keeps ``rseq_cs`` (:kernel:`7.2 include/uapi/linux/rseq.h rseq`).
RSEQ_CS_OFFSET = 8
RSEQ_SIZE = 32


def rseq_signal_deliver(thread: Thread) -> bool:
    """The rseq update at signal delivery; True when it failed (:func:`force_sigsegv` follows).

    glibc (2.35 and later) registers a ``struct rseq`` for every thread, in
    its thread control block, which sits in key-0 memory. Delivering a signal
    makes the kernel read ``rseq_cs`` there, and before Linux 6.19 also write
    the CPU number, with the interrupted thread's PKRU. If that PKRU denies
    key 0, the access fails and the kernel calls ``force_sigsegv``. When the
    signal being delivered is a SIGSEGV, its handler still runs (the frame
    is written with every key open since 6.12) and the process dies when it
    returns; any other signal, such as a SIGUSR1 from ``tgkill``, is
    overtaken by the forced SIGSEGV, which is not blocked: with no SIGSEGV
    handler the process dies before the first handler runs. Observed by the
    conformance harness: with key 0 write-disabled this happens on 6.1 and
    6.12 and not on 7.2; with key 0 access-disabled on all three. The
    selftests avoid rseq for this reason (SIG-SELFTESTS-612). The version
    where the write moved (the 6.19 rseq rework) is our reading; 6.12 and 7.2
    are what was run.
    """
    if thread.rseq is None:
        return False
    from .uaccess import copy_from_user_with_pkru, copy_to_user_with_pkru
    if copy_from_user_with_pkru(thread, thread.rseq + RSEQ_CS_OFFSET, 8, thread.pkru) == -EFAULT:
        return True
    if thread.system.kernel < (6, 19):
        cpu = bytes(8)      # cpu_id_start and cpu_id: the model has one CPU, number 0
        if copy_to_user_with_pkru(thread, thread.rseq, cpu, thread.pkru) < 0:
            return True
    return False


def sigreturn(thread: Thread, fpstate: int, saved):
    """``rt_sigreturn``: read the frame under the current PKRU, restore PKRU, the mask and the
    alternate stack.

    PKRU comes back from the frame's XSAVE image; if XSTATE_BV bit 9 is
    clear, XRSTOR loads the hardware init value 0 (INIT-PKRU-VS-HW-INIT,
    SEC-SIGRETURN). The alternate stack saved in the frame is set again
    (``restore_altstack``, which ignores sigaltstack's errors), undoing a
    change the handler made.
    """
    from .uaccess import copy_from_user
    image = copy_from_user(thread, fpstate, XSAVE_SIZE)
    if isinstance(image, int):
        return _end_by(thread, Siginfo(SIGSEGV, SI_KERNEL, 0), None)
    xstate_bv = int.from_bytes(image[XSAVE_XSTATE_BV_OFFSET:XSAVE_XSTATE_BV_OFFSET + 8], "little")
    pkru = int.from_bytes(image[XSAVE_PKRU_OFFSET:XSAVE_PKRU_OFFSET + 4], "little")
    thread.system.note("handler returns", thread.pkru)
    thread.pkru = pkru if xstate_bv & (1 << XFEATURE_PKRU) else PKRU_HW_INIT
    thread.system.note("after sigreturn", thread.pkru)
    thread.sp, thread.blocked, altstack, altstack_flags = saved
    restore_altstack(thread, altstack, altstack_flags)
    end = deliver_forced(thread)
    if end is not None:
        return end
    return deliver_pending(thread)


def restore_altstack(thread: Thread, altstack: tuple[int, int] | None, flags: int) -> None:
    """``restore_altstack``: sigaltstack with the values saved in the frame; errors are ignored."""
    sp, size = altstack or (0, 0)
    thread.do_sigaltstack(sp, size, flags)


# --- the system calls that send signals --------------------------------------------------

def valid_signal(signo: int) -> bool:
    """``valid_signal``: 0 (a probe that sends nothing) to 64."""
    return 0 <= cabi.index(signo) <= NSIG


def sys_tgkill(thread: Thread, tid: int, signo: int) -> int:
    """``tgkill(getpid(), tid, sig)``: the checks of ``do_tkill`` and ``do_send_specific``.

    A tid that is not positive is EINVAL; then the thread is looked up
    (ESRCH when this process has none with that tid) before the signal
    number is checked (``check_kill_permission``: EINVAL); signal 0 sends
    nothing.
    """
    tid, signo = cabi.int32(tid), cabi.int32(signo)
    if tid <= 0:
        return -EINVAL
    target = next((t for t in thread.process.threads if t.tid == tid), None)
    if target is None:
        return -ESRCH
    if not valid_signal(signo):
        return -EINVAL
    if signo:
        send_signal(target, signo, SI_TKILL, current=thread)
    return 0


def _process_target(proc, signo: int) -> Thread:
    """``complete_signal`` for a process-directed signal: the main thread if it does not
    block the signal, else the first thread that does not, else the main thread (where the
    signal waits: the model has no shared pending queue)."""
    for t in proc.threads:
        if signo not in t.blocked:
            return t
    return proc.threads[0]


def sys_kill(thread: Thread, pid: int, signo: int) -> int:
    """``kill(pid, sig)`` (``kill_something_info``), with si_code SI_USER.

    ``pid`` > 0: that process; 0: every process of the caller's process group;
    -1: every process but the caller's; < -1: process group ``-pid``. A pid
    or group nobody has is ESRCH, checked before the signal number (EINVAL).
    An ended process that nobody has waited for (the model never reaps one)
    still exists: the signal is accepted and dropped.
    """
    pid, signo = cabi.int32(pid), cabi.int32(signo)
    system = thread.system
    if pid > 0:
        targets = [system.processes[pid]] if pid in system.processes else []
    elif pid == -(1 << 31):
        return -ESRCH
    elif pid == -1:
        targets = [p for p in system.processes.values() if p is not thread.process]
    else:
        pgid = -pid if pid else thread.process.pgid
        targets = [p for p in system.processes.values() if p.pgid == pgid]
    if not targets:
        return -ESRCH
    if not valid_signal(signo):
        return -EINVAL
    for proc in targets:
        if signo and proc.end is None:
            target = _process_target(proc, signo)
            send_signal(target, signo, SI_USER, current=thread)
    return 0

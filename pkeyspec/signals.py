"""Signals on x86: siginfo, handlers, the signal frame, sigreturn, and how a process ends.

A fault in the model never raises a Python exception. The kernel turns it
into a signal (:kernel:`7.2 kernel/signal.c force_sig_fault`). With no handler
the default action ends the whole process, recorded as a :class:`Killed`
value, the way ``wait(2)`` reports it. With a handler, the kernel writes a
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
from .uapi import EFAULT, SI_CODE_NAMES, SI_KERNEL, SIGNAL_NAMES, SIGSEGV

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
SI_TKILL = -6
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


#: si_code values any signal can carry
#: (:kernel:`7.2 include/uapi/asm-generic/siginfo.h SI_USER SI_TKILL SI_KERNEL`).
GENERIC_SI_CODES = {0: "SI_USER", -6: "SI_TKILL", 0x80: "SI_KERNEL"}


def signal_name(signo: int) -> str:
    return SIGNAL_NAMES.get(signo, str(signo))


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

    def __repr__(self) -> str:
        code = SI_CODE_NAMES.get(self.si_signo, {}).get(self.si_code) or \
            GENERIC_SI_CODES.get(self.si_code, str(self.si_code))
        text = f"{signal_name(self.si_signo)}, si_code={code}, si_addr={self.si_addr:#x}"
        if code == "SEGV_PKUERR":
            text += f", si_pkey={self.si_pkey}"
        return f"Siginfo({text})"


@dataclass(frozen=True)
class Exited:
    """The process called exit: ``WIFEXITED``, ``WEXITSTATUS``."""

    status: int

    def __repr__(self) -> str:
        return f"Exited({self.status})"


@dataclass(frozen=True)
class Killed:
    """The process was ended by a signal: ``WIFSIGNALED``, ``WTERMSIG``.

    ``siginfo`` and ``err`` (the x86 page-fault error code, ``REG_ERR`` in
    the ucontext) describe the fault that raised it, when one did.
    """

    signo: int
    siginfo: Siginfo | None = None
    err: int | None = None

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


class SignalContext:
    """What a handler sees: the thread, the siginfo, and the frame in memory.

    The frame is user memory: reading or editing the saved PKRU is a load or
    a store by the handler, checked against the handler's PKRU like any
    other access.
    """

    def __init__(self, thread: Thread, info: Siginfo, frame: int, fpstate: int,
                 err: int | None) -> None:
        self.thread = thread
        self.info = info
        self.frame = frame
        self.fpstate = fpstate
        self.err = err

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


def default_action_ends(signo: int) -> bool:
    """SIGSEGV, SIGILL, SIGKILL, SIGUSR1 and SIGUSR2 all end the process by default."""
    return True


def _end_by(thread: Thread, info: Siginfo, err: int | None) -> Killed:
    end = Killed(info.si_signo, info, err)
    thread.process.terminate(end)
    return end


def force_sig_fault(thread: Thread, info: Siginfo, err: int | None = None):
    """Deliver a synchronous fault signal to ``thread`` (``force_sig_fault``).

    A forced signal that the thread blocks (it faulted inside the handler of
    the same signal) or ignores is unblocked and reset to SIG_DFL, so it
    ends the process. Returns the process's end, or None when a handler ran
    and returned, so the faulting instruction runs again.
    """
    action = thread.process.sigactions.get(info.si_signo, Sigaction())
    if info.si_signo in thread.blocked or action.handler == SIG_IGN:
        thread.process.sigactions[info.si_signo] = Sigaction()
        thread.blocked.discard(info.si_signo)
        action = Sigaction()
    return deliver(thread, info, err, action)


def send_signal(thread: Thread, signo: int, code: int = SI_TKILL):
    """An asynchronous signal reaches ``thread``: delivered now, or pending if blocked.

    ``code`` is the si_code: SI_TKILL for ``tgkill`` and ``raise``, SI_USER for
    ``send_sig`` from the kernel (SIGPIPE).
    """
    action = thread.process.sigactions.get(signo, Sigaction())
    if action.handler == SIG_IGN:
        return None
    if signo in thread.blocked:
        thread.pending.append(signo)
        return None
    return deliver(thread, Siginfo(signo, code), None, action)


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
    """``handle_signal``: default action, or frame + handler + sigreturn.

    A SIGSEGV that the kernel forces while it delivers (the rseq update or the
    frame write failed: :func:`force_sigsegv`) is delivered before the
    handler runs when SIGSEGV is not blocked then, else when sigreturn
    unblocks it.
    """
    if action.handler == SIG_DFL:
        return _end_by(thread, info, err)
    from .uaccess import copy_to_user_with_pkru
    proc, system = thread.process, thread.system
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
    while thread.pending and thread.process.end is None:
        signo = thread.pending.pop(0)
        end = send_signal(thread, signo)
        if end is not None:
            return end
    return thread.process.end


def restore_altstack(thread: Thread, altstack: tuple[int, int] | None, flags: int) -> None:
    """``restore_altstack``: sigaltstack with the values saved in the frame; errors are ignored."""
    sp, size = altstack or (0, 0)
    thread.do_sigaltstack(sp, size, flags)

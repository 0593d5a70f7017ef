"""Processes and threads, and the calls a thread makes.

A :class:`Thread` is where everything happens: it owns a PKRU
(HW-X86-THREAD-LOCAL), makes the system calls (which act on its
process's mm and, for pkey_alloc and execute-only mprotect, on its own PKRU
only) and executes loads, stores and fetches. Each method is one atomic step
of the model: a system call runs under the mmap lock as a whole, an
instruction is one instruction.

System calls return what the C call returns on success and raise
:class:`OSError` with Linux's errno on failure. Faults are not exceptions:
they become signals (:mod:`pkeyspec.signals`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import access, cabi, io_uring as uring, keys, mm as mm_, signals, uaccess
from .signals import MINSIGSTKSZ, SS_AUTODISARM, SS_DISABLE, SS_ONSTACK, Exited, Killed, Sigaction
from .uapi import EAGAIN, EINVAL, ENOMEM, ENOSYS, EPERM, ESRCH

if TYPE_CHECKING:
    from .system import System


def sigaltstack_size_valid(thread: Thread, ss_size: int) -> bool:
    """x86's ``sigaltstack_size_valid``: True on the systems the model describes.

    It compares the size with the largest signal frame (the AT_MINSIGSTKSZ of
    the auxiliary vector) only when the kernel was booted with
    ``strict_sas_size`` (or built with CONFIG_STRICT_SIGALTSTACK_SIZE), or when
    the process has asked for a dynamically enabled XSAVE feature (AMX) with
    ``arch_prctl(ARCH_REQ_XCOMP_PERM)``. The model has neither, so only
    MINSIGSTKSZ limits the size.
    """
    return True


def _syscall(ret: int) -> int:
    """The glibc convention: a negative kernel return becomes errno and -1 (here: OSError)."""
    if ret < 0:
        raise OSError(-ret, os.strerror(-ret))
    return ret


@dataclass(eq=False)
class Process:
    """A process: an mm shared by its threads, and how it ended (None while it runs)."""

    system: System
    pid: int
    mm: mm_.Mm
    threads: list[Thread] = field(default_factory=list)
    end: Exited | Killed | None = None
    #: How many times the process has called execve (a handler that execs never returns).
    execs: int = 0
    #: Signal dispositions, shared by the threads (``sigaction``).
    sigactions: dict[int, Sigaction] = field(default_factory=dict)
    #: Open files: pipe ends and ``/proc/PID/mem``.
    fds: dict[int, object] = field(default_factory=dict)
    #: The signal that stopped the process (SIGSTOP, SIGTSTP, ...), 0 while it runs.
    stopped: int = 0
    #: The process group (``kill(0, sig)``): a spawned program starts its own, a child
    #: of fork stays in its parent's.
    pgid: int = 0

    def alloc_fd(self, f: object) -> int:
        fd = 3
        while fd in self.fds:
            fd += 1
        self.fds[fd] = f
        return fd

    @property
    def main(self) -> Thread:
        return self.threads[0]

    def terminate(self, end: Exited | Killed) -> None:
        """Every thread of the process stops; the process is now a zombie with ``end``."""
        if self.end is None:
            self.end = end
            # do_exit -> exit_files: a dead process's pipe ends close.
            for fd in list(self.fds):
                uaccess.close_file(self.fds.pop(fd), self.system)

    def smaps(self) -> str:
        return mm_.smaps(self.mm)

    def __repr__(self) -> str:
        state = "running" if self.end is None else repr(self.end)
        if self.end is None and self.stopped:
            state = f"stopped by {signals.signal_name(self.stopped)}"
        return f"<Process {self.pid} {state}>"


@dataclass(eq=False)
class Thread:
    """One thread: a tid, its own PKRU, and the process it belongs to."""

    process: Process
    tid: int
    pkru: int
    #: The stack pointer: where a signal frame goes when no alternate stack is used.
    sp: int = 0
    #: ``sigaltstack``: (ss_sp, ss_size), or None (``sas_ss_sp``, ``sas_ss_size``).
    altstack: tuple[int, int] | None = None
    #: The ``ss_flags`` last accepted by sigaltstack (``sas_ss_flags``; SS_DISABLE at first).
    altstack_flags: int = SS_DISABLE
    blocked: set[int] = field(default_factory=set)
    pending: list[int] = field(default_factory=list)
    #: A SIGSEGV forced by the kernel (``force_sigsegv``) and not yet delivered.
    forced: signals.Siginfo | None = None
    handler_depth: int = 0
    #: The thread's registered ``struct rseq`` (glibc registers one per thread), or None.
    rseq: int | None = None
    #: Its io_uring context (``current->io_uring``): made by its first submission.
    io_uring: uring.IoUringTask | None = None

    def on_altstack(self) -> bool:
        """``on_sig_stack(sp)``: never with SS_AUTODISARM, else the stack pointer is inside it."""
        if self.altstack_flags & SS_AUTODISARM:
            return False
        return self.altstack is not None and \
            self.altstack[0] < self.sp <= self.altstack[0] + self.altstack[1]

    def sas_ss_flags(self) -> int:
        """``sas_ss_flags(sp)``: SS_DISABLE without an alternate stack, SS_ONSTACK on it, else 0."""
        if self.altstack is None:
            return SS_DISABLE
        return SS_ONSTACK if self.on_altstack() else 0

    @property
    def system(self) -> System:
        return self.process.system

    @property
    def alive(self) -> bool:
        return self.process.end is None and self in self.process.threads

    def _enter(self) -> None:
        if self.process.end is not None:
            raise ProcessLookupError(ESRCH, f"thread {self.tid} has ended: {self.process.end!r}")
        if self not in self.process.threads:
            raise ProcessLookupError(ESRCH, f"thread {self.tid} has ended")
        # A signal sent to this thread by another one is delivered on its way back to user space.
        if not self.process.stopped and signals.deliver_pending(self) is not None:
            raise ProcessLookupError(ESRCH, f"thread {self.tid} has ended: {self.process.end!r}")
        if self.process.stopped:
            # A stopped thread makes no step until a SIGCONT (or SIGKILL) from elsewhere.
            raise BlockingIOError(EAGAIN, f"thread {self.tid} is stopped by "
                                  f"{signals.signal_name(self.process.stopped)} until a SIGCONT")

    def _pkey_syscalls_exist(self, *args: int) -> None:
        """The three pkey system calls arrived in Linux 4.9; before, they are ENOSYS (SYS-ENOSYS).

        The arguments are C integers even then: a non-integer is a TypeError first.
        """
        for arg in args:
            cabi.index(arg)
        if self.system.kernel < (4, 9):
            raise OSError(ENOSYS, os.strerror(ENOSYS))

    def __repr__(self) -> str:
        pkru = f"{self.pkru:#010x}" if self.process.mm.ospke else "none (no PKU)"
        return f"<Thread {self.tid} of process {self.process.pid} pkru={pkru}>"

    # --- system calls (each one atomic step under the mmap lock) -------------
    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        """``mmap(2)``, anonymous mappings only; returns the address."""
        self._enter()
        return _syscall(mm_.sys_mmap(self, addr, length, prot, flags, fd, offset))

    def munmap(self, addr: int, length: int) -> int:
        """``munmap(2)``."""
        self._enter()
        return _syscall(mm_.sys_munmap(self, addr, length))

    def mprotect(self, addr: int, len: int, prot: int) -> int:
        """``mprotect(2)``: exactly ``pkey_mprotect(addr, len, prot, -1)``."""
        self._enter()
        return _syscall(mm_.do_mprotect_pkey(self, addr, len, prot, -1))

    def pkey_mprotect(self, addr: int, len: int, prot: int, pkey: int) -> int:
        """``pkey_mprotect(2)``."""
        self._enter()
        self._pkey_syscalls_exist(addr, len, prot, pkey)
        return _syscall(mm_.do_mprotect_pkey(self, addr, len, prot, pkey))

    def madvise(self, addr: int, length: int, advice: int) -> int:
        """``madvise(2)`` with MADV_NORMAL or MADV_DONTNEED."""
        self._enter()
        return _syscall(mm_.sys_madvise(self, addr, length, advice))

    def pkey_alloc(self, flags: int, access_rights: int) -> int:
        """``pkey_alloc(2)``: returns the new key."""
        self._enter()
        self._pkey_syscalls_exist(flags, access_rights)
        return _syscall(keys.sys_pkey_alloc(self, flags, access_rights))

    def pkey_free(self, pkey: int) -> int:
        """``pkey_free(2)``."""
        self._enter()
        self._pkey_syscalls_exist(pkey)
        return _syscall(keys.sys_pkey_free(self, pkey))

    def smaps(self) -> str:
        """The text of ``/proc/self/smaps``, read by this thread."""
        self._enter()
        return self.process.smaps()

    def smaps_pkey(self, addr: int) -> int | None:
        """The ``ProtectionKey:`` of the VMA holding ``addr`` in ``/proc/self/smaps``."""
        self._enter()
        return mm_.smaps_pkey(self.process.mm, addr)

    # --- files and kernel access to user memory --------------------------------
    def pipe(self) -> tuple[int, int]:
        """``pipe2(O_NONBLOCK)``: (read end, write end). Model pipes never block."""
        self._enter()
        return uaccess.sys_pipe(self)

    def read(self, fd: int, buf: int, count: int) -> int:
        """``read(2)``; the kernel writes ``buf`` under this thread's PKRU (KERN-COPY-USER)."""
        self._enter()
        return _syscall(uaccess.sys_read(self, fd, buf, count))

    def write(self, fd: int, buf: int, count: int) -> int:
        """``write(2)``; the kernel reads ``buf`` under this thread's PKRU (KERN-COPY-USER)."""
        self._enter()
        return _syscall(uaccess.sys_write(self, fd, buf, count))

    def close(self, fd: int) -> int:
        self._enter()
        return _syscall(uaccess.sys_close(self, fd))

    def open_proc_mem(self, pid: int = 0) -> int:
        """``open("/proc/PID/mem", O_RDWR)``; pid 0 is ``/proc/self/mem``."""
        self._enter()
        return _syscall(uaccess.sys_open_proc_mem(self, pid))

    def pread(self, fd: int, buf: int, count: int, offset: int) -> int:
        """``pread(2)``; on ``/proc/PID/mem`` the target is read without key checks."""
        self._enter()
        return _syscall(uaccess.sys_pread(self, fd, buf, count, offset))

    def pwrite(self, fd: int, buf: int, count: int, offset: int) -> int:
        """``pwrite(2)``; on ``/proc/PID/mem`` the target is written without key checks."""
        self._enter()
        return _syscall(uaccess.sys_pwrite(self, fd, buf, count, offset))

    def process_vm_readv(self, pid: int, local_iov, remote_iov, flags: int = 0) -> int:
        """``process_vm_readv(2)`` with iovecs as lists of (base, len)."""
        self._enter()
        return _syscall(uaccess.sys_process_vm_readv(self, pid, local_iov, remote_iov, flags))

    def process_vm_writev(self, pid: int, local_iov, remote_iov, flags: int = 0) -> int:
        """``process_vm_writev(2)`` with iovecs as lists of (base, len)."""
        self._enter()
        return _syscall(uaccess.sys_process_vm_writev(self, pid, local_iov, remote_iov, flags))

    def ptrace(self, request: int, pid: int, addr: int, data: int = 0) -> int:
        """``ptrace(2)``: PTRACE_PEEKDATA and PTRACE_POKEDATA only."""
        self._enter()
        return _syscall(uaccess.sys_ptrace(self, request, pid, addr, data))

    # --- io_uring (pkeyspec.io_uring) -------------------------------------------
    def io_uring_setup(self, entries: int, flags: int = 0) -> int:
        """``io_uring_setup(2)``: the ring's fd. An SQPOLL thread takes this thread's PKRU now."""
        entries, flags = cabi.uint32(entries), cabi.uint32(flags)     # TypeError at once
        self._enter()
        return _syscall(uring.sys_io_uring_setup(self, entries, flags))

    def io_uring_submit(self, ring: int, opcode: int, fd: int, addr: int, length: int,
                        sqe_flags: int = 0) -> int:
        """Submit one SQE to ``ring`` and wait for its CQE; returns the CQE's ``res``.

        ``res`` is a byte count, or a negative errno for a failed request (as
        the kernel writes it); a failed ``io_uring_enter`` raises OSError. The
        copies run under the PKRU of the task that executes the request:
        this thread (inline), its io-wq worker (``IOSQE_ASYNC``) or the ring's
        SQPOLL thread (:func:`pkeyspec.io_uring.executor_pkru`).
        """
        # The SQE's fields as the kernel reads them (u8 opcode, s32 fd, u64 addr, u32 len,
        # u8 flags); a value of the wrong type is a TypeError at once.
        sqe = uring.Sqe(cabi.uint32(opcode) & 0xFF, cabi.int32(fd), cabi.ulong(addr),
                        cabi.uint32(length), cabi.uint32(sqe_flags) & 0xFF)
        ring = cabi.int32(ring)
        self._enter()
        return uring.submit_and_wait(self, ring, sqe)

    # --- signals ------------------------------------------------------------
    def sigaction(self, signum: int, handler, flags: int = 0, *,
                  touches_stack: bool = True) -> Sigaction:
        """Install a handler (a callable taking a SignalContext, SIG_DFL or SIG_IGN); returns the old one.

        ``do_sigaction``: a signal outside 1..64, SIGKILL or SIGSTOP is EINVAL.
        Ignoring a signal discards it where it is pending.
        """
        self._enter()
        signum, flags = cabi.int32(signum), cabi.ulong(flags)
        if not (callable(handler) or (type(handler) is int and handler in (signals.SIG_DFL, signals.SIG_IGN))):
            raise TypeError("a handler is SIG_DFL, SIG_IGN or a callable taking a SignalContext, "
                            f"not {handler!r:.60}")
        if not isinstance(touches_stack, bool):
            raise TypeError(f"touches_stack is True or False, not {touches_stack!r:.60}")
        if not signals.valid_signal(signum) or signum < 1 or signum in signals.SIG_KERNEL_ONLY:
            raise OSError(EINVAL, os.strerror(EINVAL))
        old = self.process.sigactions.get(signum, Sigaction())
        self.process.sigactions[signum] = Sigaction(handler, flags, touches_stack)
        if signals.sig_ignored(self, signum):
            for t in self.process.threads:
                t.pending[:] = [p for p in t.pending if p[0] != signum]
        return old

    def sigaltstack(self, ss_sp: int, ss_size: int, ss_flags: int = 0) -> int:
        """``sigaltstack(2)``: set this thread's alternate signal stack (or SS_DISABLE it).

        The checks in Linux's order (``do_sigaltstack``): EPERM while the thread
        runs on its alternate stack; EINVAL unless the mode (``ss_flags``
        without SS_AUTODISARM) is 0, SS_ONSTACK or SS_DISABLE; 0 at once when
        nothing changes; then, unless disabling, ENOMEM for a size below
        MINSIGSTKSZ or one x86's ``sigaltstack_size_valid`` refuses.
        """
        self._enter()
        return _syscall(self.do_sigaltstack(ss_sp, ss_size, ss_flags))

    def do_sigaltstack(self, ss_sp: int, ss_size: int, ss_flags: int) -> int:
        """The kernel's ``do_sigaltstack`` for this thread at its stack pointer: 0 or -errno."""
        ss_sp, ss_size = cabi.ulong(ss_sp), cabi.ulong(ss_size)
        ss_flags = cabi.int32(ss_flags) & 0xFFFFFFFF          # unsigned ss_flags
        if self.on_altstack():
            return -EPERM
        ss_mode = ss_flags & ~SS_AUTODISARM
        if ss_mode not in (0, SS_ONSTACK, SS_DISABLE):
            return -EINVAL
        if (ss_sp, ss_size, ss_flags) == (*(self.altstack or (0, 0)), self.altstack_flags):
            return 0
        if ss_mode == SS_DISABLE:
            self.altstack, self.altstack_flags = None, ss_flags
            return 0
        if ss_size < MINSIGSTKSZ or not sigaltstack_size_valid(self, ss_size):
            return -ENOMEM
        self.altstack, self.altstack_flags = (ss_sp, ss_size), ss_flags
        return 0

    def get_sigaltstack(self) -> tuple[int, int, int]:
        """``sigaltstack(NULL, &old)``: (ss_sp, ss_size, ss_flags) as the kernel reports them.

        ``ss_flags`` is :meth:`sas_ss_flags` plus SS_AUTODISARM when it was set.
        """
        self._enter()
        sp, size = self.altstack or (0, 0)
        return sp, size, self.sas_ss_flags() | (self.altstack_flags & SS_AUTODISARM)

    def raise_signal(self, signum: int):
        """``raise(3)``: send ``signum`` to this thread; returns how the process ended, or None.

        The signal's default action may also stop the process (``process.stopped``)
        or do nothing (signal(7)).
        """
        self._enter()
        signum = cabi.int32(signum)
        if not signals.valid_signal(signum):
            raise OSError(EINVAL, os.strerror(EINVAL))
        return signals.send_signal(self, signum) if signum else None

    def tgkill(self, tid: int, signum: int) -> int:
        """Send ``signum`` to thread ``tid`` of this process.

        Signal 0 only checks that the thread exists. A signal whose action is
        the default and ends the process ends the whole thread group at once
        (``complete_signal``); any other is delivered when the target runs next.
        """
        self._enter()
        return _syscall(signals.sys_tgkill(self, tid, signum))

    def kill(self, pid: int, signum: int) -> int:
        """``kill(2)``: send ``signum`` to process ``pid`` (0: this process group, -1: every
        other process, below -1: process group ``-pid``), with si_code SI_USER."""
        self._enter()
        return _syscall(signals.sys_kill(self, pid, signum))

    # --- tasks -----------------------------------------------------------
    def clone(self, stack: int | None = None) -> Thread:
        """A new thread in this process; it starts with this thread's *current* PKRU (THR-CLONE-INHERITS).

        Without ``stack`` this is ``pthread_create``: the model maps a 64 KiB
        stack (key 0) and registers the thread's ``struct rseq`` at its top,
        as glibc does. With ``stack`` it is a raw ``clone`` on that stack, with
        no rseq area (as the kernel selftests do).
        """
        self._enter()
        rseq = None
        if stack is not None:
            stack = cabi.ulong(stack)           # the stack pointer is a 64-bit register
        else:
            from .uapi import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
            size = 64 * 1024
            base = _syscall(mm_.sys_mmap(self, 0, size, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
            stack = base + size - 0x100
            rseq = stack
        thread = self.system.new_thread(self.process, self.pkru, stack)
        thread.rseq = rseq
        return thread

    def rseq_unregister(self) -> int:
        """``rseq(..., RSEQ_FLAG_UNREGISTER, ...)``: this thread stops using rseq."""
        self._enter()
        if self.rseq is None:
            raise OSError(EINVAL, os.strerror(EINVAL))
        self.rseq = None
        return 0

    def fork(self) -> Thread:
        """A child process; returns its only thread.

        The child gets a copy of the mm, keys and all: the allocation map,
        the execute-only key and every VMA's key (FORK-COPIES-MAP,
        FORK-VMA-KEYS), and the PKRU of the calling thread only (FORK-PKRU).
        """
        self._enter()
        return self.system.fork(self)

    def execve(self) -> Thread:
        """Replace the program: a fresh mm (map {0}) and PKRU = init_pkru (EXEC-RESET).

        The other threads end; this thread becomes the process's only thread.
        """
        self._enter()
        return self.system.execve(self)

    def exit_group(self, status: int) -> None:
        """End the process with ``status`` (``_exit``)."""
        self._enter()
        self.process.terminate(Exited(cabi.int32(status) & 0xFF))

    # --- instructions (each one atomic step) ----------------------------------
    def load(self, addr: int, size: int = 1) -> int | Killed:
        """Read ``size`` bytes: the value, or the signal that ended the process."""
        self._enter()
        return access.load(self, addr, size)

    def store(self, addr: int, value: int, size: int = 1) -> None | Killed:
        """Write ``size`` bytes: None, or the signal that ended the process."""
        self._enter()
        return access.store(self, addr, value, size)

    def execute(self, addr: int) -> int | Killed:
        """Fetch the instruction byte at ``addr`` (as a call into that page would)."""
        self._enter()
        return access.execute(self, addr)

    def rdpkru(self, ecx: int = 0) -> int | Killed:
        """RDPKRU: this thread's PKRU."""
        self._enter()
        return access.rdpkru(self, ecx)

    def wrpkru(self, eax: int, ecx: int = 0, edx: int = 0) -> None | Killed:
        """WRPKRU: set this thread's PKRU."""
        self._enter()
        return access.wrpkru(self, eax, ecx, edx)

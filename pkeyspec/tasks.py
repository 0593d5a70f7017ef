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

from . import access, keys, mm as mm_
from .signals import Exited, Killed
from .uapi import ESRCH

if TYPE_CHECKING:
    from .system import System


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

    @property
    def main(self) -> Thread:
        return self.threads[0]

    def terminate(self, end: Exited | Killed) -> None:
        """Every thread of the process stops; the process is now a zombie with ``end``."""
        if self.end is None:
            self.end = end

    def smaps(self) -> str:
        return mm_.smaps(self.mm)

    def __repr__(self) -> str:
        state = "running" if self.end is None else repr(self.end)
        return f"<Process {self.pid} {state}>"


@dataclass(eq=False)
class Thread:
    """One thread: a tid, its own PKRU, and the process it belongs to."""

    process: Process
    tid: int
    pkru: int

    @property
    def system(self) -> System:
        return self.process.system

    @property
    def alive(self) -> bool:
        return self.process.end is None

    def _enter(self) -> None:
        if self.process.end is not None:
            raise ProcessLookupError(ESRCH, f"thread {self.tid} has ended: {self.process.end!r}")

    def __repr__(self) -> str:
        return f"<Thread {self.tid} of process {self.process.pid} pkru={self.pkru:#010x}>"

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
        return _syscall(mm_.do_mprotect_pkey(self, addr, len, prot, pkey))

    def madvise(self, addr: int, length: int, advice: int) -> int:
        """``madvise(2)`` with MADV_NORMAL or MADV_DONTNEED."""
        self._enter()
        return _syscall(mm_.sys_madvise(self, addr, length, advice))

    def pkey_alloc(self, flags: int, access_rights: int) -> int:
        """``pkey_alloc(2)``: returns the new key."""
        self._enter()
        return _syscall(keys.sys_pkey_alloc(self, flags, access_rights))

    def pkey_free(self, pkey: int) -> int:
        """``pkey_free(2)``."""
        self._enter()
        return _syscall(keys.sys_pkey_free(self, pkey))

    def smaps(self) -> str:
        """The text of ``/proc/self/smaps``, read by this thread."""
        self._enter()
        return self.process.smaps()

    def smaps_pkey(self, addr: int) -> int | None:
        """The ``ProtectionKey:`` of the VMA holding ``addr`` in ``/proc/self/smaps``."""
        self._enter()
        return mm_.smaps_pkey(self.process.mm, addr)

    # --- tasks -----------------------------------------------------------
    def clone(self) -> Thread:
        """A new thread in this process; it starts with this thread's *current* PKRU."""
        self._enter()
        return self.system.new_thread(self.process, self.pkru)

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
        self.process.terminate(Exited(status & 0xFF))

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

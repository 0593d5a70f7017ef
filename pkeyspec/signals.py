"""Signals as the model delivers them: siginfo, and how a process ends.

A fault in the model never raises a Python exception. The kernel turns it
into a signal (``force_sig_fault`` in ``kernel/signal.c``); with no handler
the default action of SIGSEGV and SIGILL ends the whole process, and the
model records that ending as a :class:`Killed` value, like ``wait(2)``
reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .uapi import SI_CODE_NAMES, SIGNAL_NAMES

if TYPE_CHECKING:
    from .tasks import Thread


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
        code = SI_CODE_NAMES.get(self.si_signo, {}).get(self.si_code, str(self.si_code))
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


def force_sig_fault(thread: Thread, info: Siginfo, err: int | None = None) -> Killed | None:
    """Deliver a synchronous fault signal to ``thread``.

    Returns the process's end when the signal ends it, or None when the
    thread goes on (a handler returned, and the faulting instruction is
    executed again). The model has no user handlers yet: the default action
    of SIGSEGV and SIGILL (core dump) ends every thread of the process.
    """
    end = Killed(info.si_signo, info, err)
    thread.process.terminate(end)
    return end

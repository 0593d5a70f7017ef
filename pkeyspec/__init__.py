"""pkeyspec: an executable specification of Linux memory protection keys.

``from pkeyspec import *`` gives the model (:class:`System`, which starts
processes whose threads make the calls), Linux's constants, and the
hardware helpers. Every page of the documentation starts from it.
"""

from .hardware import (
    INIT_PKRU_VALUE, NR_PKEYS, PKRU_AD_BIT, PKRU_HW_INIT, PKRU_WD_BIT, X86_PF_INSTR, X86_PF_PK,
    X86_PF_PROT, X86_PF_USER, X86_PF_WRITE, decode_pf_error, decode_pkru, pkru_rights,
    pkru_with_rights,
)
from . import glibc, rfc
from .signals import (
    SA_NODEFER, SA_ONSTACK, SA_RESETHAND, SA_SIGINFO, SIG_DFL, SIG_IGN, SS_AUTODISARM, SS_DISABLE,
    SS_ONSTACK, Exited, Killed, Livelock, Siginfo, SignalContext,
)
from .uaccess import PTRACE_PEEKDATA, PTRACE_POKEDATA
from .system import System
from .tasks import Process, Thread
from .uapi import *  # noqa: F403  (Linux's names are the point)
from .uapi import PAGE_SIZE

__version__ = "0.1.0"

__all__ = [
    "System", "Process", "Thread", "Siginfo", "Killed", "Exited", "Livelock", "SignalContext",
    "glibc", "rfc", "SA_NODEFER", "SA_ONSTACK", "SA_RESETHAND", "SA_SIGINFO", "SIG_DFL", "SIG_IGN",
    "SS_DISABLE", "SS_ONSTACK", "SS_AUTODISARM", "PTRACE_PEEKDATA", "PTRACE_POKEDATA",
    "INIT_PKRU_VALUE", "PKRU_HW_INIT", "NR_PKEYS", "PKRU_AD_BIT", "PKRU_WD_BIT",
    "X86_PF_PROT", "X86_PF_WRITE", "X86_PF_USER", "X86_PF_INSTR", "X86_PF_PK",
    "pkru_rights", "pkru_with_rights", "decode_pkru", "decode_pf_error", "PAGE_SIZE",
] + [name for name in dir(__import__("pkeyspec.uapi", fromlist=["x"]))
     if (name.isupper() or name.startswith("NR_")) and not name.startswith("_") and name not in ("SIGNAL_NAMES", "SI_CODE_NAMES")]

"""Linux UAPI constants of the model, each checked against a second source.

Errno values are compared with Python's :mod:`errno`, PROT_*/MAP_*/MADV_*
with :mod:`mmap` (where it has the name), signal numbers with :mod:`signal`.
The rest (PKEY_*, si_code values, x86-64 syscall numbers, the constants
Python does not export) are compared with the literal values of the kernel's
UAPI headers and ``arch/x86/entry/syscalls/syscall_64.tbl``.
"""

import errno
import mmap
import signal

import pytest

import pkeyspec
from pkeyspec import uapi

# include/uapi/asm-generic/mman-common.h, include/uapi/linux/mman.h
MMAN_LITERALS = {
    "PROT_NONE": 0x0,
    "PROT_READ": 0x1,
    "PROT_WRITE": 0x2,
    "PROT_EXEC": 0x4,
    "PROT_SEM": 0x8,
    "PROT_GROWSDOWN": 0x01000000,
    "PROT_GROWSUP": 0x02000000,
    "MAP_SHARED": 0x01,
    "MAP_PRIVATE": 0x02,
    "MAP_SHARED_VALIDATE": 0x03,
    "MAP_TYPE": 0x0F,
    "MAP_FIXED": 0x10,
    "MAP_ANONYMOUS": 0x20,
    "MAP_FIXED_NOREPLACE": 0x100000,
    "MADV_NORMAL": 0,
    "MADV_DONTNEED": 4,
}

# include/uapi/asm-generic/mman-common.h (x86 uses the generic values)
PKEY_LITERALS = {
    "PKEY_UNRESTRICTED": 0x0,
    "PKEY_DISABLE_ACCESS": 0x1,
    "PKEY_DISABLE_WRITE": 0x2,
    "PKEY_ACCESS_MASK": 0x3,
}

# include/uapi/asm-generic/errno-base.h, errno.h (x86-64 uses the generic numbers)
ERRNO_LITERALS = {
    "EPERM": 1,
    "ESRCH": 3,
    "EINTR": 4,
    "EBADF": 9,
    "ENOMEM": 12,
    "EACCES": 13,
    "EFAULT": 14,
    "EEXIST": 17,
    "EINVAL": 22,
    "ENOSPC": 28,
    "ENOSYS": 38,
    "EOVERFLOW": 75,
    "ENOENT": 2,
    "EIO": 5,
    "EAGAIN": 11,
    "ERANGE": 34,
    "EOPNOTSUPP": 95,
}

# arch/x86/include/uapi/asm/signal.h
#: arch/x86/include/uapi/asm/signal.h
SIGNAL_LITERALS = {
    "SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6, "SIGBUS": 7,
    "SIGFPE": 8, "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12, "SIGPIPE": 13,
    "SIGALRM": 14, "SIGTERM": 15, "SIGSTKFLT": 16, "SIGCHLD": 17, "SIGCONT": 18, "SIGSTOP": 19,
    "SIGTSTP": 20, "SIGTTIN": 21, "SIGTTOU": 22, "SIGURG": 23, "SIGXCPU": 24, "SIGXFSZ": 25,
    "SIGVTALRM": 26, "SIGPROF": 27, "SIGWINCH": 28, "SIGIO": 29, "SIGPWR": 30, "SIGSYS": 31,
}

# include/uapi/asm-generic/siginfo.h
SI_CODE_LITERALS = {
    "SI_KERNEL": 0x80,
    "ILL_ILLOPN": 2,
    "SEGV_MAPERR": 1,
    "SEGV_ACCERR": 2,
    "SEGV_BNDERR": 3,
    "SEGV_PKUERR": 4,
}

# arch/x86/entry/syscalls/syscall_64.tbl
SYSCALL_LITERALS = {
    "NR_mmap": 9,
    "NR_mprotect": 10,
    "NR_munmap": 11,
    "NR_pkey_mprotect": 329,
    "NR_pkey_alloc": 330,
    "NR_pkey_free": 331,
}

# include/uapi/linux/io_uring.h (the same values in 6.1, 6.12 and 7.2)
IO_URING_LITERALS = {
    "IORING_SETUP_SQPOLL": 2,
    "IORING_OP_READ": 22,
    "IORING_OP_WRITE": 23,
    "IOSQE_ASYNC": 16,
}

MMAP_MODULE_NAMES = sorted(n for n in MMAN_LITERALS if hasattr(mmap, n))


@pytest.mark.parametrize("name", sorted(MMAN_LITERALS))
def test_mman_constant_has_the_uapi_value(name):
    """PROT_*, MAP_*, MADV_* equal include/uapi/asm-generic/mman-common.h (SYS-SIGNATURES)."""
    assert getattr(uapi, name) == MMAN_LITERALS[name]


@pytest.mark.parametrize("name", MMAP_MODULE_NAMES)
def test_mman_constant_agrees_with_python_mmap_module(name):
    """PROT_*/MAP_*/MADV_* agree with Python's mmap module, built from the C headers."""
    assert getattr(uapi, name) == getattr(mmap, name)


def test_python_mmap_module_offers_the_core_names():
    """The second source is really consulted: mmap exports the basic PROT_/MAP_ names here."""
    assert {"PROT_READ", "PROT_WRITE", "PROT_EXEC", "MAP_SHARED", "MAP_PRIVATE",
            "MAP_ANONYMOUS", "MADV_DONTNEED"} <= set(MMAP_MODULE_NAMES)


@pytest.mark.parametrize("name", sorted(PKEY_LITERALS))
def test_pkey_rights_constants_have_the_generic_uapi_values(name):
    """PKEY_DISABLE_ACCESS 0x1, PKEY_DISABLE_WRITE 0x2, mask 0x3 on x86 (SYS-ALLOC-MASK, HW-X86-PKRU-LAYOUT)."""
    assert getattr(uapi, name) == PKEY_LITERALS[name]


def test_pkey_rights_bits_are_the_pkru_ad_and_wd_bits():
    """The rights encoding equals the PKRU encoding: ACCESS is AD (bit 0), WRITE is WD (bit 1) (HW-X86-PKRU-LAYOUT)."""
    assert (pkeyspec.PKEY_DISABLE_ACCESS, pkeyspec.PKEY_DISABLE_WRITE) == (0x1, 0x2)
    assert (pkeyspec.PKRU_AD_BIT, pkeyspec.PKRU_WD_BIT) == (0x1, 0x2)


@pytest.mark.parametrize("name", sorted(ERRNO_LITERALS))
def test_errno_value_agrees_with_python_errno(name):
    """Errno numbers equal Python's errno module (ERR-TABLE)."""
    assert getattr(uapi, name) == getattr(errno, name)


@pytest.mark.parametrize("name", sorted(ERRNO_LITERALS))
def test_errno_value_is_the_x86_64_linux_number(name):
    """Errno numbers equal the literal asm-generic numbers x86-64 Linux uses (ERR-TABLE)."""
    assert getattr(uapi, name) == ERRNO_LITERALS[name]


@pytest.mark.parametrize("name", sorted(SIGNAL_LITERALS))
def test_signal_number_agrees_with_python_signal_module(name):
    """The 31 standard signals agree with Python's signal module."""
    assert getattr(uapi, name) == int(getattr(signal, name))


@pytest.mark.parametrize("name", sorted(SIGNAL_LITERALS))
def test_signal_number_is_the_x86_linux_number(name):
    """Signal numbers equal arch/x86/include/uapi/asm/signal.h."""
    assert getattr(uapi, name) == SIGNAL_LITERALS[name]


@pytest.mark.parametrize("name", sorted(SI_CODE_LITERALS))
def test_si_code_has_the_uapi_value(name):
    """SEGV_MAPERR 1, ACCERR 2, BNDERR 3, PKUERR 4, SI_KERNEL 0x80, ILL_ILLOPN 2 (ERR-TABLE, ERR-SIGINFO)."""
    assert getattr(uapi, name) == SI_CODE_LITERALS[name]


@pytest.mark.parametrize("name", sorted(SYSCALL_LITERALS))
def test_x86_64_syscall_number(name):
    """pkey_mprotect 329, pkey_alloc 330, pkey_free 331; mmap 9, mprotect 10, munmap 11 (SYS-SIGNATURES)."""
    assert getattr(uapi, name) == SYSCALL_LITERALS[name]


@pytest.mark.parametrize("name", sorted(IO_URING_LITERALS))
def test_io_uring_constant_has_the_uapi_value(name):
    """IORING_SETUP_SQPOLL 1 << 1, IORING_OP_READ 22, IORING_OP_WRITE 23, IOSQE_ASYNC 1 << 4."""
    assert getattr(uapi, name) == IO_URING_LITERALS[name]


def test_page_size_is_4k():
    """x86-64 base pages are 4096 bytes; PAGE_MASK clears the low 12 bits."""
    assert (uapi.PAGE_SHIFT, uapi.PAGE_SIZE) == (12, 4096)
    assert uapi.PAGE_MASK & 0xFFFFFFFFFFFFFFFF == 0xFFFFFFFFFFFFF000


def test_star_import_exports_the_linux_names():
    """``from pkeyspec import *`` gives Linux's constant names with Linux's values.

    (The syscall numbers stay in :mod:`pkeyspec.uapi`.)
    """
    namespace = {}
    exec("from pkeyspec import *", namespace)
    for table in (MMAN_LITERALS, PKEY_LITERALS, ERRNO_LITERALS, SIGNAL_LITERALS,
                  SI_CODE_LITERALS, IO_URING_LITERALS):
        for name, value in table.items():
            assert namespace[name] == value, name


def test_signal_and_si_code_names_for_display():
    """The display tables name SIGSEGV codes 1..4 and SI_KERNEL as Linux does."""
    assert uapi.SIGNAL_NAMES[11] == "SIGSEGV"
    assert uapi.SIGNAL_NAMES[4] == "SIGILL"
    assert uapi.SI_CODE_NAMES[11][4] == "SEGV_PKUERR"
    assert uapi.SI_CODE_NAMES[11][1] == "SEGV_MAPERR"
    assert uapi.SI_CODE_NAMES[11][2] == "SEGV_ACCERR"
    assert uapi.SI_CODE_NAMES[11][0x80] == "SI_KERNEL"
    assert uapi.SI_CODE_NAMES[4][2] == "ILL_ILLOPN"

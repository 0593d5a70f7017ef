"""Linux UAPI constants used by the model, with Linux's names and values.

Every value here is what an x86-64 program sees through the kernel's UAPI
headers and glibc. ``tests/test_uapi.py`` checks them against a second
source (Python's own :mod:`errno`, :mod:`mmap` and :mod:`signal`, which are
built from the C headers of the machine running the tests).
"""

import errno as _errno

# include/uapi/asm-generic/mman-common.h
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
#: Since Linux 6.11: private anonymous memory the kernel may drop under pressure.
MAP_DROPPABLE = 0x08
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_FIXED_NOREPLACE = 0x100000

MADV_NORMAL = 0
MADV_DONTNEED = 4

PKEY_UNRESTRICTED = 0x0
PKEY_DISABLE_ACCESS = 0x1
PKEY_DISABLE_WRITE = 0x2
#: x86 and the generic UAPI: only ACCESS and WRITE (powerpc adds 0x4, arm64 0x4|0x8).
PKEY_ACCESS_MASK = PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE

# Errors (include/uapi/asm-generic/errno-base.h); the same numbers as Python's.
EPERM = _errno.EPERM
ESRCH = _errno.ESRCH
EINTR = _errno.EINTR
EBADF = _errno.EBADF
ENOMEM = _errno.ENOMEM
EACCES = _errno.EACCES
EFAULT = _errno.EFAULT
EEXIST = _errno.EEXIST
EINVAL = _errno.EINVAL
ENOSPC = _errno.ENOSPC
ENOSYS = _errno.ENOSYS
EOVERFLOW = _errno.EOVERFLOW
EAGAIN = _errno.EAGAIN
EIO = _errno.EIO
ENOENT = _errno.ENOENT
ERANGE = _errno.ERANGE
ESPIPE = _errno.ESPIPE
EPIPE = _errno.EPIPE
EOPNOTSUPP = _errno.EOPNOTSUPP

# Signals (arch/x86/include/uapi/asm/signal.h); 32 to 64 are the real-time signals.
SIGHUP = 1
SIGINT = 2
SIGQUIT = 3
SIGILL = 4
SIGTRAP = 5
SIGABRT = 6
SIGBUS = 7
SIGFPE = 8
SIGKILL = 9
SIGUSR1 = 10
SIGSEGV = 11
SIGUSR2 = 12
SIGPIPE = 13
SIGALRM = 14
SIGTERM = 15
SIGSTKFLT = 16
SIGCHLD = 17
SIGCONT = 18
SIGSTOP = 19
SIGTSTP = 20
SIGTTIN = 21
SIGTTOU = 22
SIGURG = 23
SIGXCPU = 24
SIGXFSZ = 25
SIGVTALRM = 26
SIGPROF = 27
SIGWINCH = 28
SIGIO = 29
SIGPWR = 30
SIGSYS = 31

# si_code values (include/uapi/asm-generic/siginfo.h)
SI_KERNEL = 0x80
ILL_ILLOPN = 2
SEGV_MAPERR = 1
SEGV_ACCERR = 2
SEGV_BNDERR = 3
SEGV_PKUERR = 4

# x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl)
NR_mmap = 9
NR_mprotect = 10
NR_munmap = 11
NR_pkey_mprotect = 329
NR_pkey_alloc = 330
NR_pkey_free = 331

# io_uring (include/uapi/linux/io_uring.h): the setup flag, opcodes and SQE flag the model knows
IORING_SETUP_SQPOLL = 1 << 1
IORING_OP_READ = 22
IORING_OP_WRITE = 23
IOSQE_ASYNC = 1 << 4

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

#: The names of signals 1 to 31; a real-time signal is shown by its number.
SIGNAL_NAMES = {value: name for name, value in list(globals().items())
                if name.startswith("SIG") and isinstance(value, int)}
SI_CODE_NAMES = {
    SIGSEGV: {SEGV_MAPERR: "SEGV_MAPERR", SEGV_ACCERR: "SEGV_ACCERR",
              SEGV_BNDERR: "SEGV_BNDERR", SEGV_PKUERR: "SEGV_PKUERR",
              SI_KERNEL: "SI_KERNEL"},
    SIGILL: {ILL_ILLOPN: "ILL_ILLOPN", SI_KERNEL: "SI_KERNEL"},
}

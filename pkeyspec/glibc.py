"""glibc's pkeys functions on x86-64 (glibc 2.27 and later).

``pkey_set`` and ``pkey_get`` never enter the kernel: they are RDPKRU and
WRPKRU in user space, with no check that the key is allocated
(GLIBC-X86-SET, GLIBC-X86-GET). ``pkey_set`` is a read-modify-write of the
calling thread's PKRU in two instructions, so something can happen between
them (RACE-GLIBC-SET-VS-SIGNAL); :func:`pkey_set_steps` gives the race
explorer those steps one at a time. The other three are thin wrappers
around the system calls, whose prototypes take ``unsigned int`` and ``int``.
Sources: glibc :glibc:`2.36 sysdeps/unix/sysv/linux/x86/pkey_set.c pkey_set`,
:glibc:`2.36 sysdeps/unix/sysv/linux/x86/pkey_get.c pkey_get`,
:glibc:`2.36 sysdeps/unix/sysv/linux/x86/arch-pkey.h pkey_read pkey_write`,
:glibc:`2.36 sysdeps/unix/sysv/linux/pkey_mprotect.c pkey_mprotect`.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING

from . import cabi
from .uapi import EINVAL

if TYPE_CHECKING:
    from .signals import Exited, Killed
    from .tasks import Thread


def _einval() -> OSError:
    return OSError(EINVAL, os.strerror(EINVAL))


def _caller(thread) -> None:
    """The first argument is the thread that calls the function (a TypeError otherwise)."""
    from .tasks import Thread
    if not isinstance(thread, Thread):
        raise TypeError(f"the calling thread is a Thread, not {type(thread).__name__}")


def pkey_get(thread: Thread, key: int) -> int | Killed | Exited:
    """``int pkey_get(int key)``: the two PKRU bits of ``key``; EINVAL outside 0..15.

    Without PKU the RDPKRU raises #UD and the process dies of SIGILL
    (GLIBC-UB-UNALLOCATED; observed, row z).
    """
    _caller(thread)
    key = cabi.int32(key)
    if key < 0 or key > 15:
        raise _einval()
    pkru = thread.rdpkru()
    if not isinstance(pkru, int):
        return pkru
    return (pkru >> (2 * key)) & 3


def pkey_set_steps(thread: Thread, key: int, rights: int) -> Generator[str, None, int | Killed | Exited]:
    """``pkey_set`` as the instructions it executes; yields the name of each one it has done.

    Returns (through ``StopIteration.value``) what ``pkey_set`` returns. The
    arguments' types are checked at once (TypeError); their values by the
    first step (EINVAL), as the function's first instructions do.
    """
    _caller(thread)
    return _pkey_set_steps(thread, cabi.int32(key), cabi.uint32(rights))


def _pkey_set_steps(thread: Thread, key: int, rights: int) -> Generator[str, None, int | Killed | Exited]:
    if key < 0 or key > 15 or rights > 3:
        raise _einval()
    mask = 3 << (2 * key)
    pkru = thread.rdpkru()
    if not isinstance(pkru, int):
        return pkru
    yield "rdpkru"
    pkru = (pkru & ~mask) | (rights << (2 * key))
    end = thread.wrpkru(pkru)
    if end is not None:
        return end
    yield "wrpkru"
    return 0


def pkey_set(thread: Thread, key: int, rights: int) -> int | Killed | Exited:
    """``int pkey_set(int key, unsigned int rights)``: 0, or EINVAL for key > 15 or rights > 3.

    It changes the calling thread's PKRU only (THR-NO-REMOTE-SET) and works
    on keys nobody allocated.
    """
    steps = pkey_set_steps(thread, key, rights)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def pkey_alloc(thread: Thread, flags: int, access_rights: int) -> int:
    """``int pkey_alloc(unsigned int flags, unsigned int access_rights)``.

    The prototype truncates to 32 bits before the system call, so
    ``pkey_alloc(2**32, 0)`` here is ``pkey_alloc(0, 0)`` to the kernel.
    """
    _caller(thread)
    return thread.pkey_alloc(cabi.uint32(flags), cabi.uint32(access_rights))


def pkey_free(thread: Thread, key: int) -> int:
    """``int pkey_free(int key)``."""
    _caller(thread)
    return thread.pkey_free(cabi.int32(key))


def pkey_mprotect(thread: Thread, addr: int, len: int, prot: int, pkey: int) -> int:
    """``int pkey_mprotect(void *addr, size_t len, int prot, int pkey)``.

    A key of -1 calls ``mprotect`` and never the pkey_mprotect system call
    (GLIBC-MPROTECT-NEG1).
    """
    _caller(thread)
    addr, len, prot, pkey = cabi.ulong(addr), cabi.ulong(len), cabi.int32(prot), cabi.int32(pkey)
    if pkey == -1:
        return thread.mprotect(addr, len, prot)
    return thread.pkey_mprotect(addr, len, prot, pkey)

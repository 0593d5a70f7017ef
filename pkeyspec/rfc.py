"""The ``pkey_get``/``pkey_set`` system calls of the 2016 RFC: proposed, never merged.

Dave Hansen posted them in March-July 2016 and dropped them in the v6
series (``pkeys-v041``): "remove sys_pkey_get/set() to simplify the ABI"
(RFC-DROPPED). The merged ABI has three system calls, and user space sets
rights with WRPKRU (:mod:`pkeyspec.glibc`). The model keeps them because
their review is where this project comes from: Mel Gorman asked that every
race be spelled out, and Dave's answer, that a successful ``pkey_get`` is
"like a stat()", is true of glibc's functions too (RFC-STAT-ANALOGY).

Semantics of the 7 July 2016 version (RFC-SIGNATURES, RFC-ERRNO,
RFC-LOCKLESS): flags != 0 gives EINVAL; then the map is read without the
mmap lock, as one ``READ_ONCE`` snapshot tested with ``map & (1U << pkey)``
(:func:`rfc_pkey_allocated`): a clear bit gives EBADF, not EINVAL. Only then
is the caller's PKRU read or written. Those are two steps (:func:`read_map`,
then :func:`get_rights` or :func:`set_rights`), and the map can change
between them. ``access_rights`` is not checked (RFC-NO-RIGHTS-MASK).

The test is not today's ``mm_pkey_is_allocated``: it has no range check
and no exception for the execute-only key. Keys 16 to 31 find a clear bit
of the 16-bit map (EBADF); for other keys the shift is undefined in C, and
the model takes what x86-64 code does with it (the shift count is masked to
5 bits), so 32 tests bit 0. A key past the map test that is not a hardware
key (0 to 15) is refused by the rights helpers with EINVAL, as
``arch_set_user_pkey_access`` refuses one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import cabi
from .hardware import pkru_allows_read, pkru_allows_write
from .hardware import NR_PKEYS
from .keys import arch_set_user_pkey_access
from .uapi import EBADF, EINVAL, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE

if TYPE_CHECKING:
    from .tasks import Thread


def _fail(err: int) -> OSError:
    return OSError(err, os.strerror(err))


def _caller(thread) -> None:
    """The first argument is the thread that makes the call (a TypeError otherwise)."""
    from .tasks import Thread
    if not isinstance(thread, Thread):
        raise TypeError(f"the calling thread is a Thread, not {type(thread).__name__}")


def rfc_pkey_allocated(mm_map: int, pkey: int) -> bool:
    """The RFC's test, ``READ_ONCE(map) & (1U << pkey)``, with x86-64's 5-bit shift count."""
    return bool(cabi.index(mm_map) & (1 << (cabi.index(pkey) & 31)))


def read_map(thread: Thread, pkey: int, flags: int) -> bool:
    """Step 1 of both calls: check flags, then ``READ_ONCE`` the allocation map."""
    _caller(thread)
    thread._enter()
    pkey, flags = cabi.int32(pkey), cabi.ulong(flags)
    if flags:
        raise _fail(EINVAL)
    return rfc_pkey_allocated(thread.process.mm.pkey_allocation_map, pkey)


def get_rights(thread: Thread, pkey: int, allocated: bool) -> int:
    """Step 2 of ``pkey_get``: EBADF if step 1 saw the key free, else the caller's rights."""
    _caller(thread)
    thread._enter()
    pkey, pkru = cabi.int32(pkey), thread.pkru
    if not allocated:
        raise _fail(EBADF)
    if not 0 <= pkey < NR_PKEYS:
        raise _fail(EINVAL)
    # arch_get_user_pkey_access: AD disables writes too, so AD reads back as AD|WD.
    return ((0 if pkru_allows_read(pkru, pkey) else PKEY_DISABLE_ACCESS)
            | (0 if pkru_allows_write(pkru, pkey) else PKEY_DISABLE_WRITE))


def set_rights(thread: Thread, pkey: int, access_rights: int, allocated: bool) -> int:
    """Step 2 of ``pkey_set``: EBADF if step 1 saw the key free, else write the caller's PKRU."""
    _caller(thread)
    thread._enter()
    pkey, access_rights = cabi.int32(pkey), cabi.ulong(access_rights)
    if not allocated:
        raise _fail(EBADF)
    if not 0 <= pkey < NR_PKEYS:
        raise _fail(EINVAL)
    ret = arch_set_user_pkey_access(thread, pkey, access_rights)
    if ret < 0:
        raise _fail(-ret)
    return 0


def pkey_get(thread: Thread, pkey: int, flags: int) -> int:
    """RFC ``pkey_get(int pkey, unsigned long flags)``: the caller's rights for an allocated key."""
    return get_rights(thread, pkey, read_map(thread, pkey, flags))


def pkey_set(thread: Thread, pkey: int, access_rights: int, flags: int) -> int:
    """RFC ``pkey_set(int pkey, unsigned long access_rights, unsigned long flags)``."""
    _caller(thread)
    access_rights = cabi.ulong(access_rights)       # every argument is converted on entry
    return set_rights(thread, pkey, access_rights, read_map(thread, pkey, flags))

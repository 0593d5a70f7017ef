"""The ``pkey_get``/``pkey_set`` system calls of the 2016 RFC: proposed, never merged.

Dave Hansen posted them in March-July 2016 and dropped them in the v6
series (``pkeys-v041``): "remove sys_pkey_get/set() to simplify the ABI"
(RFC-DROPPED). The merged ABI has three system calls, and user space sets
rights with WRPKRU (:mod:`pkeyspec.glibc`). The model keeps them because
their review is where this project comes from: Mel Gorman asked that every
race be spelled out, and Dave's answer, that a successful ``pkey_get`` is
"like a stat()", is true of glibc's functions too (RFC-STAT-ANALOGY).

Semantics (RFC-SIGNATURES, RFC-ERRNO, RFC-LOCKLESS): flags != 0 gives
EINVAL; a key that is not allocated gives EBADF, not EINVAL; the map is
read without the mmap lock, as one ``READ_ONCE`` snapshot, and only then is
the caller's PKRU read or written. Those are two steps
(:func:`read_map`, then :func:`get_rights` or :func:`set_rights`), and the
map can change between them. ``access_rights`` is not checked
(RFC-NO-RIGHTS-MASK).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import cabi
from .hardware import pkru_allows_read, pkru_allows_write
from .keys import arch_set_user_pkey_access, mm_pkey_is_allocated
from .uapi import EBADF, EINVAL, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE

if TYPE_CHECKING:
    from .tasks import Thread


def _fail(err: int) -> OSError:
    return OSError(err, os.strerror(err))


def read_map(thread: Thread, pkey: int, flags: int) -> bool:
    """Step 1 of both calls: check flags, then ``READ_ONCE`` the allocation map."""
    thread._enter()
    if cabi.ulong(flags):
        raise _fail(EINVAL)
    return mm_pkey_is_allocated(thread.process.mm, cabi.int32(pkey))


def get_rights(thread: Thread, pkey: int, allocated: bool) -> int:
    """Step 2 of ``pkey_get``: EBADF if step 1 saw the key free, else the caller's rights."""
    thread._enter()
    if not allocated:
        raise _fail(EBADF)
    # arch_get_user_pkey_access: AD disables writes too, so AD reads back as AD|WD.
    pkey, pkru = cabi.int32(pkey), thread.pkru
    return ((0 if pkru_allows_read(pkru, pkey) else PKEY_DISABLE_ACCESS)
            | (0 if pkru_allows_write(pkru, pkey) else PKEY_DISABLE_WRITE))


def set_rights(thread: Thread, pkey: int, access_rights: int, allocated: bool) -> int:
    """Step 2 of ``pkey_set``: EBADF if step 1 saw the key free, else write the caller's PKRU."""
    thread._enter()
    if not allocated:
        raise _fail(EBADF)
    ret = arch_set_user_pkey_access(thread, cabi.int32(pkey), cabi.ulong(access_rights))
    if ret < 0:
        raise _fail(-ret)
    return 0


def pkey_get(thread: Thread, pkey: int, flags: int) -> int:
    """RFC ``pkey_get(int pkey, unsigned long flags)``: the caller's rights for an allocated key."""
    return get_rights(thread, pkey, read_map(thread, pkey, flags))


def pkey_set(thread: Thread, pkey: int, access_rights: int, flags: int) -> int:
    """RFC ``pkey_set(int pkey, unsigned long access_rights, unsigned long flags)``."""
    return set_rights(thread, pkey, access_rights, read_map(thread, pkey, flags))

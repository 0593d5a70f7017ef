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
the caller's PKRU read or written. Those are two steps, and the map can
change between them. ``access_rights`` is not checked (RFC-NO-RIGHTS-MASK).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING

from . import cabi
from .hardware import pkru_rights
from .keys import arch_set_user_pkey_access, mm_pkey_is_allocated
from .uapi import EBADF, EINVAL

if TYPE_CHECKING:
    from .tasks import Thread


def _fail(err: int) -> OSError:
    return OSError(err, os.strerror(err))


def pkey_get_steps(thread: Thread, pkey: int, flags: int) -> Generator[str, None, int]:
    """RFC ``pkey_get(int pkey, unsigned long flags)``, one step per yield."""
    thread._enter()
    pkey, flags = cabi.int32(pkey), cabi.ulong(flags)
    if flags:
        raise _fail(EINVAL)
    allocated = mm_pkey_is_allocated(thread.process.mm, pkey)   # READ_ONCE(map)
    yield "read map"
    if not allocated:
        raise _fail(EBADF)
    return pkru_rights(thread.pkru, pkey)


def pkey_set_steps(thread: Thread, pkey: int, access_rights: int,
                   flags: int) -> Generator[str, None, int]:
    """RFC ``pkey_set(int pkey, unsigned long access_rights, unsigned long flags)``."""
    thread._enter()
    pkey, access_rights, flags = cabi.int32(pkey), cabi.ulong(access_rights), cabi.ulong(flags)
    if flags:
        raise _fail(EINVAL)
    allocated = mm_pkey_is_allocated(thread.process.mm, pkey)   # READ_ONCE(map)
    yield "read map"
    if not allocated:
        raise _fail(EBADF)
    ret = arch_set_user_pkey_access(thread, pkey, access_rights)
    if ret < 0:
        raise _fail(-ret)
    return 0


def _run(steps: Generator[str, None, int]) -> int:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def pkey_get(thread: Thread, pkey: int, flags: int) -> int:
    """The calling thread's rights for an allocated ``pkey``; EBADF if it is not allocated."""
    return _run(pkey_get_steps(thread, pkey, flags))


def pkey_set(thread: Thread, pkey: int, access_rights: int, flags: int) -> int:
    """Set the calling thread's rights for an allocated ``pkey``; EBADF if it is not allocated."""
    return _run(pkey_set_steps(thread, pkey, access_rights, flags))

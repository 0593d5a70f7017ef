"""Kernel key management: the allocation map, ``pkey_alloc`` and ``pkey_free``.

Sources: :kernel:`7.2 mm/mprotect.c SYSCALL_DEFINE2(pkey_alloc)
SYSCALL_DEFINE1(pkey_free)`, :kernel:`7.2 arch/x86/include/asm/pkeys.h
mm_pkey_alloc mm_pkey_is_allocated mm_pkey_free`,
:kernel:`7.2 arch/x86/kernel/fpu/xstate.c arch_set_user_pkey_access` and
:kernel:`7.2 arch/x86/include/asm/mmu_context.h init_new_context`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import cabi
from .hardware import NR_PKEYS, PKRU_AD_BIT, PKRU_WD_BIT, pkru_with_rights
from .uapi import EINVAL, ENOSPC, PKEY_ACCESS_MASK, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE

if TYPE_CHECKING:
    from .mm import Mm
    from .tasks import Thread

#: ``ARCH_DEFAULT_PKEY``: the key of every mapping nobody re-keyed.
ARCH_DEFAULT_PKEY = 0


def arch_max_pkey(mm: Mm) -> int:
    """16 keys when the CPU has PKU and the kernel enabled it (OSPKE), else 1."""
    return NR_PKEYS if mm.ospke else 1


def mm_pkey_is_allocated(mm: Mm, pkey: int) -> bool:
    """The test every user interface applies to a key it is given.

    The execute-only key is set in the map but reported as not allocated, so
    user interfaces cannot free it or attach it (XO-X86-HIDDEN-KEY).
    """
    if pkey < 0 or pkey >= arch_max_pkey(mm):
        return False
    if pkey == mm.execute_only_pkey:
        return False
    return bool(mm.pkey_allocation_map & (1 << pkey))


def mm_pkey_alloc(mm: Mm) -> int:
    """The lowest free key (``ffz``), marked allocated; -1 when none is free.

    Without OSPKE it returns -1 at once: Linux 7.2.13 on a CPU without PKU
    answers the very first ``pkey_alloc(0, 0)`` of a freshly exec'd process
    with ENOSPC (observed by the conformance harness). The x86 source we
    read has no such check and would take key 0 from the zeroed map, fail in
    ``arch_set_user_pkey_access`` and return EINVAL once; the kernel wins.
    """
    if not mm.ospke:
        return -1
    all_pkeys_mask = (1 << arch_max_pkey(mm)) - 1
    if mm.pkey_allocation_map & all_pkeys_mask == all_pkeys_mask:
        return -1
    pkey = 0
    while mm.pkey_allocation_map & (1 << pkey):
        pkey += 1
    mm.pkey_allocation_map |= 1 << pkey
    return pkey


def mm_set_pkey_free(mm: Mm, pkey: int) -> None:
    mm.pkey_allocation_map &= ~(1 << pkey)


def mm_pkey_free(mm: Mm, pkey: int) -> int:
    """0, or -EINVAL for a key the map does not show as allocated."""
    if not mm_pkey_is_allocated(mm, pkey):
        return -EINVAL
    mm_set_pkey_free(mm, pkey)
    return 0


def arch_set_user_pkey_access(thread: Thread, pkey: int, init_val: int) -> int:
    """Write ``init_val`` into the *calling thread's* PKRU only (SYS-ALLOC-RIGHTS-CALLER-ONLY).

    PKEY_DISABLE_ACCESS becomes AD and PKEY_DISABLE_WRITE becomes WD
    (SYS-ALLOC-X86-RIGHTS-MAP); other threads are never touched.
    """
    if not thread.process.mm.ospke:
        return -EINVAL
    if pkey >= arch_max_pkey(thread.process.mm):
        return -EINVAL
    bits = 0
    if init_val & PKEY_DISABLE_ACCESS:
        bits |= PKRU_AD_BIT
    if init_val & PKEY_DISABLE_WRITE:
        bits |= PKRU_WD_BIT
    thread.pkru = pkru_with_rights(thread.pkru, pkey, bits)
    return 0


def sys_pkey_alloc(thread: Thread, flags: int, init_val: int) -> int:
    """``pkey_alloc(unsigned long flags, unsigned long init_val)``: the checks in Linux's order.

    flags != 0 -> EINVAL; unknown rights bits -> EINVAL; (mmap lock) no free
    key -> ENOSPC; then the rights land in the caller's PKRU
    (SYS-ALLOC-CHECK-ORDER).
    """
    flags = cabi.ulong(flags)
    init_val = cabi.ulong(init_val)
    if flags:
        return -EINVAL
    if init_val & ~PKEY_ACCESS_MASK:
        return -EINVAL
    mm = thread.process.mm
    pkey = mm_pkey_alloc(mm)
    if pkey == -1:
        return -ENOSPC
    ret = arch_set_user_pkey_access(thread, pkey, init_val)
    if ret:
        mm_pkey_free(mm, pkey)
        return ret
    return pkey


def sys_pkey_free(thread: Thread, pkey: int) -> int:
    """``pkey_free(int pkey)``: clears the bit in the map and nothing else.

    No VMA is looked at and no PKRU changes (SYS-FREE-NO-INUSE-CHECK,
    SEC-FREE-DOESNT-REVOKE); key 0 can be freed like any other (SYS-FREE-KEY0).
    """
    return mm_pkey_free(thread.process.mm, cabi.int32(pkey))

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
    from .system import System
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


#: ``x86/pkeys: Fix pkey_alloc() return value when pkeys are not supported`` (dee87e09b0dd):
#: mainline from 7.3-rc1, and the stable releases that carry it. Series not listed here
#: are modelled without it (nothing we can reach says they have it).
PKEY_ALLOC_ENABLED_CHECK = {(6, 1): 188, (6, 12): 110, (7, 2): 13}
PKEY_ALLOC_ENABLED_CHECK_MAINLINE = (7, 3)


def mm_pkey_alloc_checks_enabled(system: System) -> bool:
    """Does this kernel's ``mm_pkey_alloc`` start with ``if (!arch_pkeys_enabled()) return -1;``?

    Mainline from 7.3 (the fix was merged for 7.3-rc1, after 7.2 was released), and the
    stable releases 6.1.188, 6.12.110 and 7.2.13 on (the Debian changelogs name the first
    two; 7.2.13 is the first 7.2 release whose source we read with the check, and the
    one observed). A bare series (``"6.12"``) counts as its newest release.
    """
    if system.kernel >= PKEY_ALLOC_ENABLED_CHECK_MAINLINE:
        return True
    first = PKEY_ALLOC_ENABLED_CHECK.get(system.kernel)
    return first is not None and system.kernel_at_least(*system.kernel, first)


def mm_pkey_alloc(mm: Mm, checks_enabled: bool = True) -> int:
    """The lowest free key (``ffz``), marked allocated; -1 when none is free.

    ``checks_enabled``: the kernel has the fix that returns -1 at once when
    pkeys are disabled (:func:`mm_pkey_alloc_checks_enabled`). Without it, on
    a CPU without PKU, the zeroed map of a fresh process is not "full" for a
    one-key CPU: key 0 is taken and marked (SYS-X86-DISABLED).
    """
    if checks_enabled and not mm.ospke:
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
    (SYS-ALLOC-CHECK-ORDER). If that fails (no OSPKE, on a kernel without
    the fix), the rollback ``mm_pkey_free`` refuses key 0 while it equals
    the zeroed ``execute_only_pkey``, so the bit stays set.
    """
    flags = cabi.ulong(flags)
    init_val = cabi.ulong(init_val)
    if flags:
        return -EINVAL
    if init_val & ~PKEY_ACCESS_MASK:
        return -EINVAL
    mm = thread.process.mm
    pkey = mm_pkey_alloc(mm, mm_pkey_alloc_checks_enabled(thread.system))
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

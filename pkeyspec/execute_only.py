"""Execute-only memory on x86: the hidden key a plain ``mprotect(PROT_EXEC)`` takes.

Source: :kernel:`7.2 arch/x86/mm/pkeys.c __execute_only_pkey
vma_is_pkey_exec_only __arch_override_mprotect_pkey` and
:kernel:`7.2 arch/x86/include/asm/pkeys.h execute_only_pkey
arch_override_mprotect_pkey`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hardware import pkru_allows_read
from .keys import ARCH_DEFAULT_PKEY, arch_set_user_pkey_access, mm_pkey_alloc, mm_set_pkey_free
from .uapi import PKEY_DISABLE_ACCESS, PROT_EXEC

if TYPE_CHECKING:
    from .mm import Vma
    from .tasks import Thread


def execute_only_pkey(thread: Thread) -> int:
    """The mm's execute-only key, allocated on first use; -1 when none can be had.

    The first call takes the lowest free key (XO-X86-IMPLICIT). Each call sets
    AD for it in the calling thread's PKRU, unless that PKRU already denies
    reads of it (XO-X86-PKRU-SHORTCUT). Other threads are never updated
    (RACE-XO-OTHER-THREAD).
    """
    mm = thread.process.mm
    if not mm.ospke:
        return ARCH_DEFAULT_PKEY
    need_to_set_mm_pkey = False
    pkey = mm.execute_only_pkey
    if pkey == -1:
        pkey = mm_pkey_alloc(mm)
        if pkey < 0:
            return -1
        need_to_set_mm_pkey = True
    if not need_to_set_mm_pkey and not pkru_allows_read(thread.pkru, pkey):
        return pkey
    if arch_set_user_pkey_access(thread, pkey, PKEY_DISABLE_ACCESS):
        mm_set_pkey_free(mm, pkey)
        return -1
    if need_to_set_mm_pkey:
        mm.execute_only_pkey = pkey
    return pkey


def vma_is_pkey_exec_only(vma: Vma, execute_only: int) -> bool:
    """Is the VMA exactly PROT_EXEC and tagged with the execute-only key?"""
    from .mm import VM_ACCESS_FLAGS, VM_EXEC
    return vma.flags & VM_ACCESS_FLAGS == VM_EXEC and vma.pkey == execute_only


def arch_override_mprotect_pkey(thread: Thread, vma: Vma, prot: int, pkey: int) -> int:
    """The key ``mprotect``/``pkey_mprotect`` gives ``vma``.

    An explicit key always wins (SYS-MPROT-EXPLICIT-WINS). With ``pkey == -1``:
    exactly PROT_EXEC takes the execute-only key if one can be had, else the
    VMA silently keeps its key and stays readable (XO-X86-SILENT-FALLBACK);
    leaving execute-only returns the VMA to key 0 (XO-X86-REVERT); anything
    else keeps the VMA's key (SYS-MPROT-NEG1).
    """
    mm = thread.process.mm
    if not mm.ospke:
        return ARCH_DEFAULT_PKEY
    if pkey != -1:
        return pkey
    if prot == PROT_EXEC:
        xo = execute_only_pkey(thread)
        if xo > 0:
            return xo
    elif vma_is_pkey_exec_only(vma, mm.execute_only_pkey):
        return ARCH_DEFAULT_PKEY
    return vma.pkey

"""Memory accesses by a thread, and the page faults Linux turns them into.

One call is one instruction: a load, a store or an instruction fetch, or
RDPKRU/WRPKRU. The CPU checks the page-table entry and the thread's PKRU
(:func:`pkeyspec.hardware.check_user_access`); on a page fault the kernel
(``arch/x86/mm/fault.c``: ``do_user_addr_fault``, ``access_error``,
``bad_area_access_error``) either fills the page in and the instruction
runs again, or sends SIGSEGV with ``SEGV_MAPERR``, ``SEGV_ACCERR`` or
``SEGV_PKUERR``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from . import cabi
from .hardware import (
    U32, X86_PF_INSTR, X86_PF_PK, X86_PF_PROT, X86_PF_WRITE, check_user_access, pkru_allows,
)
from .mm import TASK_SIZE, VM_ACCESS_FLAGS, VM_WRITE, Vma, pte_for
from .signals import Killed, Siginfo, force_sig_fault
from .uapi import ILL_ILLOPN, PAGE_SHIFT, SEGV_ACCERR, SEGV_MAPERR, SEGV_PKUERR, SI_KERNEL, SIGILL, SIGSEGV

if TYPE_CHECKING:
    from .tasks import Thread

#: Lowest kernel-half canonical address; between TASK_SIZE and here lies the non-canonical hole.
KERNEL_HALF = 0xFFFF800000000000
ACCESS_SIZES = (1, 2, 4, 8)


def arch_vma_access_permitted(thread: Thread, vma: Vma, write: bool, execute: bool) -> bool:
    """The software twin of the hardware key check (``mmu_context.h``).

    Instruction fetch is always permitted on x86 (KERN-EXEC-CHECK).
    """
    if execute or not thread.process.mm.ospke:
        return True
    return pkru_allows(thread.pkru, vma.pkey, write)


def access_error(thread: Thread, err: int, vma: Vma) -> bool:
    """``access_error``: is this fault the program's fault rather than a page to fill in?"""
    if err & X86_PF_PK:
        return True
    if not arch_vma_access_permitted(thread, vma, bool(err & X86_PF_WRITE), bool(err & X86_PF_INSTR)):
        return True
    if err & X86_PF_WRITE:
        return not vma.flags & VM_WRITE
    if err & X86_PF_PROT:
        return True
    return not vma.flags & VM_ACCESS_FLAGS


def do_user_addr_fault(thread: Thread, addr: int, err: int) -> Siginfo | None:
    """Handle a user page fault: None if the page was filled in, else the signal to send."""
    mm = thread.process.mm
    vma = mm.find_vma(addr)
    if vma is None:
        return Siginfo(SIGSEGV, SEGV_MAPERR, addr)
    if access_error(thread, err, vma):
        if mm.ospke and (err & X86_PF_PK or not arch_vma_access_permitted(
                thread, vma, bool(err & X86_PF_WRITE), bool(err & X86_PF_INSTR))):
            return Siginfo(SIGSEGV, SEGV_PKUERR, addr, vma.pkey)
        return Siginfo(SIGSEGV, SEGV_ACCERR, addr)
    if vma.anon_vma is None and vma.shmem is None:
        i = mm.vmas.index(vma)
        vma = mm.vmas[i] = replace(vma, anon_vma=mm.next_anon_vma)
        mm.next_anon_vma += 1
    mm.ptes[addr >> PAGE_SHIFT] = pte_for(vma)
    return None


def user_access(thread: Thread, addr: int, *, write: bool = False,
                fetch: bool = False) -> Killed | None:
    """One access to the page of ``addr``, repeated after each page the kernel fills in."""
    mm = thread.process.mm
    if TASK_SIZE <= addr < KERNEL_HALF or addr >= 1 << 64:
        # A non-canonical address: #GP, which Linux reports as SI_KERNEL.
        return force_sig_fault(thread, Siginfo(SIGSEGV, SI_KERNEL, 0))
    for _ in range(3):
        pte = None if addr >= TASK_SIZE else mm.ptes.get(addr >> PAGE_SHIFT)
        fault = check_user_access(pte, thread.pkru, write=write, fetch=fetch, pke=mm.ospke)
        if fault is None:
            return None
        info = do_user_addr_fault(thread, addr, fault.error_code)
        if info is not None:
            return force_sig_fault(thread, info, fault.error_code)
    raise AssertionError("model bug: a filled-in page faulted again for the same reason")


def _byte_at(thread: Thread, addr: int) -> int:
    mm = thread.process.mm
    vma = mm.find_vma(addr)
    if vma is not None and vma.shmem is not None:
        return thread.system.shmem[vma.shmem].get(addr - vma.start + vma.offset, 0)
    return mm.memory.get(addr, 0)


def _set_byte(thread: Thread, addr: int, value: int) -> None:
    mm = thread.process.mm
    vma = mm.find_vma(addr)
    if vma is not None and vma.shmem is not None:
        thread.system.shmem[vma.shmem][addr - vma.start + vma.offset] = value
    else:
        mm.memory[addr] = value


def _check_size(size: int) -> int:
    if size not in ACCESS_SIZES:
        raise ValueError(f"an x86 load or store moves 1, 2, 4 or 8 bytes, not {size}")
    return size


def _pages(addr: int, size: int) -> list[int]:
    """The first byte the access touches in each page, in order."""
    first = [addr]
    for a in range(addr + 1, addr + size):
        if a >> PAGE_SHIFT != first[-1] >> PAGE_SHIFT:
            first.append(a)
    return first


def load(thread: Thread, addr: int, size: int = 1) -> int | Killed:
    """A ``size``-byte little-endian load; the value, or how the process ended."""
    addr = cabi.ulong(addr)
    for a in _pages(addr, _check_size(size)):
        end = user_access(thread, a)
        if end is not None:
            return end
    return int.from_bytes(bytes(_byte_at(thread, addr + i) for i in range(size)), "little")


def store(thread: Thread, addr: int, value: int, size: int = 1) -> None | Killed:
    """A ``size``-byte little-endian store; None, or how the process ended."""
    addr = cabi.ulong(addr)
    data = (cabi.ulong(value) & ((1 << (8 * _check_size(size))) - 1)).to_bytes(size, "little")
    for a in _pages(addr, size):
        end = user_access(thread, a, write=True)
        if end is not None:
            return end
    for i, b in enumerate(data):
        _set_byte(thread, addr + i, b)
    return None


def execute(thread: Thread, addr: int) -> int | Killed:
    """Fetch the instruction byte at ``addr``; keys never stop a fetch (HW-X86-DATA-ONLY)."""
    addr = cabi.ulong(addr)
    end = user_access(thread, addr, fetch=True)
    return end if end is not None else _byte_at(thread, addr)


def rdpkru(thread: Thread, ecx: int = 0) -> int | Killed:
    """RDPKRU: EAX = PKRU. ECX must be 0 (#GP); without CR4.PKE it is #UD (SIGILL)."""
    if not thread.process.mm.ospke:
        return force_sig_fault(thread, Siginfo(SIGILL, ILL_ILLOPN, 0))
    if cabi.ulong(ecx) & U32:
        return force_sig_fault(thread, Siginfo(SIGSEGV, SI_KERNEL, 0))
    return thread.pkru


def wrpkru(thread: Thread, eax: int, ecx: int = 0, edx: int = 0) -> None | Killed:
    """WRPKRU: PKRU = EAX. ECX and EDX must be 0 (#GP). Unprivileged (SEC-UNPRIV-WRITERS)."""
    if not thread.process.mm.ospke:
        return force_sig_fault(thread, Siginfo(SIGILL, ILL_ILLOPN, 0))
    if cabi.ulong(ecx) & U32 or cabi.ulong(edx) & U32:
        return force_sig_fault(thread, Siginfo(SIGSEGV, SI_KERNEL, 0))
    thread.pkru = cabi.ulong(eax) & U32
    return None

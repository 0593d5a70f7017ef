"""Memory accesses by a thread, and the page faults Linux turns them into.

One call is one instruction: a load, a store or an instruction fetch, or
RDPKRU/WRPKRU. The CPU checks the page-table entry and the thread's PKRU
(:func:`pkeyspec.hardware.check_user_access`); on a page fault the kernel
(:kernel:`7.2 arch/x86/mm/fault.c do_user_addr_fault access_error
bad_area_access_error`) either fills the page in and the instruction
runs again, or sends SIGSEGV with ``SEGV_MAPERR``, ``SEGV_ACCERR`` or
``SEGV_PKUERR``.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import compress, repeat
from typing import TYPE_CHECKING

from . import cabi
from .hardware import (
    U32, X86_PF_INSTR, X86_PF_PK, X86_PF_PROT, X86_PF_WRITE, check_user_access, pkru_allows,
)
from .mm import TASK_SIZE, VM_ACCESS_FLAGS, VM_WRITE, Vma, pte_for
from .signals import MAX_REEXECUTIONS, Killed, Livelock, Siginfo, force_sig_fault
from .uapi import ILL_ILLOPN, PAGE_SHIFT, SEGV_ACCERR, SEGV_MAPERR, SEGV_PKUERR, SI_KERNEL, SIGILL, SIGSEGV

if TYPE_CHECKING:
    from .mm import Mm
    from .system import System
    from .tasks import Thread

#: Lowest kernel-half canonical address; between TASK_SIZE and here lies the non-canonical hole.
KERNEL_HALF = 0xFFFF800000000000
#: The end of the lower canonical half (47-bit user addresses).
USER_HALF_END = 1 << 47
ACCESS_SIZES = (1, 2, 4, 8)


def arch_vma_access_permitted(mm: Mm, pkru: int, vma: Vma, write: bool, execute: bool,
                              foreign: bool = False) -> bool:
    """The software twin of the hardware key check (``mmu_context.h``).

    Instruction fetch is always permitted on x86 (KERN-EXEC-CHECK), and so is
    a foreign access, made on behalf of another process (KERN-FOREIGN-BYPASS).
    ``pkru`` is the PKRU in the CPU at the time: the faulting thread's.
    """
    if execute or foreign or not mm.ospke:
        return True
    return pkru_allows(pkru, vma.pkey, write)


def access_error(mm: Mm, pkru: int, err: int, vma: Vma) -> bool:
    """``access_error``: is this fault the program's fault rather than a page to fill in?"""
    if err & X86_PF_PK:
        return True
    if not arch_vma_access_permitted(mm, pkru, vma, bool(err & X86_PF_WRITE), bool(err & X86_PF_INSTR)):
        return True
    if err & X86_PF_WRITE:
        return not vma.flags & VM_WRITE
    if err & X86_PF_PROT:
        return True
    return not vma.flags & VM_ACCESS_FLAGS


def fault_in(mm: Mm, vma: Vma, addr: int, write: bool = False) -> None:
    """``handle_mm_fault``: install the PTE for ``addr`` (and the VMA's anon_vma on first use).

    A read of a never-written private anonymous page maps the shared zero page.
    """
    if vma.anon_vma is None and vma.shmem is None:
        i = mm.vmas.index(vma)
        vma = mm.vmas[i] = replace(vma, anon_vma=mm.next_anon_vma)
        mm.next_anon_vma += 1
    vpn = addr >> PAGE_SHIFT
    old = mm.ptes.get(vpn)
    zero = vma.shmem is None and not write and (old is None or old.zero_page)
    mm.ptes[vpn] = pte_for(vma, zero_page=zero)


def do_user_addr_fault(mm: Mm, pkru: int, addr: int, err: int) -> Siginfo | None:
    """Handle a page fault on a user address: None if the page was filled in, else the signal."""
    vma = mm.find_vma(addr)
    if vma is None:
        return Siginfo(SIGSEGV, SEGV_MAPERR, addr)
    if access_error(mm, pkru, err, vma):
        # bad_area_access_error -> bad_area_access_from_pkeys
        if mm.ospke and (err & X86_PF_PK or not arch_vma_access_permitted(
                mm, pkru, vma, bool(err & X86_PF_WRITE), bool(err & X86_PF_INSTR))):
            return Siginfo(SIGSEGV, SEGV_PKUERR, addr, vma.pkey)
        return Siginfo(SIGSEGV, SEGV_ACCERR, addr)
    fault_in(mm, vma, addr, bool(err & X86_PF_WRITE))
    return None


def page_access(mm: Mm, pkru: int, addr: int, *, write: bool = False,
                fetch: bool = False) -> tuple[Siginfo, int] | None:
    """One access to the page of ``addr`` by the CPU with ``pkru``, the kernel filling pages in.

    None when the access completes; else the signal Linux would send and
    the page-fault error code. Kernel accesses to user memory
    (:mod:`pkeyspec.uaccess`) go through the same checks: PKRU applies to
    supervisor accesses to user pages too (HW-X86-USER-PAGES).
    """
    for _ in range(3):
        pte = None if addr >= TASK_SIZE else mm.ptes.get(addr >> PAGE_SHIFT)
        fault = check_user_access(pte, pkru, write=write, fetch=fetch, pke=mm.ospke)
        if fault is None:
            return None
        info = do_user_addr_fault(mm, pkru, addr, fault.error_code)
        if info is not None:
            err = fault.error_code
            if addr >= TASK_SIZE:
                err |= X86_PF_PROT        # sanitize_error_code: user access to the kernel half
            return info, err
    raise AssertionError("model bug: a filled-in page faulted again for the same reason")


def user_access(thread: Thread, addr: int, *, write: bool = False, fetch: bool = False):
    """One instruction's access to the page of ``addr``.

    None when it completes. On a fault the signal is delivered; if a handler
    returns, the instruction runs again (SIG-X86-RESTORE). Otherwise returns
    how the process ended.
    """
    if USER_HALF_END <= addr < KERNEL_HALF or addr >= 1 << 64:
        # A non-canonical address: #GP, which Linux reports as SI_KERNEL.
        return unfixable_fault(thread, Siginfo(SIGSEGV, SI_KERNEL, 0))
    info = None
    for _ in range(MAX_REEXECUTIONS):
        fault = page_access(thread.process.mm, thread.pkru, addr, write=write, fetch=fetch)
        if fault is None:
            return None
        info, err = fault
        end = force_sig_fault(thread, info, err)
        if end is not None:
            return end
    end = Livelock(info)
    thread.process.terminate(end)
    return end


def unfixable_fault(thread: Thread, info: Siginfo):
    """A fault that no handler of the model can repair: #GP (a non-canonical address,
    RDPKRU or WRPKRU with ECX or EDX not 0) or #UD (no PKU).

    The cause is in the instruction's registers, which the model's handlers
    cannot change, so each time a handler returns the instruction faults
    again: the process ends, or after MAX_REEXECUTIONS the model records a
    livelock. Returns how the process ended; None only when a handler
    replaced the program (execve), so the instruction is gone.
    """
    proc, execs = thread.process, thread.process.execs
    for _ in range(MAX_REEXECUTIONS):
        end = force_sig_fault(thread, info)
        if end is not None:
            return end
        if proc.execs != execs or thread not in proc.threads:
            return None
    end = Livelock(info)
    proc.terminate(end)
    return end


def _backing(system: System, mm: Mm, addr: int) -> tuple[dict[int, int], int]:
    """Where the bytes of ``addr``'s page live, and the key of ``addr`` there."""
    vma = mm.find_vma(addr)
    if vma is not None and vma.shmem is not None:
        return system.shmem[vma.shmem], vma.offset - vma.start
    return mm.memory, 0


def read_bytes(system: System, mm: Mm, addr: int, n: int) -> bytes:
    """``n`` bytes from one page; an absent byte reads as 0.

    A private page that no write has given a page of its own (no PTE, or the
    shared zero page) holds no byte: it reads as zeros at once.
    """
    store, delta = _backing(system, mm, addr)
    if store is mm.memory:
        pte = mm.ptes.get(addr >> PAGE_SHIFT)
        if pte is None or pte.zero_page:
            return bytes(n)
    start = addr + delta
    return bytes(map(store.get, range(start, start + n), repeat(0)))


def write_bytes(system: System, mm: Mm, addr: int, data: bytes) -> None:
    """Write ``data`` within one page. A 0 byte is not stored: absent and 0 read the
    same, so equal contents give equal states."""
    store, delta = _backing(system, mm, addr)
    start = addr + delta
    keys = range(start, start + len(data))
    if store:
        for key in store.keys() & keys:         # the bytes stored there until now
            del store[key]
    store.update(compress(zip(keys, data), data))


def byte_at(system: System, mm: Mm, addr: int) -> int:
    return read_bytes(system, mm, addr, 1)[0]


def set_byte(system: System, mm: Mm, addr: int, value: int) -> None:
    write_bytes(system, mm, addr, bytes((value,)))


def _check_size(size: int) -> int:
    """The contract: an access moves 1, 2, 4 or 8 bytes; another size is a ValueError."""
    size = cabi.index(size)
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
    return int.from_bytes(bytes(byte_at(thread.system, thread.process.mm, addr + i) for i in range(size)), "little")


def store(thread: Thread, addr: int, value: int, size: int = 1) -> None | Killed:
    """A ``size``-byte little-endian store; None, or how the process ended."""
    addr = cabi.ulong(addr)
    data = (cabi.ulong(value) & ((1 << (8 * _check_size(size))) - 1)).to_bytes(size, "little")
    for a in _pages(addr, size):
        end = user_access(thread, a, write=True)
        if end is not None:
            return end
    for i, b in enumerate(data):
        set_byte(thread.system, thread.process.mm, addr + i, b)
    return None


def execute(thread: Thread, addr: int) -> int | Killed:
    """Fetch the instruction byte at ``addr``; keys never stop a fetch (HW-X86-DATA-ONLY)."""
    addr = cabi.ulong(addr)
    end = user_access(thread, addr, fetch=True)
    return end if end is not None else byte_at(thread.system, thread.process.mm, addr)


def rdpkru(thread: Thread, ecx: int = 0) -> int | Killed:
    """RDPKRU: EAX = PKRU. ECX must be 0 (#GP); without CR4.PKE it is #UD (SIGILL)."""
    ecx = cabi.ulong(ecx)
    if not thread.process.mm.ospke:
        return unfixable_fault(thread, Siginfo(SIGILL, ILL_ILLOPN, 0))
    if ecx & U32:
        return unfixable_fault(thread, Siginfo(SIGSEGV, SI_KERNEL, 0))
    return thread.pkru


def wrpkru(thread: Thread, eax: int, ecx: int = 0, edx: int = 0) -> None | Killed:
    """WRPKRU: PKRU = EAX. ECX and EDX must be 0 (#GP). Unprivileged (SEC-UNPRIV-WRITERS)."""
    eax, ecx, edx = cabi.ulong(eax), cabi.ulong(ecx), cabi.ulong(edx)
    if not thread.process.mm.ospke:
        return unfixable_fault(thread, Siginfo(SIGILL, ILL_ILLOPN, 0))
    if ecx & U32 or edx & U32:
        return unfixable_fault(thread, Siginfo(SIGSEGV, SI_KERNEL, 0))
    thread.pkru = eax & U32
    return None

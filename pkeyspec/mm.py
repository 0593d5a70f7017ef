"""The address space: VMAs with prot and key, mmap, munmap, mprotect, pkey_mprotect.

Sources: :kernel:`7.2 mm/mprotect.c do_mprotect_pkey mprotect_fixup`,
:kernel:`7.2 mm/mmap.c do_mmap`, :kernel:`7.2 mm/vma.c do_vmi_munmap
is_mergeable_vma` (merging), :kernel:`7.2 mm/madvise.c madvise_dontneed_single_vma`
and :kernel:`7.2 fs/proc/task_mmu.c show_smap`. Addresses are
whole pages; the model keeps page-table entries for the pages a thread has
touched, because Linux reports a fault on a never-touched page differently
(HW-X86-PK-NEEDS-PRESENT).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from . import cabi
from .execute_only import arch_override_mprotect_pkey, execute_only_pkey
from .hardware import Pte
from .keys import mm_pkey_is_allocated
from .uapi import (
    EACCES, EBADF, EEXIST, EINVAL, ENOMEM, EOVERFLOW, EPERM, MADV_DONTNEED, MADV_NORMAL, MAP_ANONYMOUS,
    MAP_DROPPABLE, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_PRIVATE, MAP_SHARED, MAP_TYPE, PAGE_SIZE,
    PAGE_SHIFT, PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_READ, PROT_SEM, PROT_WRITE,
)

if TYPE_CHECKING:
    from .tasks import Thread

# vm_flags bits (include/linux/mm.h). Linux also keeps the key in vm_flags
# (VM_PKEY_BIT0..3 = bits 32..35); the model keeps it in Vma.pkey instead.
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_GROWSDOWN = 0x100
VM_PFNMAP = 0x400
VM_IO = 0x4000
VM_DONTEXPAND = 0x40000
VM_ACCOUNT = 0x100000
VM_DONTDUMP = 0x4000000
VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC
VM_MAY_ALL = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC

#: x86-64 user address space: 47 bits, minus the guard page.
TASK_SIZE = 0x7FFFFFFFF000
#: Fixed, unrandomised layout (as under ``setarch -R``).
STACK_TOP = 0x7FFFFFFFF000
STACK_SIZE = 132 * 1024
MMAP_BASE = 0x7FFFF7FFF000
PROGRAM_BASE = 0x400000
PROGRAM_NAME = "/prog"
#: In the model no address is mapped below this (vm.mmap_min_addr).
MMAP_MIN_ADDR = 0x10000

_SMAPS_FLAG_NAMES = (
    (VM_READ, "rd"), (VM_WRITE, "wr"), (VM_EXEC, "ex"), (VM_SHARED, "sh"),
    (VM_MAYREAD, "mr"), (VM_MAYWRITE, "mw"), (VM_MAYEXEC, "me"), (VM_MAYSHARE, "ms"),
    (VM_GROWSDOWN, "gd"), (VM_PFNMAP, "pf"), (VM_IO, "io"), (VM_DONTEXPAND, "de"),
    (VM_ACCOUNT, "ac"), (VM_DONTDUMP, "dd"),
)


def page_align(value: int) -> int:
    """``PAGE_ALIGN`` in 64-bit arithmetic: it wraps to 0 near 2**64, as in C."""
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & 0xFFFFFFFFFFFFFFFF


def vma_is_anonymous(vma: Vma) -> bool:
    """No file and no special mapping behind it (Linux: ``!vma->vm_ops``)."""
    return vma.shmem is None and vma.name in ("", "[stack]")


def calc_vm_prot_bits(prot: int) -> int:
    return ((VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0)
            | (VM_EXEC if prot & PROT_EXEC else 0))


@dataclass(frozen=True)
class Vma:
    """One ``vm_area_struct``: [start, end), its flags, its key and what backs it.

    ``anon_vma`` is set on the first fault of a private anonymous VMA; Linux
    merges two neighbours only when at most one has one or both share it.
    ``shmem`` names the object behind a shared anonymous mapping.
    """

    start: int
    end: int
    flags: int
    pkey: int = 0
    name: str = ""
    anon_vma: int | None = None
    shmem: int | None = None
    offset: int = 0

    @property
    def prot(self) -> int:
        return ((PROT_READ if self.flags & VM_READ else 0)
                | (PROT_WRITE if self.flags & VM_WRITE else 0)
                | (PROT_EXEC if self.flags & VM_EXEC else 0))

    @property
    def perms(self) -> str:
        """The ``rwxp`` column of ``/proc/PID/maps``."""
        f = self.flags
        return ("r" if f & VM_READ else "-") + ("w" if f & VM_WRITE else "-") + \
               ("x" if f & VM_EXEC else "-") + ("s" if f & VM_MAYSHARE else "p")

    def __repr__(self) -> str:
        name = f" {self.name}" if self.name else ""
        return f"Vma({self.start:#x}-{self.end:#x} {self.perms} pkey={self.pkey}{name})"


def _mergeable(a: Vma, b: Vma) -> bool:
    return (a.end == b.start and a.flags == b.flags and a.pkey == b.pkey
            and a.name == b.name and a.shmem == b.shmem
            and (a.anon_vma is None or b.anon_vma is None or a.anon_vma == b.anon_vma)
            and (a.name == "" or b.offset == a.offset + (a.end - a.start)))


@dataclass
class Mm:
    """An ``mm_struct``: the VMAs, the page tables, the key map and the contents.

    ``pkey_allocation_map`` bit *k* set means key *k* is allocated; key 0 is
    allocated when the mm is created (SYS-KEY0-PREALLOCATED).
    ``execute_only_pkey`` is -1 until a PROT_EXEC-only mapping takes one.
    """

    ospke: bool
    vmas: list[Vma] = field(default_factory=list)
    pkey_allocation_map: int = 0
    execute_only_pkey: int = -1
    ptes: dict[int, Pte] = field(default_factory=dict)
    #: Bytes of private pages, by address; an absent byte reads as 0.
    memory: dict[int, int] = field(default_factory=dict)
    next_anon_vma: int = 1

    @classmethod
    def new(cls, ospke: bool) -> Mm:
        """``mm_alloc`` + ``init_new_context``: key 0 allocated, no execute-only key.

        Without OSPKE ``init_new_context`` leaves the zeroed context alone: the
        map is empty and ``execute_only_pkey`` is 0, which hides key 0 from
        pkey_free and pkey_mprotect (observed: both EINVAL; SYS-X86-DISABLED).
        """
        if ospke:
            return cls(ospke=True, pkey_allocation_map=0x1, execute_only_pkey=-1)
        return cls(ospke=False, pkey_allocation_map=0x0, execute_only_pkey=0)

    # --- lookups -------------------------------------------------------
    def find_vma(self, addr: int) -> Vma | None:
        """The VMA that contains ``addr``, or None."""
        i = bisect.bisect_right(self.vmas, addr, key=lambda v: v.start) - 1
        if i >= 0 and self.vmas[i].start <= addr < self.vmas[i].end:
            return self.vmas[i]
        return None

    def vmas_in(self, start: int, end: int) -> list[Vma]:
        return [v for v in self.vmas if v.end > start and v.start < end]

    # --- structural edits ------------------------------------------------
    def _split_at(self, addr: int) -> None:
        v = self.find_vma(addr)
        if v is None or v.start == addr:
            return
        i = self.vmas.index(v)
        low = replace(v, end=addr)
        high = replace(v, start=addr, offset=v.offset + (addr - v.start))
        self.vmas[i:i + 1] = [low, high]

    def _merge_around(self, start: int, end: int) -> None:
        """Merge neighbours whose boundary lies in [start, end], as vma_modify would."""
        i = 0
        while i + 1 < len(self.vmas):
            a, b = self.vmas[i], self.vmas[i + 1]
            if start <= b.start <= end and _mergeable(a, b):
                self.vmas[i:i + 2] = [replace(a, end=b.end,
                                              anon_vma=a.anon_vma or b.anon_vma)]
            else:
                i += 1

    def insert(self, vma: Vma) -> None:
        bisect.insort(self.vmas, vma, key=lambda v: v.start)
        self._merge_around(vma.start, vma.end)

    def unmap(self, start: int, end: int) -> None:
        self._split_at(start)
        self._split_at(end)
        self.vmas = [v for v in self.vmas if not (v.start >= start and v.end <= end)]
        for vpn in [p for p in self.ptes if start <= p * PAGE_SIZE < end]:
            del self.ptes[vpn]
        for a in [a for a in self.memory if start <= a < end]:
            del self.memory[a]

    def get_unmapped_area(self, length: int) -> int:
        """Top-down search below MMAP_BASE, as x86-64 does by default."""
        top = MMAP_BASE
        for v in sorted((v for v in self.vmas if v.start < MMAP_BASE),
                        key=lambda v: v.start, reverse=True):
            if v.end <= top - length:
                break
            top = min(top, v.start)
        addr = top - length
        return addr if addr >= MMAP_MIN_ADDR else -ENOMEM


def initial_vmas(kernel: tuple[int, int]) -> list[Vma]:
    """The address space of a freshly exec'd static program, without randomisation.

    Program text and stack carry key 0 (observed, row a). Since Linux 6.9
    (commit 3c6539b4c177, "x86/vdso: Move vDSO to mmap region") [vvar] and
    [vdso] are the first thing in the mmap area, so the first anonymous mmap
    lands directly below [vvar]; before, they sat just above the stack
    (``vdso_addr``). [vvar] may never become writable or executable (only
    VM_MAYREAD), which is why a huge ``pkey_mprotect`` from the first mmap
    fails with EACCES on 6.12 and 7.2 but with ENOMEM on 6.1 (observed, row c).
    """
    prog = [
        Vma(PROGRAM_BASE, PROGRAM_BASE + PAGE_SIZE, VM_READ | VM_MAY_ALL, name=PROGRAM_NAME),
        Vma(PROGRAM_BASE + PAGE_SIZE, PROGRAM_BASE + 2 * PAGE_SIZE,
            VM_READ | VM_EXEC | VM_MAY_ALL, name=PROGRAM_NAME, offset=PAGE_SIZE),
        Vma(PROGRAM_BASE + 2 * PAGE_SIZE, PROGRAM_BASE + 3 * PAGE_SIZE,
            VM_READ | VM_WRITE | VM_MAY_ALL | VM_ACCOUNT, name=PROGRAM_NAME,
            offset=2 * PAGE_SIZE),
    ]
    if kernel >= (6, 9):
        vdso_top, stack_top = MMAP_BASE, STACK_TOP
    else:
        vdso_top, stack_top = STACK_TOP, STACK_TOP - 7 * PAGE_SIZE
    stack = Vma(stack_top - STACK_SIZE, stack_top,
                VM_READ | VM_WRITE | VM_MAY_ALL | VM_GROWSDOWN | VM_ACCOUNT, name="[stack]")
    vvar = Vma(vdso_top - 6 * PAGE_SIZE, vdso_top - 2 * PAGE_SIZE,
               VM_READ | VM_MAYREAD | VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP,
               name="[vvar]")
    vdso = Vma(vdso_top - 2 * PAGE_SIZE, vdso_top,
               VM_READ | VM_EXEC | VM_MAY_ALL | VM_DONTEXPAND, name="[vdso]")
    return sorted(prog + [stack, vvar, vdso], key=lambda v: v.start)


# --- system calls ----------------------------------------------------------

def sys_mmap(thread: Thread, addr: int, length: int, prot: int, flags: int,
             fd: int, offset: int) -> int:
    """Anonymous ``mmap``, in the order of ``sys_mmap``, ``ksys_mmap_pgoff`` and ``do_mmap``.

    The model has no files, so a mapping without MAP_ANONYMOUS is EBADF (no
    descriptor is valid). New mappings get key 0, except a mapping whose
    prot is exactly PROT_EXEC, which takes the execute-only key
    (SYS-MMAP-DEFAULT-KEY); ``do_mmap`` takes it before it looks at the
    address or the map type, so even a failing mmap can allocate it.
    """
    addr, length, prot, flags, offset = (cabi.ulong(addr), cabi.ulong(length),
                                         cabi.ulong(prot), cabi.ulong(flags),
                                         cabi.ulong(offset))
    fd = cabi.ulong(fd)                 # unused: an anonymous mapping ignores it
    mm = thread.process.mm
    if offset & (PAGE_SIZE - 1):
        return -EINVAL
    if not flags & MAP_ANONYMOUS:
        return -EBADF
    if not length:
        return -EINVAL
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    length = page_align(length)
    if not length:
        return -ENOMEM
    pgoff = offset >> PAGE_SHIFT
    if pgoff + (length >> PAGE_SHIFT) > 0xFFFFFFFFFFFFFFFF:
        return -EOVERFLOW
    pkey = 0
    if prot == PROT_EXEC:
        pkey = execute_only_pkey(thread)
        if pkey < 0:
            pkey = 0
    vm_flags = calc_vm_prot_bits(prot) | VM_MAY_ALL
    # __get_unmapped_area
    if length > TASK_SIZE:
        return -ENOMEM
    if flags & MAP_FIXED:
        if addr > TASK_SIZE - length:
            return -ENOMEM
        if addr & (PAGE_SIZE - 1):
            return -EINVAL
    else:
        hint = page_align(addr)
        if hint and MMAP_MIN_ADDR <= hint <= TASK_SIZE - length and not mm.vmas_in(hint, hint + length):
            addr = hint
        else:
            addr = mm.get_unmapped_area(length)
            if addr < 0:
                return addr
    if addr < MMAP_MIN_ADDR:
        return -EPERM
    if flags & MAP_FIXED_NOREPLACE and mm.vmas_in(addr, addr + length):
        return -EEXIST
    maptype = flags & MAP_TYPE
    shmem = None
    if maptype == MAP_SHARED:
        vm_flags |= VM_SHARED | VM_MAYSHARE
        shmem = thread.system.new_shmem()
    elif maptype == MAP_PRIVATE or (maptype == MAP_DROPPABLE and thread.system.kernel >= (6, 11)):
        # A droppable mapping is VM_NORESERVE, so never accounted (do_mmap, mmap_region).
        if vm_flags & VM_WRITE and maptype == MAP_PRIVATE:
            vm_flags |= VM_ACCOUNT
    else:
        return -EINVAL
    mm.unmap(addr, addr + length)
    mm.insert(Vma(addr, addr + length, vm_flags, pkey, shmem=shmem))
    return addr


def sys_munmap(thread: Thread, addr: int, length: int) -> int:
    """``munmap``: EINVAL for an unaligned start, a zero or too large length."""
    addr, length = cabi.ulong(addr), cabi.ulong(length)
    if addr & (PAGE_SIZE - 1) or addr > TASK_SIZE or length > TASK_SIZE - addr:
        return -EINVAL
    length = page_align(length)
    if not length:
        return -EINVAL
    thread.process.mm.unmap(addr, addr + length)
    return 0


def sys_madvise(thread: Thread, addr: int, length: int, advice: int) -> int:
    """``madvise``: MADV_DONTNEED drops the pages (the next touch reads zeros), keys stay."""
    addr, length, advice = cabi.ulong(addr), cabi.ulong(length), cabi.int32(advice)
    if advice not in (MADV_NORMAL, MADV_DONTNEED):
        return -EINVAL
    if addr & (PAGE_SIZE - 1):
        return -EINVAL
    aligned = page_align(length)
    if length and not aligned:
        return -EINVAL
    length = aligned
    end = (addr + length) & 0xFFFFFFFFFFFFFFFF
    if end < addr:
        return -EINVAL
    if end == addr:
        return 0
    mm = thread.process.mm
    covered = addr
    for v in mm.vmas_in(addr, end):
        if v.start > covered:
            break
        covered = v.end
    if advice == MADV_DONTNEED:
        for v in mm.vmas_in(addr, end):
            lo, hi = max(v.start, addr), min(v.end, end)
            for vpn in [p for p in mm.ptes if lo <= p * PAGE_SIZE < hi]:
                del mm.ptes[vpn]
            if v.shmem is None:
                for a in [a for a in mm.memory if lo <= a < hi]:
                    del mm.memory[a]
    return 0 if covered >= end else -ENOMEM


def do_mprotect_pkey(thread: Thread, start: int, length: int, prot: int, pkey: int) -> int:
    """``do_mprotect_pkey``, check for check (SYS-MPROT-CHECK-ORDER).

    1. PROT_GROWSDOWN with PROT_GROWSUP -> EINVAL
    2. start not page aligned -> EINVAL
    3. len == 0 -> 0, before the key is looked at (SYS-MPROT-LEN0)
    4. start + PAGE_ALIGN(len) wraps -> ENOMEM
    5. prot bits other than READ, WRITE, EXEC, SEM -> EINVAL
    6. (mmap lock taken) pkey != -1 and not allocated -> EINVAL
    7. no VMA at start -> ENOMEM

    then per VMA: rights beyond VM_MAY* -> EACCES; a hole -> ENOMEM. The loop
    stops at the first error and undoes nothing (SYS-MPROT-NONATOMIC).
    """
    start, length, prot = cabi.ulong(start), cabi.ulong(length), cabi.ulong(prot)
    pkey = cabi.int32(pkey)
    mm = thread.process.mm
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
    if grows == PROT_GROWSDOWN | PROT_GROWSUP:
        return -EINVAL
    if start & (PAGE_SIZE - 1):
        return -EINVAL
    if not length:
        return 0
    length = page_align(length)
    end = (start + length) & 0xFFFFFFFFFFFFFFFF
    if end <= start:
        return -ENOMEM
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):
        return -EINVAL
    if pkey != -1 and not mm_pkey_is_allocated(mm, pkey):
        return -EINVAL
    vmas = mm.vmas_in(start, end)
    if not vmas:
        return -ENOMEM
    vma = vmas[0]
    if grows & PROT_GROWSDOWN:
        if vma.start >= end:
            return -ENOMEM
        start = vma.start
        if not vma.flags & VM_GROWSDOWN:
            return -EINVAL
    else:
        if vma.start > start:
            return -ENOMEM
        if grows & PROT_GROWSUP:
            return -EINVAL      # x86 has no VM_GROWSUP
    tmp = vma.start
    error = 0
    for vma in mm.vmas_in(start, end):
        if vma.start != tmp:
            error = -ENOMEM
            break
        new_pkey = arch_override_mprotect_pkey(thread, vma, prot, pkey)
        newflags = calc_vm_prot_bits(prot) | (vma.flags & ~VM_ACCESS_FLAGS)
        if newflags & ~(newflags >> 4) & VM_ACCESS_FLAGS:
            error = -EACCES
            break
        # mprotect_fixup's accounting: a private mapping that becomes writable is charged
        # (VM_ACCOUNT); an anonymous one that stops being writable before its first
        # fault is uncharged.
        if newflags & VM_WRITE:
            if not vma.flags & (VM_ACCOUNT | VM_WRITE | VM_SHARED):
                newflags |= VM_ACCOUNT
        elif vma.flags & VM_ACCOUNT and vma_is_anonymous(vma) and vma.anon_vma is None:
            newflags &= ~VM_ACCOUNT
        lo, hi = max(vma.start, start), min(vma.end, end)
        mprotect_fixup(mm, vma, lo, hi, newflags, new_pkey)
        tmp = vma.end
    if not error and tmp < end:
        error = -ENOMEM
    return error


def mprotect_fixup(mm: Mm, vma: Vma, start: int, end: int, newflags: int, pkey: int) -> None:
    """Give [start, end) of ``vma`` new flags and key: split, update PTEs, merge."""
    if newflags == vma.flags and pkey == vma.pkey:
        return
    mm._split_at(start)
    mm._split_at(end)
    for i, v in enumerate(mm.vmas):
        if v.start >= start and v.end <= end:
            mm.vmas[i] = replace(v, flags=newflags, pkey=pkey)
    for vpn, pte in list(mm.ptes.items()):
        if start <= vpn * PAGE_SIZE < end:
            mm.ptes[vpn] = pte_for(mm.find_vma(vpn * PAGE_SIZE), zero_page=pte.zero_page)
    mm._merge_around(start, end)


def pte_for(vma: Vma, *, zero_page: bool = False) -> Pte:
    """The PTE a fault (or change_protection) installs for a page of ``vma``.

    A PROT_NONE page keeps its page but is not present to the CPU; the zero
    page is never writable.
    """
    return Pte(present=bool(vma.flags & VM_ACCESS_FLAGS),
               writable=bool(vma.flags & VM_WRITE) and not zero_page,
               executable=bool(vma.flags & VM_EXEC),
               pkey=vma.pkey, zero_page=zero_page)


def smaps(mm: Mm) -> str:
    """``/proc/self/smaps``, reduced to the lines the model can state.

    ``ProtectionKey:`` is printed only when the kernel enabled pkeys at run
    time (PROC-SMAPS-LINE); the key bits never appear in ``VmFlags``
    (PROC-VMFLAGS-HIDES-KEY).
    """
    lines = []
    for v in mm.vmas:
        offset = v.offset if v.name == PROGRAM_NAME else 0     # only file mappings have one
        header = f"{v.start:08x}-{v.end:08x} {v.perms} {offset:08x} 00:00 0 "
        lines.append(f"{header:<73}{v.name}" if v.name else header)
        size_kb = (v.end - v.start) // 1024
        rss = sum(1 for p, pte in mm.ptes.items()
                  if v.start <= p * PAGE_SIZE < v.end and not pte.zero_page) * PAGE_SIZE // 1024
        lines.append(f"Size:           {size_kb:8d} kB")
        lines.append(f"Rss:            {rss:8d} kB")
        if mm.ospke:
            lines.append(f"ProtectionKey:  {v.pkey:8d}")
        flags = " ".join(n for bit, n in _SMAPS_FLAG_NAMES if v.flags & bit)
        lines.append(f"VmFlags: {flags} ")
    return "".join(line + "\n" for line in lines)


def smaps_pkey(mm: Mm, addr: int) -> int | None:
    """The ``ProtectionKey:`` value of the VMA holding ``addr``, as a reader of smaps finds it."""
    addr = cabi.ulong(addr)
    text = smaps(mm)
    current = None
    for line in text.splitlines():
        if line[:1] and line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            current = lo <= addr < hi
        elif line.startswith("ProtectionKey:") and current:
            return int(line.split()[1])
    return None

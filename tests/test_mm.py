"""The address space: mmap, munmap, madvise, mprotect/pkey_mprotect, VMAs and smaps.

Addresses are the unrandomised x86-64 layout (as under ``setarch -R``):
mmap_base = 0x7ffff7fff000 (TASK_SIZE minus the 128 MiB minimum gap). Since
Linux 6.9 [vvar] (4 pages) and [vdso] (2 pages) are the first thing mapped
below mmap_base, so the first anonymous page lands at 0x7ffff7ff8000; on
6.1 they sit above the stack and the first page lands at 0x7ffff7ffe000.
"""

import errno

import pytest

from pkeyspec import (
    MADV_DONTNEED, MADV_NORMAL, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_PRIVATE,
    MAP_SHARED, MAP_SHARED_VALIDATE, PKEY_DISABLE_ACCESS, PROT_EXEC, PROT_GROWSDOWN,
    PROT_GROWSUP, PROT_NONE, PROT_READ, PROT_SEM, PROT_WRITE, System,
)

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
TASK_SIZE = 0x7FFFFFFFF000
FIRST_MMAP_72 = 0x7FFFF7FF8000       # first 1-page anonymous mmap on 6.9+
FIRST_MMAP_61 = 0x7FFFF7FFE000       # first 1-page anonymous mmap on 6.1
VVAR_72 = 0x7FFFF7FF9000
VDSO_72 = 0x7FFFF7FFD000
STACK_72 = 0x7FFFFFFDE000
PROG = 0x400000


def err(call, *args):
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno


def vmas(t):
    """(start, end, perms, pkey) of every VMA, as /proc/self/maps + smaps would show them."""
    return [(v.start, v.end, v.perms, v.pkey) for v in t.process.mm.vmas]


def vma_at(t, addr):
    for v in vmas(t):
        if v[0] <= addr < v[1]:
            return v
    return None


def smaps_block(t, addr):
    """The smaps lines of the VMA holding addr (header first)."""
    lines = t.smaps().splitlines()
    out, inside = [], False
    for line in lines:
        first = line.split(" ")[0]
        if "-" in first and all(c in "0123456789abcdef-" for c in first):
            lo, hi = (int(x, 16) for x in first.split("-"))
            inside = lo <= addr < hi
        if inside:
            out.append(line)
    return out


def spawn(**kw):
    return System(**kw).spawn()


# --- mmap: layout ---------------------------------------------------------------


def test_first_mmap_lands_below_vvar_on_7_2():
    """Top-down: the first anonymous page is directly below [vvar] (kernel notes §6, vDSO moved in 6.9)."""
    t = spawn(kernel="7.2")
    assert t.mmap(0, PAGE, RW, ANON) == FIRST_MMAP_72
    assert vma_at(t, VVAR_72)[0] == VVAR_72


def test_first_mmap_below_mmap_base_on_6_1():
    """On 6.1 [vvar]/[vdso] sit above the stack: the first page is just below mmap_base (kernel notes §6)."""
    t = spawn(kernel="6.1")
    assert t.mmap(0, PAGE, RW, ANON) == FIRST_MMAP_61


def test_mmaps_go_top_down():
    """Each new mapping is placed directly below the previous one."""
    t = spawn()
    a = t.mmap(0, PAGE, PROT_READ, ANON)
    b = t.mmap(0, 2 * PAGE, RW, ANON)
    assert (a, b) == (FIRST_MMAP_72, FIRST_MMAP_72 - 2 * PAGE)


def test_adjacent_anon_mmaps_merge():
    """Two adjacent private anonymous mmaps with equal flags become one VMA (kernel notes §4)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    b = t.mmap(0, PAGE, RW, ANON)
    assert b == a - PAGE
    assert vma_at(t, a) == (b, a + PAGE, "rw-p", 0)


def test_adjacent_mmaps_merge_even_after_first_was_touched():
    """A new unfaulted VMA merges with a faulted neighbour (kernel notes §4, is_mergeable_anon_vma)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    t.store(a, 1)
    b = t.mmap(0, PAGE, RW, ANON)
    assert vma_at(t, a) == (b, a + PAGE, "rw-p", 0)
    assert t.load(a) == 1


def test_adjacent_mmaps_with_different_prot_do_not_merge():
    """VMAs with different flags stay separate."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    b = t.mmap(0, PAGE, PROT_READ, ANON)
    assert vma_at(t, a) == (a, a + PAGE, "rw-p", 0)
    assert vma_at(t, b) == (b, b + PAGE, "r--p", 0)


def test_new_mapping_has_key_0():
    """mmap takes no key: a new mapping has key 0 (SYS-MMAP-DEFAULT-KEY; observed q)."""
    t = spawn()
    t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    assert t.smaps_pkey(a) == 0


def test_unaligned_hint_without_map_fixed_is_not_an_error():
    """Without MAP_FIXED the address is a hint: an unaligned one is no error (kernel notes §9)."""
    t = spawn()
    a = t.mmap(0x12345, PAGE, RW, ANON)
    assert a % PAGE == 0


def test_len_is_rounded_up_to_pages():
    """mmap(len=1) maps a whole page."""
    t = spawn()
    a = t.mmap(0, 1, RW, ANON)
    assert vma_at(t, a) == (a, a + PAGE, "rw-p", 0)


def test_map_fixed_maps_exactly_there():
    """MAP_FIXED uses the given address."""
    t = spawn()
    assert t.mmap(0x10000000, 2 * PAGE, RW, ANON | MAP_FIXED) == 0x10000000
    assert vma_at(t, 0x10000000) == (0x10000000, 0x10002000, "rw-p", 0)


def test_map_fixed_replaces_mapping_and_its_key():
    """MAP_FIXED over a keyed, written page: the new page has key 0 and reads 0 (SYS-MMAP-DEFAULT-KEY)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(a, PAGE, RW, k)
    t.store(a, 0x99)
    assert t.mmap(a, PAGE, RW, ANON | MAP_FIXED) == a
    assert t.smaps_pkey(a) == 0
    assert t.load(a) == 0


def test_map_fixed_noreplace_over_existing_is_eexist():
    """MAP_FIXED_NOREPLACE over a mapped page: EEXIST; the old mapping stays (kernel notes §9)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    t.store(a, 5)
    assert err(t.mmap, a, PAGE, PROT_READ, ANON | MAP_FIXED_NOREPLACE) == errno.EEXIST
    assert t.load(a) == 5
    assert vma_at(t, a)[2] == "rw-p"


def test_map_fixed_noreplace_partial_overlap_is_eexist():
    """Any overlap counts, not only the start (kernel notes §9: find_vma_intersection)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.mmap, a - PAGE, 2 * PAGE, RW, ANON | MAP_FIXED_NOREPLACE) == errno.EEXIST


def test_map_fixed_noreplace_on_free_range_succeeds():
    """MAP_FIXED_NOREPLACE on a free range maps there."""
    t = spawn()
    assert t.mmap(0x20000000, PAGE, RW, ANON | MAP_FIXED_NOREPLACE) == 0x20000000


def test_map_shared_anonymous_can_be_keyed():
    """A MAP_SHARED anonymous mapping takes a key (observed q)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS)
    assert vma_at(t, a)[2] == "rw-s"
    assert t.pkey_mprotect(a, PAGE, RW, k) == 0
    assert t.smaps_pkey(a) == 1


# --- mmap: errors and their order -------------------------------------------------------


def test_mmap_unaligned_offset_is_einval():
    """An unaligned offset is EINVAL, even for an anonymous mapping (kernel notes §9, step 1)."""
    t = spawn()
    assert err(t.mmap, 0, PAGE, RW, ANON, -1, 1) == errno.EINVAL


def test_mmap_without_map_anonymous_is_ebadf():
    """No MAP_ANONYMOUS and fd -1: EBADF (kernel notes §9: fget fails)."""
    t = spawn()
    assert err(t.mmap, 0, PAGE, RW, MAP_PRIVATE, -1, 0) == errno.EBADF


def test_mmap_offset_checked_before_fd():
    """Unaligned offset and a bad fd: EINVAL, the offset is checked first (kernel notes §9)."""
    t = spawn()
    assert err(t.mmap, 0, PAGE, RW, MAP_PRIVATE, -1, 1) == errno.EINVAL


def test_mmap_fd_checked_before_len():
    """Bad fd and len 0: EBADF, before do_mmap's len check (kernel notes §9)."""
    t = spawn()
    assert err(t.mmap, 0, 0, RW, MAP_PRIVATE, -1, 0) == errno.EBADF


def test_mmap_len_0_is_einval():
    """len 0: EINVAL (kernel notes §9, step 2)."""
    t = spawn()
    assert err(t.mmap, 0, 0, RW, ANON) == errno.EINVAL


def test_mmap_len_rounding_to_0_is_enomem():
    """A len that page-aligns to 0 (2**64-1): ENOMEM (kernel notes §9, step 3)."""
    t = spawn()
    assert err(t.mmap, 0, 2**64 - 1, RW, ANON) == errno.ENOMEM


def test_mmap_len_above_task_size_is_enomem():
    """len > TASK_SIZE: ENOMEM (kernel notes §9: __get_unmapped_area)."""
    t = spawn()
    assert err(t.mmap, 0, TASK_SIZE + PAGE, RW, ANON) == errno.ENOMEM


def test_mmap_huge_aligned_offset_is_accepted_for_anonymous_memory():
    """pgoff is at most 2**52 on 64-bit, so pgoff + pages cannot wrap; anon private ignores the offset (kernel notes §9)."""
    t = spawn()
    a = t.mmap(0, 2 * PAGE, RW, ANON, -1, 0xFFFFFFFFFFFFF000)
    assert vma_at(t, a) == (a, a + 2 * PAGE, "rw-p", 0)


def test_map_fixed_unaligned_is_einval():
    """MAP_FIXED with an unaligned address: EINVAL (kernel notes §9, step 6)."""
    t = spawn()
    assert err(t.mmap, 0x10000001, PAGE, RW, ANON | MAP_FIXED) == errno.EINVAL


def test_map_fixed_beyond_task_size_is_enomem():
    """MAP_FIXED whose end passes TASK_SIZE: ENOMEM (kernel notes §9)."""
    t = spawn()
    assert err(t.mmap, TASK_SIZE, PAGE, RW, ANON | MAP_FIXED) == errno.ENOMEM


def test_map_fixed_below_mmap_min_addr_is_eperm():
    """MAP_FIXED below vm.mmap_min_addr (65536): EPERM."""
    t = spawn()
    assert err(t.mmap, 0x1000, PAGE, RW, ANON | MAP_FIXED) == errno.EPERM


@pytest.mark.parametrize("flags", [MAP_ANONYMOUS, MAP_SHARED_VALIDATE | MAP_ANONYMOUS,
                                   0xF | MAP_ANONYMOUS])
def test_mmap_bad_map_type_is_einval(flags):
    """Anonymous mapping that is neither MAP_SHARED nor MAP_PRIVATE: EINVAL (kernel notes §9, step 8)."""
    t = spawn()
    assert err(t.mmap, 0, PAGE, RW, flags) == errno.EINVAL


def test_mmap_eexist_comes_before_map_type():
    """MAP_FIXED_NOREPLACE overlap and a bad map type: EEXIST, the type is checked last (kernel notes §9)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.mmap, a, PAGE, RW, MAP_ANONYMOUS | MAP_FIXED_NOREPLACE) == errno.EEXIST


def test_mmap_ignores_unknown_prot_bits():
    """mmap does not reject unknown prot bits (mprotect does) (kernel notes §9)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW | 0x1000, ANON)
    assert vma_at(t, a)[2] == "rw-p"


def test_failed_mmap_leaves_address_space_alone():
    """A failing mmap adds no VMA."""
    t = spawn()
    before = vmas(t)
    for args in [(0, 0, RW, ANON), (0, PAGE, RW, MAP_ANONYMOUS), (0x1001, PAGE, RW, ANON | MAP_FIXED)]:
        with pytest.raises(OSError):
            t.mmap(*args)
    assert vmas(t) == before


# --- munmap ---------------------------------------------------------------------------


def test_munmap_removes_pages_and_contents():
    """After munmap and a new mmap at the same place the page reads 0."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    t.store(a, 7)
    assert t.munmap(a, PAGE) == 0
    assert vma_at(t, a) is None
    assert t.mmap(a, PAGE, RW, ANON | MAP_FIXED) == a
    assert t.load(a) == 0


def test_munmap_middle_splits():
    """munmap of the middle page leaves two VMAs."""
    t = spawn()
    a = t.mmap(0, 3 * PAGE, RW, ANON)
    t.munmap(a + PAGE, PAGE)
    assert vma_at(t, a) == (a, a + PAGE, "rw-p", 0)
    assert vma_at(t, a + PAGE) is None
    assert vma_at(t, a + 2 * PAGE) == (a + 2 * PAGE, a + 3 * PAGE, "rw-p", 0)


def test_munmap_of_unmapped_range_succeeds():
    """Nothing mapped: munmap returns 0 (kernel notes §9)."""
    t = spawn()
    assert t.munmap(0x30000000, 16 * PAGE) == 0


@pytest.mark.parametrize("addr, length", [
    (0x30000001, PAGE),                 # unaligned start
    (0x30000000, 0),                    # len 0
    (TASK_SIZE + PAGE, PAGE),           # start above TASK_SIZE
    (0x30000000, TASK_SIZE),            # len > TASK_SIZE - start
    (0x30000000, 2**64 - 1),
])
def test_munmap_errors_are_einval(addr, length):
    """munmap: unaligned start, len 0, out-of-range start or length: EINVAL (kernel notes §9)."""
    t = spawn()
    assert err(t.munmap, addr, length) == errno.EINVAL


# --- madvise --------------------------------------------------------------------------


def test_madv_dontneed_zeroes_and_keeps_key():
    """MADV_DONTNEED: the next touch reads 0; the key stays (observed q)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(a, PAGE, RW, k)
    t.store(a, 9)
    assert t.madvise(a, PAGE, MADV_DONTNEED) == 0
    assert t.smaps_pkey(a) == k
    assert t.load(a) == 0


def test_madvise_len_0_is_0():
    """madvise with len 0 returns 0."""
    t = spawn()
    assert t.madvise(0x30000000, 0, MADV_DONTNEED) == 0


@pytest.mark.parametrize("addr, length, advice", [
    (0x30000001, PAGE, MADV_DONTNEED),      # unaligned start
    (0x30000000, PAGE, 12345),              # unknown advice
    (0xFFFFFFFFFFFFF000, 2 * PAGE, MADV_NORMAL),   # start + len wraps
], ids=["unaligned", "unknown-advice", "wrapping-range"])
def test_madvise_einval_cases(addr, length, advice):
    """madvise: unaligned start, unknown advice, wrapping range: EINVAL (mm/madvise.c)."""
    t = spawn()
    assert err(t.madvise, addr, length, advice) == errno.EINVAL


def test_madvise_len_rounding_up_to_0_is_einval():
    """len_in = 2**64-1 page-aligns to 0: EINVAL ("len was rounded up from small -ve to zero", mm/madvise.c)."""
    t = spawn()
    assert err(t.madvise, FIRST_MMAP_72, 2**64 - 1, MADV_NORMAL) == errno.EINVAL


def test_madvise_unmapped_is_enomem():
    """madvise over unmapped memory: ENOMEM."""
    t = spawn()
    assert err(t.madvise, 0x30000000, PAGE, MADV_DONTNEED) == errno.ENOMEM


def test_madvise_with_hole_applies_to_mapped_part_and_is_enomem():
    """A range with an unmapped tail: the mapped part is dropped, the call says ENOMEM (mm/madvise.c)."""
    t = spawn()
    a = t.mmap(0, 2 * PAGE, RW, ANON)
    t.munmap(a + PAGE, PAGE)
    t.store(a, 3)
    assert err(t.madvise, a, 2 * PAGE, MADV_DONTNEED) == errno.ENOMEM
    assert t.load(a) == 0


# --- do_mprotect_pkey: each check ---------------------------------------------------------


def test_mprotect_growsdown_and_growsup_is_einval():
    """Step 1: PROT_GROWSDOWN|PROT_GROWSUP: EINVAL (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.mprotect, a, PAGE, PROT_READ | PROT_GROWSDOWN | PROT_GROWSUP) == errno.EINVAL


def test_mprotect_unaligned_start_is_einval():
    """Step 2: start not page aligned: EINVAL (SYS-MPROT-CHECK-ORDER; observed c)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.mprotect, a + 1, PAGE, PROT_READ) == errno.EINVAL


def test_mprotect_len_0_is_noop():
    """Step 3: len 0 returns 0 and changes nothing (SYS-MPROT-LEN0; observed c)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert t.mprotect(a, 0, PROT_NONE) == 0
    assert vma_at(t, a)[2] == "rw-p"


def test_mprotect_wrapping_range_is_enomem():
    """Step 4: start + PAGE_ALIGN(len) wraps: ENOMEM (SYS-MPROT-CHECK-ORDER; observed c)."""
    t = spawn()
    assert err(t.mprotect, 0xFFFFFFFFFFFFF000, PAGE, PROT_READ) == errno.ENOMEM
    assert err(t.mprotect, FIRST_MMAP_72, 2**64 - PAGE, PROT_READ) == errno.ENOMEM


def test_mprotect_len_rounding_to_0_is_enomem():
    """Step 4: a len that page-aligns to 0 makes end == start: ENOMEM (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    assert err(t.mprotect, FIRST_MMAP_72, 2**64 - 1, PROT_READ) == errno.ENOMEM


@pytest.mark.parametrize("prot", [0x1000, 0x10, 0x80000000, PROT_READ | 0x20])
def test_mprotect_bad_prot_bits_is_einval(prot):
    """Step 5: prot bits other than R/W/X/SEM: EINVAL (SYS-MPROT-CHECK-ORDER; observed c)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.mprotect, a, PAGE, prot) == errno.EINVAL


def test_mprotect_prot_sem_is_accepted():
    """PROT_SEM is a valid prot bit on x86 (arch_validate_prot)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert t.mprotect(a, PAGE, PROT_READ | PROT_SEM) == 0


@pytest.mark.parametrize("pkey", [5, 16, -2, 2**31 - 1])
def test_pkey_mprotect_unallocated_key_is_einval(pkey):
    """Step 6: a key that is not allocated (5, 16, -2): EINVAL (SYS-MPROT-CHECK-ORDER; observed c)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.pkey_mprotect, a, PAGE, PROT_READ, pkey) == errno.EINVAL


def test_mprotect_unmapped_is_enomem():
    """Step 7: no VMA: ENOMEM (SYS-MPROT-CHECK-ORDER; observed c)."""
    t = spawn()
    assert err(t.mprotect, 0x30000000, PAGE, PROT_READ) == errno.ENOMEM


def test_mprotect_kernel_address_is_enomem():
    """A kernel address is unmapped: ENOMEM (observed c)."""
    t = spawn()
    assert err(t.mprotect, 0xFFFFFFFF80000000, PAGE, PROT_READ) == errno.ENOMEM


def test_mprotect_range_starting_in_hole_is_enomem():
    """Step 8: the first VMA starts after start: ENOMEM, nothing changed (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.mprotect, a - PAGE, 2 * PAGE, PROT_READ) == errno.ENOMEM
    assert vma_at(t, a)[2] == "rw-p"


def test_mprotect_growsdown_on_normal_vma_is_einval():
    """PROT_GROWSDOWN on a VMA without VM_GROWSDOWN: EINVAL (observed c)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.mprotect, a, PAGE, PROT_READ | PROT_GROWSDOWN) == errno.EINVAL


def test_mprotect_growsup_is_einval_on_x86():
    """PROT_GROWSUP: x86 has no VM_GROWSUP, EINVAL (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.mprotect, a, PAGE, PROT_READ | PROT_GROWSUP) == errno.EINVAL


def test_mprotect_growsdown_on_stack_extends_to_vma_start():
    """PROT_GROWSDOWN on the stack changes it from the VMA start up to end (do_mprotect_pkey)."""
    t = spawn()
    top = 0x7FFFFFFFF000
    assert t.mprotect(top - PAGE, PAGE, PROT_READ | PROT_GROWSDOWN) == 0
    assert vma_at(t, STACK_72) == (STACK_72, top, "r--p", 0)


def test_mprotect_per_vma_eacces_beyond_vm_may():
    """Per VMA: asking for W on [vvar] (only VM_MAYREAD) is EACCES (SYS-MPROT-CHECK-ORDER; kernel notes §6)."""
    t = spawn()
    assert err(t.mprotect, VVAR_72, PAGE, RW) == errno.EACCES
    assert err(t.mprotect, VVAR_72, PAGE, PROT_READ | PROT_EXEC) == errno.EACCES
    assert t.mprotect(VVAR_72, PAGE, PROT_READ) == 0


# --- do_mprotect_pkey: pairs that show the order -----------------------------------------


def test_order_growsdown_growsup_before_len_0():
    """Both GROWS bits with len 0: EINVAL, step 1 before step 3 (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    assert err(t.mprotect, FIRST_MMAP_72, 0, PROT_GROWSDOWN | PROT_GROWSUP) == errno.EINVAL


def test_order_unaligned_before_len_0():
    """Unaligned start with len 0: EINVAL, step 2 before step 3 (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    assert err(t.mprotect, 0x30000001, 0, PROT_READ) == errno.EINVAL


def test_order_unaligned_before_bad_key():
    """Unaligned start and unallocated key: EINVAL (SYS-MPROT-BADKEY-BEATS-ENOMEM)."""
    t = spawn()
    assert err(t.pkey_mprotect, 0x30000001, PAGE, PROT_READ, 9) == errno.EINVAL


def test_order_unaligned_before_wrap():
    """Unaligned start and a wrapping range: EINVAL, step 2 before step 4 (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    assert err(t.mprotect, 0xFFFFFFFFFFFFF001, 2 * PAGE, PROT_READ) == errno.EINVAL


def test_order_len_0_before_bad_key():
    """len 0 with garbage key 9999: 0, the key is never looked at (SYS-MPROT-LEN0)."""
    t = spawn()
    assert t.pkey_mprotect(FIRST_MMAP_72, 0, PROT_READ, 9999) == 0


def test_order_len_0_before_bad_prot_and_unmapped():
    """len 0 with bad prot on an unmapped address: 0 (SYS-MPROT-CHECK-ORDER steps 3 < 5 < 7)."""
    t = spawn()
    assert t.pkey_mprotect(0x30000000, 0, 0x1000, 5) == 0


def test_order_wrap_before_bad_prot():
    """A wrapping range with bad prot: ENOMEM, step 4 before step 5 (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    assert err(t.mprotect, 0xFFFFFFFFFFFFF000, PAGE, 0x1000) == errno.ENOMEM


def test_order_wrap_before_bad_key():
    """A wrapping range with an unallocated key: ENOMEM, step 4 before step 6 (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    assert err(t.pkey_mprotect, 0xFFFFFFFFFFFFF000, PAGE, PROT_READ, 7) == errno.ENOMEM


def test_order_bad_prot_before_unmapped():
    """Bad prot on an unmapped range: EINVAL, step 5 before step 7 (SYS-MPROT-CHECK-ORDER)."""
    t = spawn()
    assert err(t.mprotect, 0x30000000, PAGE, 0x1000) == errno.EINVAL


def test_order_bad_key_before_unmapped():
    """Unallocated key on an unmapped range: EINVAL, not ENOMEM (SYS-MPROT-BADKEY-BEATS-ENOMEM)."""
    t = spawn()
    assert err(t.pkey_mprotect, 0x30000000, PAGE, PROT_READ, 5) == errno.EINVAL


def test_order_bad_key_before_eacces():
    """Unallocated key and a prot beyond VM_MAY*: EINVAL (step 6 before the per-VMA checks)."""
    t = spawn()
    assert err(t.pkey_mprotect, VVAR_72, PAGE, RW, 5) == errno.EINVAL


def test_order_growsdown_on_normal_vma_after_vma_lookup():
    """PROT_GROWSDOWN on an unmapped range: ENOMEM (the VMA lookup comes first)."""
    t = spawn()
    assert err(t.mprotect, 0x30000000, PAGE, PROT_READ | PROT_GROWSDOWN) == errno.ENOMEM


# --- keys on VMAs: split, merge, keep -----------------------------------------------------


def test_pkey_mprotect_middle_page_splits_k1_k2_k1():
    """pkey_mprotect of the middle page: VMAs k1/k2/k1 (observed q)."""
    t = spawn()
    k1, k2 = t.pkey_alloc(0, 0), t.pkey_alloc(0, 0)
    a = t.mmap(0, 3 * PAGE, RW, ANON)
    t.pkey_mprotect(a, 3 * PAGE, RW, k1)
    assert vma_at(t, a) == (a, a + 3 * PAGE, "rw-p", 1)
    t.pkey_mprotect(a + PAGE, PAGE, RW, k2)
    assert [vma_at(t, a + i * PAGE) for i in range(3)] == [
        (a, a + PAGE, "rw-p", 1),
        (a + PAGE, a + 2 * PAGE, "rw-p", 2),
        (a + 2 * PAGE, a + 3 * PAGE, "rw-p", 1),
    ]
    assert [t.smaps_pkey(a + i * PAGE) for i in range(3)] == [1, 2, 1]


def test_middle_page_back_to_k1_merges():
    """Giving the middle page k1 again merges the three VMAs into one (kernel notes §4)."""
    t = spawn()
    k1, k2 = t.pkey_alloc(0, 0), t.pkey_alloc(0, 0)
    a = t.mmap(0, 3 * PAGE, RW, ANON)
    t.pkey_mprotect(a, 3 * PAGE, RW, k1)
    t.pkey_mprotect(a + PAGE, PAGE, RW, k2)
    t.pkey_mprotect(a + PAGE, PAGE, RW, k1)
    assert vma_at(t, a + PAGE) == (a, a + 3 * PAGE, "rw-p", 1)


def test_mprotect_with_unchanged_flags_does_not_split():
    """mprotect to the same prot and key splits nothing (kernel notes §3: newflags == oldflags)."""
    t = spawn()
    a = t.mmap(0, 3 * PAGE, RW, ANON)
    t.pkey_mprotect(a + PAGE, PAGE, RW, 0)
    t.mprotect(a + PAGE, PAGE, RW)
    assert vma_at(t, a) == (a, a + 3 * PAGE, "rw-p", 0)


def test_key_minus_1_keeps_vma_key():
    """pkey_mprotect(..., -1) and mprotect keep the VMA's existing key (SYS-MPROT-NEG1; observed c)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(a, PAGE, RW, k)
    assert t.pkey_mprotect(a, PAGE, PROT_READ, -1) == 0
    assert t.smaps_pkey(a) == 1
    assert t.mprotect(a, PAGE, RW) == 0
    assert t.smaps_pkey(a) == 1


def test_pkey_mprotect_minus_1_as_unsigned_is_minus_1():
    """The key is an int: 0xFFFFFFFF is -1, a legacy mprotect that keeps the key (SYS-SIGNATURES, SYS-MPROT-NEG1)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(a, PAGE, RW, k)
    assert t.pkey_mprotect(a, PAGE, PROT_READ, 0xFFFFFFFF) == 0
    assert t.smaps_pkey(a) == 1


def test_prot_none_and_back_keeps_key():
    """mprotect PROT_NONE and back keeps the key (observed q)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(a, PAGE, RW, k)
    t.mprotect(a, PAGE, PROT_NONE)
    assert t.smaps_pkey(a) == 1
    t.mprotect(a, PAGE, RW)
    assert t.smaps_pkey(a) == 1


@pytest.mark.parametrize("prot", [PROT_NONE, PROT_READ, PROT_WRITE, RW, PROT_EXEC | PROT_READ,
                                  RW | PROT_EXEC])
def test_any_allocated_key_with_any_prot(prot):
    """Any allocated key can be attached with any prot (SYS-MPROT-ANY-PROT)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    assert t.pkey_mprotect(a, PAGE, prot, k) == 0
    assert t.smaps_pkey(a) == k


def test_pkey_mprotect_needs_no_rights_for_the_key():
    """A thread with AD for k can still retag k memory to key 0 (SEC-PKEY-MPROTECT-NO-PKRU-CHECK)."""
    t = spawn()
    k = t.pkey_alloc(0, PKEY_DISABLE_ACCESS)
    a = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(a, PAGE, RW, k)
    assert t.pkey_mprotect(a, PAGE, RW, 0) == 0
    assert t.load(a) == 0


# --- non-atomic pkey_mprotect ---------------------------------------------------------


def test_pkey_mprotect_with_unmapped_tail_rekeys_head():
    """Range with an unmapped tail: ENOMEM, and the mapped head already has the key (SYS-MPROT-NONATOMIC; observed c)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, 2 * PAGE, RW, ANON)
    t.munmap(a + PAGE, PAGE)
    assert err(t.pkey_mprotect, a, 2 * PAGE, PROT_READ, k) == errno.ENOMEM
    assert vma_at(t, a) == (a, a + PAGE, "r--p", 1)


def test_pkey_mprotect_with_hole_in_middle_rekeys_up_to_hole():
    """A hole in the middle: ENOMEM; the VMA before the hole is changed, the one after is not (SYS-MPROT-NONATOMIC)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, 3 * PAGE, RW, ANON)
    t.munmap(a + PAGE, PAGE)
    assert err(t.pkey_mprotect, a, 3 * PAGE, RW, k) == errno.ENOMEM
    assert t.smaps_pkey(a) == 1
    assert t.smaps_pkey(a + 2 * PAGE) == 0


@pytest.mark.parametrize("kernel", ["6.12", "7.2"])
def test_huge_pkey_mprotect_is_eacces_at_vvar_since_6_9(kernel):
    """Huge len from the first mmap: [vvar] refuses W, EACCES; the first VMA already re-keyed (observed c; SYS-MPROT-NONATOMIC)."""
    t = spawn(kernel=kernel)
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    assert err(t.pkey_mprotect, a, 2**40, RW, k) == errno.EACCES
    assert t.smaps_pkey(a) == 1
    assert t.smaps_pkey(VVAR_72) == 0


def test_huge_pkey_mprotect_is_enomem_on_6_1():
    """Huge len from the first mmap on 6.1: the hole above mmap_base gives ENOMEM (observed c)."""
    t = spawn(kernel="6.1")
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    assert a == FIRST_MMAP_61
    assert err(t.pkey_mprotect, a, 2**40, RW, k) == errno.ENOMEM
    assert t.smaps_pkey(a) == 1


# --- smaps ----------------------------------------------------------------------------


def test_stack_and_text_have_key_0():
    """ProtectionKey of stack and text is 0 (observed a)."""
    t = spawn()
    assert t.smaps_pkey(STACK_72) == 0
    assert t.smaps_pkey(PROG + PAGE) == 0


def test_smaps_has_one_protection_key_line_per_vma():
    """With pkeys enabled every VMA has a ProtectionKey line (PROC-SMAPS-LINE)."""
    t = spawn()
    t.mmap(0, PAGE, RW, ANON)
    text = t.smaps()
    headers = [line for line in text.splitlines() if line[:1] in "0123456789abcdef" and "-" in line]
    assert text.count("ProtectionKey:") == len(headers) == len(t.process.mm.vmas)


def test_smaps_protection_key_line_format():
    """The line is 'ProtectionKey:  %8u' (kernel notes §5)."""
    t = spawn()
    k = t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(a, PAGE, RW, k)
    assert "ProtectionKey:         1" in smaps_block(t, a)


def test_smaps_protection_key_line_comes_right_before_vmflags():
    """ProtectionKey comes after the size lines and immediately before VmFlags (PROC-SMAPS-LINE)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    block = smaps_block(t, a)
    i = next(i for i, line in enumerate(block) if line.startswith("ProtectionKey:"))
    assert block[i + 1].startswith("VmFlags:")
    assert block[1].startswith("Size:")


def test_smaps_without_pku_has_no_protection_key_line():
    """No PKU: no ProtectionKey line at all (PROC-SMAPS-LINE; observed z)."""
    t = spawn(pku=False)
    t.mmap(0, PAGE, RW, ANON)
    assert "ProtectionKey" not in t.smaps()
    assert t.smaps_pkey(STACK_72) is None


@pytest.mark.parametrize("pkey", [1, 5, 15])
def test_vmflags_never_show_the_key(pkey):
    """The key bits are hidden from VmFlags: a keyed RW anon VMA shows 'rd wr mr mw me ac ' (PROC-VMFLAGS-HIDES-KEY)."""
    t = spawn()
    for _ in range(pkey):
        t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(a, PAGE, RW, pkey)
    assert t.smaps_pkey(a) == pkey
    vmflags = [line for line in smaps_block(t, a) if line.startswith("VmFlags:")]
    assert vmflags == ["VmFlags: rd wr mr mw me ac "]


def test_smaps_header_of_anonymous_vma_ends_with_one_space():
    """An unnamed anon VMA's header is 'start-end rw-p 00000000 00:00 0 ' with one trailing space (kernel notes §5)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert smaps_block(t, a)[0] == f"{a:08x}-{a + PAGE:08x} rw-p 00000000 00:00 0 "


def test_smaps_header_of_named_vma_pads_name_to_column_73():
    """A named VMA's name starts at column 73 (seq_setwidth 72 + one space; kernel notes §5)."""
    t = spawn()
    header = smaps_block(t, STACK_72)[0]
    assert header.endswith("[stack]")
    assert header.index("[stack]") == 73


def test_mprotect_of_file_data_to_read_only_keeps_vm_account():
    """VM_ACCOUNT is dropped on W->R only for an *anonymous* VMA; /prog's data keeps 'ac' (kernel notes §3, mprotect_fixup)."""
    t = spawn()
    data = PROG + 2 * PAGE
    assert t.mprotect(data, PAGE, PROT_READ) == 0
    vmflags = [line for line in smaps_block(t, data) if line.startswith("VmFlags:")]
    assert vmflags == ["VmFlags: rd mr mw me ac "]


def test_never_faulted_anon_vma_drops_vm_account_on_w_to_r():
    """A private anon VMA without anon_vma loses VM_ACCOUNT when it stops being writable (kernel notes §3)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    t.mprotect(a, PAGE, PROT_READ)
    vmflags = [line for line in smaps_block(t, a) if line.startswith("VmFlags:")]
    assert vmflags == ["VmFlags: rd mr mw me "]


def test_faulted_anon_vma_keeps_vm_account_on_w_to_r():
    """A faulted RW anon VMA keeps 'ac' after mprotect(PROT_READ) (kernel notes §4)."""
    t = spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    t.store(a, 1)
    t.mprotect(a, PAGE, PROT_READ)
    vmflags = [line for line in smaps_block(t, a) if line.startswith("VmFlags:")]
    assert vmflags == ["VmFlags: rd mr mw me ac "]


def test_smaps_rss_counts_written_pages_not_the_zero_page():
    """Rss counts pages with memory of their own; a read of a never-written private
    page maps the shared zero page, which smaps does not count (do_anonymous_page)."""
    t = spawn()
    a = t.mmap(0, 4 * PAGE, RW, ANON)
    t.store(a, 1)
    t.load(a + 2 * PAGE)
    block = smaps_block(t, a)
    assert "Size:                 16 kB" in block
    assert "Rss:                   4 kB" in block
    t.store(a + 2 * PAGE, 1)                 # copy on write: now a page of its own
    assert "Rss:                   8 kB" in smaps_block(t, a)


def test_map_droppable_is_private_but_never_accounted():
    """6.11+: MAP_DROPPABLE maps like MAP_PRIVATE, with VM_NORESERVE, so no VM_ACCOUNT ("ac")
    in smaps even when writable (mm/mmap.c do_mmap); before 6.11 it is EINVAL.

    Facts: none (mmap's own rules).
    """
    from pkeyspec import MAP_DROPPABLE
    t = System(kernel="6.12").spawn()
    d = t.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS)
    p = t.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    flags = {v.start: v.flags for v in t.process.mm.vmas}
    from pkeyspec.mm import VM_ACCOUNT
    assert not flags[d] & VM_ACCOUNT and flags[p] & VM_ACCOUNT
    assert err(System(kernel="6.1").spawn().mmap, 0, PAGE, PROT_READ,
               MAP_DROPPABLE | MAP_ANONYMOUS) == errno.EINVAL


def test_smaps_of_an_address_space_with_nothing_mapped_is_empty():
    """munmap of the whole user range leaves no VMA (the stack included): /proc/self/smaps
    is then empty, and no address has a ProtectionKey line (before: smaps was "\\n" and
    smaps_pkey raised IndexError).

    Source: mm/vma.c ``do_vmi_munmap``; fs/proc/task_mmu.c (``show_smap`` once per VMA).
    """
    t = spawn()
    assert t.munmap(0, 0x7FFFFFFFF000) == 0
    assert t.process.mm.vmas == []
    assert t.smaps() == ""
    assert t.smaps_pkey(0x400000) is None

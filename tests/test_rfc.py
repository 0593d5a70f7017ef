"""The 2016 RFC system calls ``pkey_get(int pkey, unsigned long flags)`` and
``pkey_set(int pkey, unsigned long access_rights, unsigned long flags)``: never merged.

The reference is the posted patch ("pkeys-118-syscalls-set-get", March-June
2016: ``SYSCALL_DEFINE2(pkey_get)``, ``SYSCALL_DEFINE3(pkey_set)`` in
mm/mprotect.c, ``arch_get_user_pkey_access`` in arch/x86/kernel/fpu/xstate.c)
and its lockless version of 7 July 2016 ("pkeys-119-fast-set-get"), whose
test ``READ_ONCE(map) & (1U << pkey)`` decides what "allocated" means. Fact
IDs are in the docstrings.
"""

import errno

import pytest

from pkeyspec import (
    MAP_ANONYMOUS, MAP_PRIVATE, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE, PROT_EXEC, PROT_READ,
    PROT_WRITE, System, rfc,
)
from tests.helpers import err_of, bits

PAGE = 4096
AD = PKEY_DISABLE_ACCESS
WD = PKEY_DISABLE_WRITE


def spawn():
    return System(kernel="7.2", pku=True).spawn()




# --- flags -----------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [1, 2, 2**32, 2**63])
def test_nonzero_flags_einval_before_the_allocation_check(flags):
    """flags != 0: EINVAL, checked first (so also for a key that is not allocated).

    ``flags`` is an unsigned long: 2**32 is not truncated to 0.

    Facts: RFC-ERRNO, RFC-SIGNATURES.
    """
    t = spawn()
    k = t.pkey_alloc(0, 0)
    before = t.rdpkru()
    for key in (k, 9):
        assert err_of(rfc.pkey_get, t, key, flags) == errno.EINVAL
        assert err_of(rfc.pkey_set, t, key, AD, flags) == errno.EINVAL
        assert err_of(rfc.read_map, t, key, flags) == errno.EINVAL
    assert t.rdpkru() == before


# --- EBADF: not allocated -----------------------------------------------------------------

@pytest.mark.parametrize("key", [5, 15, 16, 17, 31, -1, 2**31 - 1, 37])
def test_key_whose_bit_is_clear_ebadf(key):
    """A key whose bit ``1U << key`` finds clear in the 16-bit map: EBADF (not EINVAL).

    16 to 31 are past the map's 16 bits; -1, 2**31 - 1 and 37 test bits 31, 31
    and 5 (x86-64 masks the shift count to 5 bits).

    Facts: RFC-ERRNO, ERR-TABLE.
    """
    t = spawn()
    before = t.rdpkru()
    assert err_of(rfc.pkey_get, t, key, 0) == errno.EBADF
    assert err_of(rfc.pkey_set, t, key, 0, 0) == errno.EBADF
    assert t.rdpkru() == before


@pytest.mark.parametrize("key", [32, -2**31, 2**31 - 32])
def test_out_of_range_key_whose_masked_bit_is_set_einval(key):
    """32, -2**31 and 2**31 - 32 test bit 0 (key 0, always set): past the map test, the
    rights helpers refuse a key that is not 0 to 15 with EINVAL; PKRU is untouched.

    Facts: RFC-ERRNO.
    """
    t = spawn()
    before = t.rdpkru()
    assert err_of(rfc.pkey_get, t, key, 0) == errno.EINVAL
    assert err_of(rfc.pkey_set, t, key, AD, 0) == errno.EINVAL
    assert t.rdpkru() == before


def test_freed_key_ebadf():
    """After pkey_free(k), pkey_get(k) and pkey_set(k) fail with EBADF.

    Facts: RFC-ERRNO, SYS-FREE-NO-INUSE-CHECK.
    """
    t = spawn()
    k = t.pkey_alloc(0, WD)
    assert rfc.pkey_get(t, k, 0) == WD
    assert t.pkey_free(k) == 0
    assert err_of(rfc.pkey_get, t, k, 0) == errno.EBADF
    assert err_of(rfc.pkey_set, t, k, 0, 0) == errno.EBADF


def test_exec_only_key_is_allocated_to_the_rfc():
    """The execute-only key's bit is set in the map, and the RFC's test has no exception for
    it (today's mm_pkey_is_allocated hides it): pkey_set can open execute-only memory.

    Facts: RFC-ERRNO, XO-X86-HIDDEN-KEY.
    """
    t = spawn()
    p = t.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert t.mprotect(p, PAGE, PROT_EXEC) == 0
    assert t.smaps_pkey(p) == 1
    assert err_of(t.pkey_free, 1) == errno.EINVAL
    assert rfc.pkey_get(t, 1, 0) == AD | WD
    assert rfc.pkey_set(t, 1, 0, 0) == 0
    assert bits(t.rdpkru(), 1) == 0
    assert t.load(p) == 0


def test_key_0_is_allocated_from_the_start():
    """Key 0 is set in a new mm's map, so pkey_get(0) answers (0: open).

    Facts: SYS-KEY0-PREALLOCATED, RFC-ERRNO.
    """
    t = spawn()
    assert rfc.pkey_get(t, 0, 0) == 0


def test_pkey_is_a_c_int():
    """``int pkey``: 2**32 + k is key k."""
    t = spawn()
    k = t.pkey_alloc(0, WD)
    assert rfc.pkey_get(t, 2**32 + k, 0) == WD


# --- what pkey_get returns -------------------------------------------------------------------

@pytest.mark.parametrize(("init", "expected"), [
    (0, 0),
    (WD, PKEY_DISABLE_WRITE),
    (AD | WD, PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE),
])
def test_pkey_get_returns_the_callers_rights(init, expected):
    """pkey_get returns the calling thread's rights for the key as PKEY_DISABLE_* bits.

    Facts: RFC-SIGNATURES.
    """
    t = spawn()
    k = t.pkey_alloc(0, init)
    assert rfc.pkey_get(t, k, 0) == expected


def test_pkey_get_of_an_access_disabled_key_reports_write_disabled_too():
    """PKRU AD alone reads back as PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE (3), not 1.

    The RFC's ``arch_get_user_pkey_access`` builds the answer from
    ``__pkru_allows_read`` (AD clear) and ``__pkru_allows_write`` (AD and
    WD clear: "Access-disable disables writes too"), so AD gives both bits.
    glibc's pkey_get, which returns the raw PKRU bits, answers 1.

    Facts: RFC-SIGNATURES, HW-X86-AD-WD-SEMANTICS, GLIBC-X86-GET. Source: the
    RFC patch, arch/x86/kernel/fpu/xstate.c ``arch_get_user_pkey_access``
    (``if (!__pkru_allows_read(pkru_reg, pkey)) ret |= PKEY_DISABLE_ACCESS;
    if (!__pkru_allows_write(pkru_reg, pkey)) ret |= PKEY_DISABLE_WRITE;``).
    """
    t = spawn()
    k = t.pkey_alloc(0, AD)
    assert bits(t.rdpkru(), k) == 0b01
    assert rfc.pkey_get(t, k, 0) == PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE


def test_pkey_get_answers_for_the_calling_thread_only():
    """Each thread gets its own rights; the key's owner does not matter.

    Facts: RFC-SIGNATURES, HW-X86-THREAD-LOCAL.
    """
    t = spawn()
    u = t.clone()
    k = t.pkey_alloc(0, WD)
    assert u.wrpkru(0) is None
    assert rfc.pkey_get(t, k, 0) == WD
    assert rfc.pkey_get(u, k, 0) == 0


# --- pkey_set ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("rights", "expected_bits"), [
    (0, 0b00), (AD, 0b01), (WD, 0b10), (AD | WD, 0b11),
    (0x4, 0b00), (0x5, 0b01), (0x6, 0b10), (2**63 | 0x3, 0b11), (0xFFFFFFFFFFFFFFFC, 0b00),
])
def test_pkey_set_takes_access_and_write_bits_and_ignores_the_rest(rights, expected_bits):
    """pkey_set writes AD for PKEY_DISABLE_ACCESS and WD for PKEY_DISABLE_WRITE; other bits
    of access_rights are not checked and have no effect (returns 0).

    Facts: RFC-NO-RIGHTS-MASK, SYS-ALLOC-X86-RIGHTS-MAP.
    """
    t = spawn()
    k = t.pkey_alloc(0, AD)
    before = t.rdpkru()
    assert rfc.pkey_set(t, k, rights, 0) == 0
    assert bits(t.rdpkru(), k) == expected_bits
    assert t.rdpkru() & ~(3 << (2 * k)) == before & ~(3 << (2 * k))


def test_pkey_set_changes_the_calling_thread_only_and_not_the_map():
    """Facts: RFC-NO-LOST-UPDATE (pkey_set only reads the map), THR-NO-REMOTE-SET."""
    t = spawn()
    u = t.clone()
    k = t.pkey_alloc(0, AD)
    the_map = t.process.mm.pkey_allocation_map
    assert rfc.pkey_set(u, k, 0, 0) == 0
    assert bits(u.rdpkru(), k) == 0
    assert bits(t.rdpkru(), k) == AD
    assert t.process.mm.pkey_allocation_map == the_map


# --- the stat() property: the map is read once, then PKRU ----------------------------------------

def test_get_after_free_and_realloc_between_the_steps_still_returns_rights():
    """Mel Gorman's interleaving: A reads the map (k allocated); B frees k and allocates
    again (gets k, for B's own data); A's pkey_get returns rights, no error.

    A success means only that k *was* allocated at some point during the call.

    Facts: RFC-STAT-ANALOGY, RACE-RFC-GET-STAT, RFC-LOCKLESS.
    """
    a = spawn()
    b = a.clone()
    k = a.pkey_alloc(0, WD)
    allocated = rfc.read_map(a, k, 0)
    assert allocated is True
    assert b.pkey_free(k) == 0
    assert b.pkey_alloc(0, 0) == k
    assert rfc.get_rights(a, k, allocated) == WD


def test_set_after_free_and_realloc_between_the_steps_opens_the_new_allocation():
    """The same race for pkey_set: A's pkey_set(k, 0) succeeds and opens B's new key k
    for A (A can now read B's page).

    Facts: RACE-RFC-GET-STAT, RACE-PKEY-UAF, RFC-STAT-ANALOGY.
    """
    a = spawn()
    b = a.clone()
    k = a.pkey_alloc(0, 0)
    allocated = rfc.read_map(a, k, 0)
    assert b.pkey_free(k) == 0
    assert b.pkey_alloc(0, 0) == k
    secret = b.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert b.pkey_mprotect(secret, PAGE, PROT_READ | PROT_WRITE, k) == 0
    assert b.store(secret, 0x42) is None
    assert a.wrpkru(a.rdpkru() | (1 << (2 * k))) is None
    assert rfc.set_rights(a, k, 0, allocated) == 0
    assert a.load(secret) == 0x42


def test_a_free_key_seen_by_the_first_step_is_ebadf_even_if_allocated_before_the_second():
    """The snapshot works the other way too: map read with k free, k allocated, then EBADF.

    Facts: RFC-LOCKLESS, RFC-STAT-ANALOGY.
    """
    a = spawn()
    allocated = rfc.read_map(a, 1, 0)
    assert allocated is False
    assert a.pkey_alloc(0, 0) == 1
    assert err_of(rfc.get_rights, a, 1, allocated) == errno.EBADF
    assert err_of(rfc.set_rights, a, 1, 0, allocated) == errno.EBADF

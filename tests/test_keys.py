"""pkey_alloc and pkey_free: the allocation map, the errors, the caller's PKRU."""

import errno

import pytest

from pkeyspec import (
    MAP_ANONYMOUS, MAP_PRIVATE, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE, PROT_READ, PROT_WRITE,
    SEGV_PKUERR, SIGSEGV, Killed, System,
)

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def anon(t, pages=1, prot=RW):
    return t.mmap(0, pages * PAGE, prot, ANON)


def err(call, *args):
    """The errno of a failing call (the call must fail)."""
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno


# --- allocation order -----------------------------------------------------------


def test_alloc_returns_1_to_15_then_enospc():
    """Keys come lowest first, 1..15, then ENOSPC: 15 user keys (SYS-ALLOC-LOWEST; observed b)."""
    t = System().spawn()
    assert [t.pkey_alloc(0, 0) for _ in range(15)] == list(range(1, 16))
    assert err(t.pkey_alloc, 0, 0) == errno.ENOSPC
    assert err(t.pkey_alloc, 0, PKEY_DISABLE_ACCESS) == errno.ENOSPC


def test_alloc_after_free_returns_the_freed_key():
    """free(5), then alloc: 5, the lowest free key (SYS-ALLOC-LOWEST; observed b)."""
    t = System().spawn()
    for _ in range(15):
        t.pkey_alloc(0, 0)
    assert t.pkey_free(5) == 0
    assert t.pkey_alloc(0, 0) == 5


def test_alloc_after_freeing_all_returns_1():
    """Free every key, then alloc: 1 (observed b)."""
    t = System().spawn()
    keys = [t.pkey_alloc(0, 0) for _ in range(15)]
    for k in keys:
        assert t.pkey_free(k) == 0
    assert t.pkey_alloc(0, 0) == 1


def test_alloc_lowest_hole_first():
    """With keys 1..4 allocated and 2 freed, the next key is 2, then 5 (SYS-ALLOC-LOWEST)."""
    t = System().spawn()
    for _ in range(4):
        t.pkey_alloc(0, 0)
    t.pkey_free(2)
    assert t.pkey_alloc(0, 0) == 2
    assert t.pkey_alloc(0, 0) == 5


# --- pkey_alloc errors and their order -----------------------------------------------


@pytest.mark.parametrize("flags, rights", [(1, 0), (0, 4), (0, 0x10), (0, 0xFFFFFFFF),
                                           (0, 0xFFFFFFFFFFFFFFFF), (2, 3), (0x80000000, 0)])
def test_alloc_bad_flags_or_rights_is_einval(flags, rights):
    """flags != 0 or rights outside 0x3: EINVAL (SYS-ALLOC-CHECK-ORDER, SYS-ALLOC-MASK; observed c)."""
    t = System().spawn()
    assert err(t.pkey_alloc, flags, rights) == errno.EINVAL


def test_alloc_rights_ad_wd_is_valid():
    """rights = AD|WD (3) is valid (observed c)."""
    t = System().spawn()
    assert t.pkey_alloc(0, PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE) == 1


def test_alloc_validation_comes_before_enospc():
    """With every key taken, bad flags or rights still give EINVAL, not ENOSPC (SYS-ALLOC-CHECK-ORDER)."""
    t = System().spawn()
    for _ in range(15):
        t.pkey_alloc(0, 0)
    assert err(t.pkey_alloc, 1, 0) == errno.EINVAL
    assert err(t.pkey_alloc, 0, 4) == errno.EINVAL
    assert err(t.pkey_alloc, 0, 0) == errno.ENOSPC


def test_failed_alloc_takes_no_key_and_leaves_pkru():
    """An EINVAL pkey_alloc allocates nothing and writes no PKRU (SYS-ALLOC-CHECK-ORDER)."""
    t = System().spawn()
    err(t.pkey_alloc, 1, 0)
    err(t.pkey_alloc, 0, 8)
    assert t.pkru == 0x55555554
    assert t.pkey_alloc(0, 0) == 1


def test_enospc_leaves_pkru():
    """ENOSPC writes no PKRU."""
    t = System().spawn()
    for _ in range(15):
        t.pkey_alloc(0, PKEY_DISABLE_ACCESS)
    t.wrpkru(0x12345678)
    err(t.pkey_alloc, 0, 0)
    assert t.pkru == 0x12345678


# --- rights land in the caller's PKRU only ---------------------------------------------


@pytest.mark.parametrize("rights, pkru", [
    (0, 0x55555550),
    (PKEY_DISABLE_WRITE, 0x55555558),
    (PKEY_DISABLE_ACCESS, 0x55555554),
    (PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE, 0x5555555C),
])
def test_alloc_writes_rights_into_callers_pkru(rights, pkru):
    """Key 1 bits become 00 / 10 / 01 / 11 for rights 0 / WD / AD / AD|WD (SYS-ALLOC-X86-RIGHTS-MAP; observed d)."""
    t = System().spawn()
    assert t.pkey_alloc(0, rights) == 1
    assert t.pkru == pkru


def test_alloc_rights_for_key_3():
    """The rights of key 3 land in bits 6 and 7: WD for key 3 turns 0x55555554 into 0x55555594."""
    t = System().spawn()
    t.pkey_alloc(0, 0)
    t.pkey_alloc(0, 0)
    assert t.pkru == 0x55555540
    assert t.pkey_alloc(0, PKEY_DISABLE_WRITE) == 3
    assert t.pkru == 0x55555580


def test_alloc_rights_not_written_into_other_threads():
    """pkey_alloc(0, 0) opens the key in the calling thread only (SYS-ALLOC-RIGHTS-CALLER-ONLY; observed g)."""
    t = System().spawn()
    other = t.clone()
    assert t.pkey_alloc(0, 0) == 1
    assert t.pkru == 0x55555550
    assert other.pkru == 0x55555554


def test_alloc_in_second_thread_changes_only_that_thread():
    """pkey_alloc in a thread sets bits only in that thread; main keeps 01 (observed g)."""
    t = System().spawn()
    other = t.clone()
    assert other.pkey_alloc(0, 0) == 1
    assert other.pkru == 0x55555550
    assert t.pkru == 0x55555554


def test_existing_thread_faults_on_new_key():
    """Another thread keeps AD for a key allocated later: its read gives SEGV_PKUERR si_pkey=2 (RACE-NEW-KEY-EXISTING-THREAD; observed g)."""
    t = System().spawn()
    other = t.clone()
    t.pkey_alloc(0, 0)
    k2 = t.pkey_alloc(0, 0)
    assert k2 == 2
    a = anon(t)
    t.pkey_mprotect(a, PAGE, RW, k2)
    assert t.store(a, 7) is None
    end = other.load(a)
    assert isinstance(end, Killed)
    assert (end.signo, end.siginfo.si_code, end.siginfo.si_pkey, end.siginfo.si_addr) == (
        SIGSEGV, SEGV_PKUERR, 2, a)


def test_realloc_overwrites_bits_set_with_wrpkru():
    """Re-allocating a key whose bits were changed overwrites them with the new rights (observed d)."""
    t = System().spawn()
    k = t.pkey_alloc(0, 0)
    t.pkey_free(k)
    t.wrpkru(0x5555555C)            # key 1: AD|WD
    assert t.pkey_alloc(0, 0) == 1
    assert t.pkru == 0x55555550


def test_alloc_keeps_other_keys_bits():
    """Only the two bits of the new key change; a hand-written PKRU keeps every other bit."""
    t = System().spawn()
    t.wrpkru(0xFFFFFFFC)
    assert t.pkey_alloc(0, 0) == 1
    assert t.pkru == 0xFFFFFFF0


# --- pkey_free --------------------------------------------------------------------


@pytest.mark.parametrize("pkey", [15, 16, -1, 100, -2147483648, 2147483647, 1])
def test_free_unallocated_or_out_of_range_is_einval(pkey):
    """free(15) unallocated, free(16), free(-1): EINVAL (SYS-FREE-ERRNO; observed c)."""
    t = System().spawn()
    assert err(t.pkey_free, pkey) == errno.EINVAL


def test_double_free_is_einval():
    """A second free of the same key: EINVAL (SYS-FREE-ERRNO; observed b)."""
    t = System().spawn()
    k = t.pkey_alloc(0, 0)
    assert t.pkey_free(k) == 0
    assert err(t.pkey_free, k) == errno.EINVAL


def test_free_leaves_pkru_unchanged():
    """pkey_free changes no PKRU (SEC-FREE-DOESNT-REVOKE; observed d)."""
    t = System().spawn()
    other = t.clone()
    k = t.pkey_alloc(0, PKEY_DISABLE_WRITE)
    assert t.pkru == 0x55555558
    t.pkey_free(k)
    assert t.pkru == 0x55555558
    assert other.pkru == 0x55555554


def test_free_of_key_in_use_succeeds_and_revokes_nothing():
    """free(k) with pages on k: 0; smaps still shows k; PKRU unchanged (SYS-FREE-NO-INUSE-CHECK; observed j)."""
    t = System().spawn()
    k = t.pkey_alloc(0, 0)
    a = anon(t)
    t.pkey_mprotect(a, PAGE, RW, k)
    t.store(a, 0x42)
    assert t.pkey_free(k) == 0
    assert t.smaps_pkey(a) == 1
    assert t.pkru == 0x55555550
    assert t.load(a) == 0x42


def test_pkey_mprotect_with_freed_key_is_einval():
    """pkey_mprotect with a freed key: EINVAL (observed j)."""
    t = System().spawn()
    k = t.pkey_alloc(0, 0)
    a = anon(t)
    t.pkey_free(k)
    assert err(t.pkey_mprotect, a, PAGE, RW, k) == errno.EINVAL


def test_realloc_of_freed_key_governs_old_pages():
    """Re-alloc with AD returns the same k; a read of the old k page faults (RACE-PKEY-UAF; observed j)."""
    t = System().spawn()
    k = t.pkey_alloc(0, 0)
    a = anon(t)
    t.pkey_mprotect(a, PAGE, RW, k)
    t.store(a, 1)
    t.pkey_free(k)
    assert t.pkey_alloc(0, PKEY_DISABLE_ACCESS) == k
    end = t.load(a)
    assert isinstance(end, Killed)
    assert (end.siginfo.si_code, end.siginfo.si_pkey, end.err) == (SEGV_PKUERR, 1, 0x25)


# --- key 0 ----------------------------------------------------------------------


def test_key0_is_preallocated_and_usable_without_alloc():
    """Key 0 is allocated at mm creation: pkey_mprotect(..., 0) works, alloc never returns 0 (SYS-KEY0-PREALLOCATED; observed c)."""
    t = System().spawn()
    a = anon(t)
    assert t.pkey_mprotect(a, PAGE, PROT_READ, 0) == 0
    assert 0 not in [t.pkey_alloc(0, 0) for _ in range(15)]


def test_free_key0_succeeds_then_alloc_returns_0():
    """pkey_free(0) is 0 and the next pkey_alloc returns 0 (SYS-FREE-KEY0; observed c, headline 1)."""
    t = System().spawn()
    assert t.pkey_free(0) == 0
    assert t.pkey_alloc(0, 0) == 0
    assert t.pkey_alloc(0, 0) == 1


def test_after_free_key0_pkey_mprotect_key0_is_einval_but_mprotect_works():
    """After pkey_free(0), pkey_mprotect(..., 0) is EINVAL; plain mprotect still works (SYS-FREE-KEY0; observed c)."""
    t = System().spawn()
    a = anon(t)
    t.pkey_free(0)
    assert err(t.pkey_mprotect, a, PAGE, PROT_READ, 0) == errno.EINVAL
    assert t.mprotect(a, PAGE, PROT_READ) == 0
    assert t.pkey_mprotect(a, PAGE, RW, -1) == 0


def test_after_free_key0_realloc_makes_key0_attachable_again():
    """Once pkey_alloc returned 0 again, pkey_mprotect(..., 0) succeeds (SYS-FREE-KEY0)."""
    t = System().spawn()
    a = anon(t)
    t.pkey_free(0)
    assert t.pkey_alloc(0, 0) == 0
    assert t.pkey_mprotect(a, PAGE, PROT_READ, 0) == 0


def test_free_key0_does_not_touch_pkru():
    """pkey_free(0) leaves PKRU alone; key 0 stays open (SEC-FREE-DOESNT-REVOKE)."""
    t = System().spawn()
    t.pkey_free(0)
    assert t.pkru == 0x55555554
    assert t.load(0x402000) == 0


def test_realloc_key0_with_ad_denies_key0_pages():
    """pkey_alloc(0, AD) after pkey_free(0) returns 0 and sets AD for key 0: a key-0 read faults si_pkey=0."""
    t = System().spawn()
    t.pkey_free(0)
    assert t.pkey_alloc(0, PKEY_DISABLE_ACCESS) == 0
    assert t.pkru == 0x55555555
    end = t.load(0x402000)
    assert isinstance(end, Killed)
    assert (end.siginfo.si_code, end.siginfo.si_pkey) == (SEGV_PKUERR, 0)


# --- argument types ------------------------------------------------------------------


def test_free_2_pow_32_plus_1_frees_key_1():
    """pkey_free takes an int: 2**32+1 is key 1 (SYS-SIGNATURES)."""
    t = System().spawn()
    t.pkey_alloc(0, 0)
    assert t.pkey_free(2**32 + 1) == 0
    assert err(t.pkey_free, 1) == errno.EINVAL
    assert t.pkey_alloc(0, 0) == 1


def test_free_2_pow_32_frees_key_0():
    """pkey_free(2**32) is pkey_free(0) (SYS-SIGNATURES, SYS-FREE-KEY0)."""
    t = System().spawn()
    assert t.pkey_free(2**32) == 0
    assert t.pkey_alloc(0, 0) == 0


def test_free_0xffffffff_is_minus_1_einval():
    """pkey_free(0xFFFFFFFF) is pkey_free(-1): EINVAL (SYS-SIGNATURES, SYS-FREE-ERRNO)."""
    t = System().spawn()
    assert err(t.pkey_free, 0xFFFFFFFF) == errno.EINVAL


def test_alloc_flags_2_pow_64_is_flags_0():
    """flags is an unsigned long: 2**64 wraps to 0 and the call succeeds (SYS-SIGNATURES)."""
    t = System().spawn()
    assert t.pkey_alloc(2**64, 0) == 1


def test_alloc_flags_2_pow_32_is_einval():
    """flags is 64 bits wide in the syscall: 2**32 is not 0, EINVAL (SYS-SIGNATURES)."""
    t = System().spawn()
    assert err(t.pkey_alloc, 2**32, 0) == errno.EINVAL


def test_alloc_rights_wrap_mod_2_pow_64():
    """init_val is an unsigned long: 2**64+1 is PKEY_DISABLE_ACCESS; 2**32 is EINVAL (SYS-SIGNATURES)."""
    t = System().spawn()
    assert t.pkey_alloc(0, 2**64 + 1) == 1
    assert t.pkru == 0x55555554
    assert err(t.pkey_alloc, 0, 2**32) == errno.EINVAL


def test_alloc_negative_rights_is_einval():
    """rights -1 is 0xFFFFFFFFFFFFFFFF: EINVAL (SYS-ALLOC-CHECK-ORDER)."""
    t = System().spawn()
    assert err(t.pkey_alloc, 0, -1) == errno.EINVAL


# --- fork and the allocation map ---------------------------------------------------------


def test_fork_copies_allocation_map_then_independent():
    """Child: pkey_mprotect(k), free(k), alloc, alloc -> 0, 0, 1, 2; parent: free(k), alloc -> 0, 1 (FORK-COPIES-MAP; observed h)."""
    t = System().spawn()
    k = t.pkey_alloc(0, 0)
    a = anon(t)
    child = t.fork()
    assert child.pkey_mprotect(a, PAGE, RW, k) == 0
    assert child.pkey_free(k) == 0
    assert child.pkey_alloc(0, 0) == 1
    assert child.pkey_alloc(0, 0) == 2
    assert t.pkey_free(k) == 0
    assert t.pkey_alloc(0, 0) == 1


def test_fork_keeps_exhaustion():
    """A child forked after 15 allocations also gets ENOSPC (FORK-COPIES-MAP)."""
    t = System().spawn()
    for _ in range(15):
        t.pkey_alloc(0, 0)
    child = t.fork()
    assert err(child.pkey_alloc, 0, 0) == errno.ENOSPC


def test_fork_after_free_key0_child_can_alloc_0():
    """The child inherits a map without key 0: its first alloc returns 0 (FORK-COPIES-MAP, SYS-FREE-KEY0)."""
    t = System().spawn()
    t.pkey_free(0)
    child = t.fork()
    assert child.pkey_alloc(0, 0) == 0


# --- without PKU ---------------------------------------------------------------------


def test_alloc_without_pku_is_enospc():
    """No-PKU CPU: pkey_alloc(0,0) and (0,AD) give ENOSPC (SYS-X86-DISABLED as corrected; observed z)."""
    t = System(pku=False).spawn()
    assert err(t.pkey_alloc, 0, 0) == errno.ENOSPC
    assert err(t.pkey_alloc, 0, PKEY_DISABLE_ACCESS) == errno.ENOSPC


def test_alloc_without_pku_bad_args_still_einval():
    """No-PKU CPU: pkey_alloc(1,0) and (0,4) give EINVAL (observed z)."""
    t = System(pku=False).spawn()
    assert err(t.pkey_alloc, 1, 0) == errno.EINVAL
    assert err(t.pkey_alloc, 0, 4) == errno.EINVAL


def test_free_key0_without_pku_is_einval():
    """No-PKU CPU: pkey_free(0) is EINVAL (SYS-X86-DISABLED; observed z)."""
    t = System(pku=False).spawn()
    assert err(t.pkey_free, 0) == errno.EINVAL
    assert err(t.pkey_free, 1) == errno.EINVAL


def test_pkey_mprotect_without_pku():
    """No-PKU CPU: pkey_mprotect key 0 is EINVAL, key -1 is 0 (SYS-X86-DISABLED; observed z)."""
    t = System(pku=False).spawn()
    a = anon(t)
    assert err(t.pkey_mprotect, a, PAGE, PROT_READ, 0) == errno.EINVAL
    assert err(t.pkey_mprotect, a, PAGE, PROT_READ, 1) == errno.EINVAL
    assert t.pkey_mprotect(a, PAGE, PROT_READ, -1) == 0


def test_alloc_without_pku_leaves_pkru_and_frees_nothing():
    """No-PKU CPU: pkey_alloc never changes the thread's PKRU value and never makes key 0 freeable."""
    t = System(pku=False).spawn()
    before = t.pkru
    for _ in range(3):
        with pytest.raises(OSError):
            t.pkey_alloc(0, 0)
    assert t.pkru == before
    assert err(t.pkey_free, 0) == errno.EINVAL


# --- without PKU, before "x86/pkeys: Fix pkey_alloc() return value when pkeys are not supported"

@pytest.mark.parametrize(("kernel", "fixed"), [
    ("6.1.187", False), ("6.1.188", True), ("6.1", True),
    ("6.12.109", False), ("6.12.110", True), ("6.12", True),
    ("7.2.12", False), ("7.2.13", True), ("7.2", True), ("7.3", True), ("7.3.1", True),
    ("6.6", False), ("7.1", False), ("5.15", False),
])
def test_alloc_enabled_check_boundary(kernel, fixed):
    """mm_pkey_alloc returns -1 without OSPKE from 7.3 and the stable releases with the fix
    (6.1.188, 6.12.110, 7.2.13); a bare series counts as its newest release."""
    from pkeyspec import keys
    assert keys.mm_pkey_alloc_checks_enabled(System(kernel=kernel, pku=False)) is fixed


@pytest.mark.parametrize("kernel", ["6.1.187", "6.12.107"])
def test_alloc_without_pku_before_the_fix_einval_once_and_leaks_key0(kernel):
    """Before the fix the first call takes key 0, fails in arch_set_user_pkey_access (EINVAL)
    and the rollback is refused (key 0 == the zeroed execute_only_pkey): bit 0 stays set,
    later calls and a forked child's first call give ENOSPC, pkey_free(0) stays EINVAL.

    Observed on 6.1.187 and 6.12.107 without PKU (z_first_call_alloc_without_pku,
    i_exec_then_first_pkey_alloc, z_failed_alloc_then_fork). Facts: SYS-X86-DISABLED.
    """
    t = System(kernel=kernel, pku=False).spawn()
    assert err(t.pkey_alloc, 0, 0) == errno.EINVAL
    assert t.process.mm.pkey_allocation_map == 1
    assert err(t.pkey_alloc, 0, PKEY_DISABLE_ACCESS) == errno.ENOSPC
    assert err(t.fork().pkey_alloc, 0, 0) == errno.ENOSPC
    assert err(t.pkey_free, 0) == errno.EINVAL
    fresh = System(kernel=kernel, pku=False).spawn()
    assert err(fresh.fork().pkey_alloc, 0, 0) == errno.EINVAL


def test_alloc_with_pku_ignores_the_fix():
    """With OSPKE the new first line of mm_pkey_alloc never fires: keys 1.. on every version."""
    for kernel in ("6.1.187", "6.1.192"):
        assert System(kernel=kernel).spawn().pkey_alloc(0, 0) == 1

"""Execute-only memory on x86: the hidden key a plain mprotect(PROT_EXEC) takes (XO-X86-*)."""

import errno

import pytest

from pkeyspec import (
    MAP_ANONYMOUS, MAP_PRIVATE, PKEY_DISABLE_ACCESS, PROT_EXEC, PROT_NONE, PROT_READ, PROT_SEM,
    PROT_WRITE, SEGV_PKUERR, SIGSEGV, Killed, System,
)

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
VVAR_72 = 0x7FFFF7FF9000


def err(call, *args):
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno


def code_page(t, byte=0xB8):
    """An RW page holding ``byte`` at its start (like the mov opcode of the observed test)."""
    a = t.mmap(0, PAGE, RW, ANON)
    t.store(a, byte)
    return a


def assert_pkuerr(end, addr, pkey, err_code=None):
    assert isinstance(end, Killed), end
    assert (end.signo, end.siginfo.si_code, end.siginfo.si_addr, end.siginfo.si_pkey) == (
        SIGSEGV, SEGV_PKUERR, addr, pkey)
    if err_code is not None:
        assert end.err == err_code


# --- the implicit key -----------------------------------------------------------------


def test_mprotect_exec_takes_lowest_free_key():
    """mprotect(PROT_EXEC) on an RW page: 0, smaps ProtectionKey 1 (XO-X86-IMPLICIT; observed k)."""
    t = System().spawn()
    a = code_page(t)
    assert t.mprotect(a, PAGE, PROT_EXEC) == 0
    assert t.smaps_pkey(a) == 1


def test_exec_only_page_executes_but_read_faults():
    """The page executes; a read gives SEGV_PKUERR si_pkey=1, err 0x25 (XO-X86-IMPLICIT, HW-X86-DATA-ONLY; observed k)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.execute(a) == 0xB8
    assert_pkuerr(t.load(a), a, 1, 0x25)


def test_exec_only_key_is_lowest_free_not_always_1():
    """With keys 1 and 2 allocated, the execute-only key is 3 (SYS-ALLOC-LOWEST, XO-X86-IMPLICIT)."""
    t = System().spawn()
    t.pkey_alloc(0, 0)
    t.pkey_alloc(0, 0)
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.smaps_pkey(a) == 3


def test_exec_only_key_is_hidden_from_pkey_free_and_pkey_mprotect():
    """pkey_free and pkey_mprotect with the exec-only key: EINVAL (XO-X86-HIDDEN-KEY; observed k)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert err(t.pkey_free, 1) == errno.EINVAL
    b = t.mmap(0, PAGE, RW, ANON)
    assert err(t.pkey_mprotect, b, PAGE, RW, 1) == errno.EINVAL
    assert err(t.pkey_mprotect, b, PAGE, PROT_EXEC, 1) == errno.EINVAL


def test_exec_only_key_leaves_14_user_keys():
    """After the exec-only key, pkey_alloc returns 2..15 then ENOSPC: 14 user keys (XO-X86-HIDDEN-KEY; observed k)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert [t.pkey_alloc(0, 0) for _ in range(14)] == list(range(2, 16))
    assert err(t.pkey_alloc, 0, 0) == errno.ENOSPC


def test_second_exec_only_request_reuses_the_key():
    """2nd mprotect(PROT_EXEC), mmap(PROT_EXEC), pkey_mprotect(PROT_EXEC, -1): same key 1 (observed k)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    b = code_page(t)
    t.mprotect(b, PAGE, PROT_EXEC)
    c = t.mmap(0, PAGE, PROT_EXEC, ANON)
    d = code_page(t)
    t.pkey_mprotect(d, PAGE, PROT_EXEC, -1)
    assert [t.smaps_pkey(x) for x in (a, b, c, d)] == [1, 1, 1, 1]
    assert t.pkey_alloc(0, 0) == 2


def test_mmap_prot_exec_takes_exec_only_key():
    """mmap(PROT_EXEC) takes the exec-only key (SYS-MMAP-DEFAULT-KEY; observed k)."""
    t = System().spawn()
    a = t.mmap(0, PAGE, PROT_EXEC, ANON)
    assert t.smaps_pkey(a) == 1
    assert t.execute(a) == 0
    assert_pkuerr(t.load(a), a, 1)


@pytest.mark.parametrize("prot", [PROT_EXEC | PROT_READ, PROT_EXEC | PROT_SEM, PROT_EXEC | PROT_WRITE])
def test_only_exactly_prot_exec_takes_the_key(prot):
    """prot must be exactly PROT_EXEC: X|R, X|SEM, X|W keep key 0 and take no key (XO-X86-IMPLICIT)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, prot)
    assert t.smaps_pkey(a) == 0
    assert t.pkey_alloc(0, 0) == 1


def test_prev_key_does_not_matter():
    """A VMA on user key 1 moves to the exec-only key 2 on mprotect(PROT_EXEC) (XO-X86-PREV-KEY)."""
    t = System().spawn()
    k = t.pkey_alloc(0, 0)
    a = code_page(t)
    t.pkey_mprotect(a, PAGE, RW, k)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.smaps_pkey(a) == 2


# --- PKRU: caller only, set again, shortcut -------------------------------------------------


def test_mprotect_exec_sets_ad_in_caller_that_allowed_the_key():
    """Caller PKRU 0x0 becomes 0x4: AD for key 1 (XO-X86-IMPLICIT; observed k)."""
    t = System().spawn()
    a = code_page(t)
    t.wrpkru(0)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.pkru == 0x4


def test_ad_is_set_only_in_the_caller():
    """Another thread (PKRU 0) keeps PKRU 0 and reads the exec-only page (RACE-XO-OTHER-THREAD; observed k3)."""
    t = System().spawn()
    other = t.clone()
    other.wrpkru(0)
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert other.pkru == 0
    assert other.load(a) == 0xB8
    assert_pkuerr(t.load(a), a, 1)


def test_thread_cloned_after_mprotect_inherits_ad():
    """A thread cloned after mprotect(PROT_EXEC) inherits the caller's AD and faults (THR-CLONE-INHERITS)."""
    t = System().spawn()
    t.wrpkru(0)
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    late = t.clone()
    assert late.pkru == 0x4
    assert_pkuerr(late.load(a), a, 1)


def test_clearing_ad_in_pkru_makes_page_readable():
    """Clear AD of the exec-only key in PKRU: the page is readable (observed k)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    t.wrpkru(0x55555550)
    assert t.load(a) == 0xB8


def test_mprotect_exec_sets_ad_again_when_caller_cleared_it():
    """Caller cleared AD (0x55555550): the next mprotect(PROT_EXEC) makes it 0x55555554 again (XO-X86-PKRU-SHORTCUT; observed k)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    t.wrpkru(0x55555550)
    b = code_page(t)
    t.mprotect(b, PAGE, PROT_EXEC)
    assert t.pkru == 0x55555554


def test_mprotect_exec_replaces_wd_only_with_ad():
    """Key 1 with WD only still allows reads: the kernel writes AD, clearing WD: 0x55555558 -> 0x55555554 (XO-X86-PKRU-SHORTCUT)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    t.wrpkru(0x55555558)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.pkru == 0x55555554


def test_shortcut_no_pkru_write_when_already_ad():
    """Key 1 already AD|WD: mprotect(PROT_EXEC) leaves PKRU 0x5555555C alone (XO-X86-PKRU-SHORTCUT)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    t.wrpkru(0x5555555C)
    b = code_page(t)
    t.mprotect(b, PAGE, PROT_EXEC)
    assert t.pkru == 0x5555555C


def test_first_allocation_writes_ad_even_over_ad_wd():
    """On first allocation the key's bits are written unconditionally: AD|WD (0x5555555C) becomes AD (0x55555554)."""
    t = System().spawn()
    t.wrpkru(0x5555555C)
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.pkru == 0x55555554


def test_later_mprotect_exec_does_not_touch_other_threads():
    """A later mprotect(PROT_EXEC) still updates only the caller (RACE-XO-OTHER-THREAD)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    other = t.clone()
    other.wrpkru(0x55555550)
    t.wrpkru(0x55555550)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert (t.pkru, other.pkru) == (0x55555554, 0x55555550)


def test_mmap_prot_exec_sets_ad_in_caller():
    """mmap(PROT_EXEC) writes AD for the exec-only key into the caller's PKRU (XO-X86-IMPLICIT)."""
    t = System().spawn()
    t.wrpkru(0)
    t.mmap(0, PAGE, PROT_EXEC, ANON)
    assert t.pkru == 0x4


# --- leaving execute-only, explicit keys -----------------------------------------------------


@pytest.mark.parametrize("prot", [PROT_READ, PROT_NONE, RW, PROT_READ | PROT_EXEC])
def test_leaving_exec_only_returns_to_key_0(prot):
    """mprotect to anything but PROT_EXEC moves an exec-only VMA back to key 0 (XO-X86-REVERT; observed k)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    t.mprotect(a, PAGE, prot)
    assert t.smaps_pkey(a) == 0


def test_prot_none_then_read_exec_is_readable():
    """PROT_EXEC, then PROT_NONE, then PROT_READ|PROT_EXEC: readable (XO-X86-REVERT; selftest)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    t.mprotect(a, PAGE, PROT_NONE)
    t.mprotect(a, PAGE, PROT_READ | PROT_EXEC)
    assert t.load(a) == 0xB8


def test_reverting_does_not_give_back_the_key():
    """The exec-only key stays taken after every exec-only VMA went back to key 0 (XO-X86-HIDDEN-KEY)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    t.mprotect(a, PAGE, RW)
    assert err(t.pkey_free, 1) == errno.EINVAL
    assert t.pkey_alloc(0, 0) == 2


def test_explicit_key_wins_over_exec_only():
    """pkey_mprotect(PROT_EXEC, k) keeps k, readable if k allows; no hidden key taken (SYS-MPROT-EXPLICIT-WINS, XO-EXPLICIT-KEY-READABLE; observed k)."""
    t = System().spawn()
    k = t.pkey_alloc(0, 0)
    a = code_page(t)
    t.pkey_mprotect(a, PAGE, PROT_EXEC, k)
    assert t.smaps_pkey(a) == 1
    assert t.load(a) == 0xB8
    assert t.pkey_alloc(0, 0) == 2


def test_explicit_key_0_with_prot_exec():
    """pkey_mprotect(PROT_EXEC, 0) keeps key 0 and the page readable (SYS-MPROT-EXPLICIT-WINS)."""
    t = System().spawn()
    a = code_page(t)
    t.pkey_mprotect(a, PAGE, PROT_EXEC, 0)
    assert t.smaps_pkey(a) == 0
    assert t.load(a) == 0xB8
    assert t.pkey_alloc(0, 0) == 1


def test_explicit_exec_key_is_kept_by_plain_mprotect():
    """A PROT_EXEC VMA on user key k is not exec-only: mprotect(PROT_READ) keeps k (XO-X86-REVERT, SYS-MPROT-NEG1)."""
    t = System().spawn()
    k = t.pkey_alloc(0, 0)
    a = code_page(t)
    t.pkey_mprotect(a, PAGE, PROT_EXEC, k)
    t.mprotect(a, PAGE, PROT_READ)
    assert t.smaps_pkey(a) == k


# --- running out of keys ------------------------------------------------------------------


def test_silent_fallback_when_all_keys_allocated():
    """All 15 keys allocated: mprotect(PROT_EXEC) is 0, the VMA keeps key 0 and stays readable (XO-X86-SILENT-FALLBACK)."""
    t = System().spawn()
    for _ in range(15):
        t.pkey_alloc(0, 0)
    pkru = t.pkru
    a = code_page(t)
    assert t.mprotect(a, PAGE, PROT_EXEC) == 0
    assert t.smaps_pkey(a) == 0
    assert t.load(a) == 0xB8
    assert t.execute(a) == 0xB8
    assert t.pkru == pkru


def test_silent_fallback_keeps_a_user_key():
    """No free key: a VMA on user key 3 keeps key 3 on mprotect(PROT_EXEC) (XO-X86-SILENT-FALLBACK)."""
    t = System().spawn()
    for _ in range(15):
        t.pkey_alloc(0, 0)
    a = code_page(t)
    t.pkey_mprotect(a, PAGE, RW, 3)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.smaps_pkey(a) == 3


def test_mmap_prot_exec_fallback_is_key_0():
    """No free key: mmap(PROT_EXEC) gets key 0 (SYS-MMAP-DEFAULT-KEY, XO-X86-SILENT-FALLBACK)."""
    t = System().spawn()
    for _ in range(15):
        t.pkey_alloc(0, 0)
    a = t.mmap(0, PAGE, PROT_EXEC, ANON)
    assert t.smaps_pkey(a) == 0
    assert t.load(a) == 0


def test_exec_only_after_a_key_is_freed():
    """After the fallback, freeing key 7 lets the next mprotect(PROT_EXEC) take key 7 (SYS-ALLOC-LOWEST)."""
    t = System().spawn()
    for _ in range(15):
        t.pkey_alloc(0, 0)
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    t.pkey_free(7)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.smaps_pkey(a) == 7
    assert err(t.pkey_free, 7) == errno.EINVAL


# --- when is the key taken ------------------------------------------------------------------


def test_failed_mmap_prot_exec_still_takes_the_key():
    """do_mmap takes the exec-only key before checking the map type: EINVAL, yet key 1 is gone (kernel notes §9)."""
    t = System().spawn()
    assert err(t.mmap, 0, PAGE, PROT_EXEC, MAP_ANONYMOUS) == errno.EINVAL
    assert t.pkey_alloc(0, 0) == 2


def test_mmap_prot_exec_len_0_takes_no_key():
    """len 0 fails before the exec-only key is looked at (kernel notes §9)."""
    t = System().spawn()
    assert err(t.mmap, 0, 0, PROT_EXEC, ANON) == errno.EINVAL
    assert t.pkey_alloc(0, 0) == 1


def test_eacces_mprotect_exec_still_takes_the_key():
    """mprotect([vvar], PROT_EXEC): the key is chosen before the VM_MAY* check, so EACCES and key 1 taken (kernel notes §3)."""
    t = System().spawn()
    t.wrpkru(0)
    assert err(t.mprotect, VVAR_72, PAGE, PROT_EXEC) == errno.EACCES
    assert t.pkru == 0x4
    assert t.pkey_alloc(0, 0) == 2


def test_enomem_mprotect_exec_takes_no_key():
    """mprotect(PROT_EXEC) of an unmapped range fails before the VMA loop: no key taken (SYS-MPROT-CHECK-ORDER)."""
    t = System().spawn()
    t.wrpkru(0)
    assert err(t.mprotect, 0x30000000, PAGE, PROT_EXEC) == errno.ENOMEM
    assert t.pkru == 0
    assert t.pkey_alloc(0, 0) == 1


# --- pkey_free(0) then mprotect(PROT_EXEC) ------------------------------------------------


def test_free_key0_then_mprotect_exec_takes_key_0_as_exec_only_key():
    """After pkey_free(0), __execute_only_pkey gets ffz = 0, sets AD for key 0 in the caller and records 0;
    __arch_override_mprotect_pkey only uses a key > 0, so the VMA keeps key 0 (arch/x86/mm/pkeys.c, kernel notes §2)."""
    t = System().spawn()
    a = code_page(t)
    assert t.pkey_free(0) == 0
    assert t.mprotect(a, PAGE, PROT_EXEC) == 0
    assert t.pkru == 0x55555555
    assert t.smaps_pkey(a) == 0
    assert t.execute(a) == 0xB8


def test_free_key0_then_mprotect_exec_hides_key_0():
    """Key 0 is now the execute-only key: pkey_free(0) and pkey_mprotect(..., 0) are EINVAL, pkey_alloc returns 1 (kernel notes §1-2)."""
    t = System().spawn()
    a = code_page(t)
    t.pkey_free(0)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert err(t.pkey_free, 0) == errno.EINVAL
    assert err(t.pkey_mprotect, a, PAGE, RW, 0) == errno.EINVAL
    assert t.pkey_alloc(0, 0) == 1


def test_free_key0_then_mprotect_exec_caller_loses_key_0_data():
    """The caller's PKRU now has AD for key 0: its reads of key-0 memory fault with si_pkey 0; another thread reads."""
    t = System().spawn()
    other = t.clone()
    a = code_page(t)
    t.pkey_free(0)
    t.mprotect(a, PAGE, PROT_EXEC)
    b = 0x402000                        # /prog data, key 0
    assert other.load(b) == 0
    assert other.pkru == 0x55555554
    assert_pkuerr(t.load(b), b, 0, 0x25)      # the other thread populated the page


def test_free_key0_then_second_mprotect_exec_shortcut():
    """Key 0 is recorded as the exec-only key: a later mprotect(PROT_EXEC) with key 0 AD writes nothing."""
    t = System().spawn()
    a = code_page(t)
    t.pkey_free(0)
    t.mprotect(a, PAGE, PROT_EXEC)
    t.wrpkru(0x55555557)                # key 0 AD|WD
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.pkru == 0x55555557


# --- fork and no PKU --------------------------------------------------------------------------


def test_fork_copies_exec_only_key():
    """The child inherits the exec-only key: pkey_free(1) EINVAL, first alloc 2 (FORK-COPIES-MAP)."""
    t = System().spawn()
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    child = t.fork()
    assert err(child.pkey_free, 1) == errno.EINVAL
    assert child.pkey_alloc(0, 0) == 2
    assert child.smaps_pkey(a) == 1
    assert_pkuerr(child.load(a), a, 1)


def test_no_pku_mprotect_exec_stays_readable():
    """Without PKU there is no exec-only key: PROT_EXEC pages are readable (XO-X86-IMPLICIT needs OSPKE)."""
    t = System(pku=False).spawn()
    a = code_page(t)
    assert t.mprotect(a, PAGE, PROT_EXEC) == 0
    assert t.load(a) == 0xB8
    assert t.execute(a) == 0xB8


def test_pkey_alloc_ad_then_mprotect_exec_uses_next_key():
    """A user key allocated with AD is not the exec-only key: exec-only takes 2 (XO-X86-HIDDEN-KEY)."""
    t = System().spawn()
    assert t.pkey_alloc(0, PKEY_DISABLE_ACCESS) == 1
    a = code_page(t)
    t.mprotect(a, PAGE, PROT_EXEC)
    assert t.smaps_pkey(a) == 2

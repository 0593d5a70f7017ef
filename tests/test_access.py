"""Loads, stores, fetches, RDPKRU/WRPKRU, and the signals Linux turns faults into."""

import errno

import pytest

from pkeyspec import (
    ILL_ILLOPN, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE,
    PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, SEGV_ACCERR, SEGV_MAPERR, SEGV_PKUERR, SI_KERNEL,
    SA_NODEFER, SIGILL, SIGSEGV, SIGUSR1, Exited, Killed, Livelock, Siginfo, System,
)

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def keyed_page(t, rights, prot=RW, populate=True, value=0x5A):
    """A page on a fresh key allocated with ``rights``; touched first (PTE present) when ``populate``."""
    k = t.pkey_alloc(0, rights)
    a = t.mmap(0, PAGE, RW, ANON)
    if populate:
        t.store(a, value)               # still key 0 here
    t.pkey_mprotect(a, PAGE, prot, k)
    return k, a


def assert_killed(end, signo, code, addr, pkey=None, err=None):
    assert isinstance(end, Killed), end
    assert end.signo == signo
    assert end.siginfo.si_signo == signo
    assert end.siginfo.si_code == code
    assert end.siginfo.si_addr == addr
    if pkey is not None:
        assert end.siginfo.si_pkey == pkey
    if err is not None:
        assert end.err == err


# --- SEGV_PKUERR -------------------------------------------------------------------


def test_ad_read_of_populated_page_is_pkuerr_0x25():
    """AD + read (populated): SIGSEGV SEGV_PKUERR, si_pkey=k, si_addr exact, err=0x25 (ERR-SIGINFO; observed e)."""
    t = System().spawn()
    k, a = keyed_page(t, PKEY_DISABLE_ACCESS)
    assert_killed(t.load(a + 123), SIGSEGV, SEGV_PKUERR, a + 123, pkey=k, err=0x25)


def test_ad_read_of_never_touched_page_is_pkuerr_0x4():
    """AD + read (never touched): SEGV_PKUERR, si_pkey=k, err=0x4 without PK (HW-X86-PK-NEEDS-PRESENT; observed e)."""
    t = System().spawn()
    k, a = keyed_page(t, PKEY_DISABLE_ACCESS, populate=False)
    assert_killed(t.load(a), SIGSEGV, SEGV_PKUERR, a, pkey=k, err=0x4)


def test_ad_write_is_pkuerr_0x27():
    """AD + write: SEGV_PKUERR err=0x27 (HW-X86-AD-WD-SEMANTICS; observed e)."""
    t = System().spawn()
    k, a = keyed_page(t, PKEY_DISABLE_ACCESS)
    assert_killed(t.store(a + 8, 1), SIGSEGV, SEGV_PKUERR, a + 8, pkey=k, err=0x27)


def test_ad_write_never_touched_is_pkuerr_0x6():
    """AD + write to a never-touched page: SEGV_PKUERR err=0x6 (HW-X86-PK-NEEDS-PRESENT)."""
    t = System().spawn()
    k, a = keyed_page(t, PKEY_DISABLE_ACCESS, populate=False)
    assert_killed(t.store(a, 1), SIGSEGV, SEGV_PKUERR, a, pkey=k, err=0x6)


def test_wd_read_succeeds():
    """WD + read: ok (HW-X86-AD-WD-SEMANTICS; observed e)."""
    t = System().spawn()
    _, a = keyed_page(t, PKEY_DISABLE_WRITE)
    assert t.load(a) == 0x5A
    assert t.alive


def test_wd_write_is_pkuerr_0x27():
    """WD + write (populated): SEGV_PKUERR err=0x27 (observed e)."""
    t = System().spawn()
    k, a = keyed_page(t, PKEY_DISABLE_WRITE)
    assert_killed(t.store(a, 1), SIGSEGV, SEGV_PKUERR, a, pkey=k, err=0x27)


def test_wd_write_never_touched_is_pkuerr_0x6():
    """WD + write (never-touched page): SEGV_PKUERR err=0x6 (observed e)."""
    t = System().spawn()
    k, a = keyed_page(t, PKEY_DISABLE_WRITE, populate=False)
    assert_killed(t.store(a, 1), SIGSEGV, SEGV_PKUERR, a, pkey=k, err=0x6)


def test_read_only_page_wd_key_write_is_pkuerr_0x27():
    """PROT_READ page, key WD, write: SEGV_PKUERR err=0x27, not ACCERR (HW-X86-BOTH-VIOLATIONS; observed e)."""
    t = System().spawn()
    k, a = keyed_page(t, PKEY_DISABLE_WRITE, prot=PROT_READ)
    t.load(a)
    assert_killed(t.store(a, 1), SIGSEGV, SEGV_PKUERR, a, pkey=k, err=0x27)


def test_prot_none_page_with_denied_key_is_pkuerr():
    """PROT_NONE VMA whose key is AD: access_error checks the key first, so SEGV_PKUERR (kernel notes §7)."""
    t = System().spawn()
    k, a = keyed_page(t, PKEY_DISABLE_ACCESS, prot=PROT_NONE)
    assert_killed(t.load(a), SIGSEGV, SEGV_PKUERR, a, pkey=k, err=0x4)


def test_open_key_read_and_write_succeed():
    """Rights 0: reads and writes work."""
    t = System().spawn()
    _, a = keyed_page(t, 0)
    assert t.store(a, 0x77) is None
    assert t.load(a) == 0x77


def test_si_pkey_is_the_vma_key_not_1():
    """si_pkey names the faulting VMA's key (ERR-SIGINFO): key 4 here."""
    t = System().spawn()
    for _ in range(3):
        t.pkey_alloc(0, 0)
    k, a = keyed_page(t, PKEY_DISABLE_ACCESS)
    assert k == 4
    assert_killed(t.load(a), SIGSEGV, SEGV_PKUERR, a, pkey=4)


def test_key_0_denied_is_pkuerr_with_pkey_0():
    """AD for key 0: a read of the /prog data page gives SEGV_PKUERR si_pkey 0 (observed e, key 0 row)."""
    t = System().spawn()
    t.wrpkru(0x55555555)
    assert_killed(t.load(0x402000), SIGSEGV, SEGV_PKUERR, 0x402000, pkey=0, err=0x4)


# --- instruction fetch ignores keys -----------------------------------------------------------


def test_exec_of_read_exec_page_with_ad_key_runs():
    """Call into a PROT_READ|PROT_EXEC page whose key is AD: executes; a read faults (HW-X86-DATA-ONLY; observed e)."""
    t = System().spawn()
    k, a = keyed_page(t, PKEY_DISABLE_ACCESS, prot=PROT_READ | PROT_EXEC, value=42)
    assert t.execute(a) == 42
    assert t.alive
    assert_killed(t.load(a), SIGSEGV, SEGV_PKUERR, a, pkey=k)


def test_exec_with_every_key_denied_still_runs():
    """PKRU 0xFFFFFFFF does not stop a fetch from the program text (HW-X86-DATA-ONLY, KERN-EXEC-CHECK)."""
    t = System().spawn()
    t.wrpkru(0xFFFFFFFF)
    assert t.execute(0x401000) == 0
    assert t.alive


def test_exec_never_touched_page_with_ad_key_runs():
    """A fetch from a never-touched RX page with an AD key fills it in and runs (KERN-EXEC-CHECK)."""
    t = System().spawn()
    _, a = keyed_page(t, PKEY_DISABLE_ACCESS, prot=PROT_READ | PROT_EXEC, populate=False)
    assert t.execute(a) == 0


# --- SEGV_ACCERR / SEGV_MAPERR -------------------------------------------------------------


def test_read_of_prot_none_is_accerr():
    """PROT_NONE read: SEGV_ACCERR, err 0x4 (not-present PTE) (kernel notes §7)."""
    t = System().spawn()
    a = t.mmap(0, PAGE, PROT_NONE, ANON)
    assert_killed(t.load(a), SIGSEGV, SEGV_ACCERR, a, err=0x4)


def test_read_of_populated_then_prot_none_page_is_accerr_without_prot_bit():
    """A touched page made PROT_NONE is not present to the CPU: ACCERR err 0x4 (kernel notes §7)."""
    t = System().spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    t.store(a, 1)
    t.mprotect(a, PAGE, PROT_NONE)
    assert_killed(t.load(a), SIGSEGV, SEGV_ACCERR, a, err=0x4)


def test_write_to_read_only_page_is_accerr_0x7():
    """Write to a present read-only page, key open: SEGV_ACCERR err=0x7 (kernel notes §7)."""
    t = System().spawn()
    a = t.mmap(0, PAGE, PROT_READ, ANON)
    t.load(a)
    assert_killed(t.store(a, 1), SIGSEGV, SEGV_ACCERR, a, err=0x7)


def test_write_to_never_touched_read_only_page_is_accerr_0x6():
    """Write to a never-touched read-only page: SEGV_ACCERR err=0x6 (kernel notes §7)."""
    t = System().spawn()
    a = t.mmap(0, PAGE, PROT_READ, ANON)
    assert_killed(t.store(a, 1), SIGSEGV, SEGV_ACCERR, a, err=0x6)


def test_fetch_from_non_exec_page_is_accerr_0x15():
    """Fetch from a readable non-exec page: filled in, then PROT|USER|INSTR = 0x15, SEGV_ACCERR (kernel notes §7)."""
    t = System().spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert_killed(t.execute(a), SIGSEGV, SEGV_ACCERR, a, err=0x15)


def test_fetch_from_non_exec_page_with_ad_key_is_accerr_not_pkuerr():
    """Fetch from an NX page whose key is AD: SEGV_ACCERR; keys never apply to fetches (KERN-EXEC-CHECK)."""
    t = System().spawn()
    _, a = keyed_page(t, PKEY_DISABLE_ACCESS)
    assert_killed(t.execute(a), SIGSEGV, SEGV_ACCERR, a, err=0x15)


def test_fetch_from_prot_none_is_accerr_0x14():
    """Fetch from PROT_NONE: SEGV_ACCERR err=0x14 (kernel notes §7)."""
    t = System().spawn()
    a = t.mmap(0, PAGE, PROT_NONE, ANON)
    assert_killed(t.execute(a), SIGSEGV, SEGV_ACCERR, a, err=0x14)


def test_unmapped_read_is_maperr():
    """No VMA: SEGV_MAPERR, si_addr the address, err 0x4 (kernel notes §7)."""
    t = System().spawn()
    assert_killed(t.load(0x30000010), SIGSEGV, SEGV_MAPERR, 0x30000010, err=0x4)


def test_unmapped_write_is_maperr_0x6():
    """No VMA, write: SEGV_MAPERR err=0x6."""
    t = System().spawn()
    assert_killed(t.store(0x30000000, 1), SIGSEGV, SEGV_MAPERR, 0x30000000, err=0x6)


def test_unmapped_fetch_is_maperr_0x14():
    """No VMA, fetch: SEGV_MAPERR err=0x14."""
    t = System().spawn()
    assert_killed(t.execute(0x30000000), SIGSEGV, SEGV_MAPERR, 0x30000000, err=0x14)


def test_address_0_is_maperr():
    """A NULL read: SEGV_MAPERR si_addr 0."""
    t = System().spawn()
    assert_killed(t.load(0), SIGSEGV, SEGV_MAPERR, 0, err=0x4)


def test_unmapped_fault_with_keys_denied_is_still_maperr():
    """No VMA means MAPERR even if PKRU denies every key (kernel notes §7)."""
    t = System().spawn()
    t.wrpkru(0xFFFFFFFF)
    assert_killed(t.load(0x30000000), SIGSEGV, SEGV_MAPERR, 0x30000000)


def test_kernel_address_read_is_maperr_with_prot_bit():
    """A user read of a kernel address: SEGV_MAPERR at that address; the kernel reports err PROT|USER = 0x5
    (arch/x86/mm/fault.c sanitize_error_code: address >= TASK_SIZE_MAX gets X86_PF_PROT)."""
    t = System().spawn()
    addr = 0xFFFF888000001000
    assert_killed(t.load(addr), SIGSEGV, SEGV_MAPERR, addr, err=0x5)


def test_last_user_page_is_canonical_and_gives_maperr():
    """0x7ffffffff000 is canonical (bit 47 clear): a #PF, not #GP, so SEGV_MAPERR at that address
    (fault_in_kernel_space: address >= TASK_SIZE_MAX; arch/x86/mm/fault.c)."""
    t = System().spawn()
    addr = 0x7FFFFFFFF000
    assert_killed(t.load(addr), SIGSEGV, SEGV_MAPERR, addr)


def test_non_canonical_address_is_gp_si_kernel():
    """0x8000000000000000 is non-canonical with 4- and 5-level paging: #GP, SIGSEGV SI_KERNEL, si_addr 0 (kernel notes §7)."""
    t = System().spawn()
    assert_killed(t.load(0x8000000000000000), SIGSEGV, SI_KERNEL, 0)


# --- how the process ends ------------------------------------------------------------------


def test_fault_ends_the_whole_process():
    """With no handler SIGSEGV ends every thread: process.end is the Killed value, all threads stop."""
    t = System().spawn()
    other = t.clone()
    end = other.load(0x30000000)
    assert t.process.end == end
    assert end == Killed(SIGSEGV, Siginfo(SIGSEGV, SEGV_MAPERR, 0x30000000, 0), 0x4)
    assert not t.alive and not other.alive


def test_fault_does_not_touch_other_processes():
    """Another process keeps running after one is killed."""
    s = System()
    t, u = s.spawn(), s.spawn()
    t.load(0)
    assert not t.alive
    assert u.alive
    assert u.load(0x402000) == 0


DEAD_CALLS = {
    "mmap": lambda t: t.mmap(0, PAGE, RW, ANON),
    "munmap": lambda t: t.munmap(0x30000000, PAGE),
    "mprotect": lambda t: t.mprotect(0x402000, PAGE, PROT_READ),
    "pkey_mprotect": lambda t: t.pkey_mprotect(0x402000, PAGE, PROT_READ, 0),
    "madvise": lambda t: t.madvise(0x402000, PAGE, 4),
    "pkey_alloc": lambda t: t.pkey_alloc(0, 0),
    "pkey_free": lambda t: t.pkey_free(1),
    "smaps": lambda t: t.smaps(),
    "smaps_pkey": lambda t: t.smaps_pkey(0x402000),
    "clone": lambda t: t.clone(),
    "fork": lambda t: t.fork(),
    "execve": lambda t: t.execve(),
    "exit_group": lambda t: t.exit_group(0),
    "load": lambda t: t.load(0x402000),
    "store": lambda t: t.store(0x402000, 1),
    "execute": lambda t: t.execute(0x401000),
    "rdpkru": lambda t: t.rdpkru(),
    "wrpkru": lambda t: t.wrpkru(0),
}


@pytest.mark.parametrize("name", sorted(DEAD_CALLS))
def test_calls_on_a_killed_thread_raise_esrch(name):
    """Once the process is killed every call of its threads raises ProcessLookupError, errno ESRCH."""
    t = System().spawn()
    other = t.clone()
    t.load(0)
    for thread in (t, other):
        with pytest.raises(ProcessLookupError) as info:
            DEAD_CALLS[name](thread)
        assert info.value.errno == errno.ESRCH


@pytest.mark.parametrize("name", sorted(DEAD_CALLS))
def test_calls_after_exit_group_raise_esrch(name):
    """After exit_group every call raises ProcessLookupError (ESRCH)."""
    t = System().spawn()
    t.exit_group(3)
    with pytest.raises(ProcessLookupError) as info:
        DEAD_CALLS[name](t)
    assert info.value.errno == errno.ESRCH


def test_exit_group_records_status_mod_256():
    """exit_group(status) ends with WEXITSTATUS = status & 0xff."""
    s = System()
    t, u = s.spawn(), s.spawn()
    t.exit_group(3)
    u.exit_group(257)
    assert t.process.end == Exited(3)
    assert u.process.end == Exited(1)


def test_first_end_wins():
    """A process ends once: the recorded end is the first one."""
    t = System().spawn()
    end = t.load(0)
    with pytest.raises(ProcessLookupError):
        t.exit_group(0)
    assert t.process.end == end


# --- multi-byte accesses --------------------------------------------------------------------


def test_loads_are_little_endian():
    """An 8-byte store then 1/2/4/8-byte loads read little-endian."""
    t = System().spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert t.store(a, 0x1122334455667788, 8) is None
    assert t.load(a) == 0x88
    assert t.load(a + 7) == 0x11
    assert t.load(a, 2) == 0x7788
    assert t.load(a, 4) == 0x55667788
    assert t.load(a, 8) == 0x1122334455667788
    assert t.load(a + 2, 4) == 0x33445566


def test_store_keeps_only_size_bytes():
    """A 1-byte store of 0x1FF writes 0xFF; a 2-byte store of -1 writes 0xFFFF and nothing more."""
    t = System().spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    t.store(a, 0x1FF)
    t.store(a + 8, -1, 2)
    assert t.load(a, 2) == 0x00FF
    assert t.load(a + 8, 4) == 0x0000FFFF


def test_never_touched_memory_reads_0():
    """Fresh anonymous memory reads as zeros."""
    t = System().spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    assert t.load(a + 100, 8) == 0


def test_page_crossing_access_within_mapping():
    """An 8-byte store crossing into the next mapped page lands in both pages."""
    t = System().spawn()
    a = t.mmap(0, 2 * PAGE, RW, ANON)
    t.store(a + PAGE - 4, 0x0102030405060708, 8)
    assert t.load(a + PAGE - 4, 8) == 0x0102030405060708
    assert t.load(a + PAGE, 4) == 0x01020304
    assert t.load(a + PAGE - 4, 4) == 0x05060708


def test_page_crossing_into_unmapped_page_faults_at_its_first_byte():
    """A load that runs into an unmapped page: SEGV_MAPERR with si_addr = the first byte of that page."""
    t = System().spawn()
    a = t.mmap(0, 2 * PAGE, RW, ANON)
    t.munmap(a + PAGE, PAGE)
    assert_killed(t.load(a + PAGE - 2, 4), SIGSEGV, SEGV_MAPERR, a + PAGE)


def test_page_crossing_into_denied_key_is_pkuerr():
    """A store crossing from an open page into a page whose key is AD: SEGV_PKUERR at the second page."""
    t = System().spawn()
    k = t.pkey_alloc(0, PKEY_DISABLE_ACCESS)
    a = t.mmap(0, 2 * PAGE, RW, ANON)
    t.pkey_mprotect(a + PAGE, PAGE, RW, k)
    assert_killed(t.store(a + PAGE - 1, 0xFFFF, 2), SIGSEGV, SEGV_PKUERR, a + PAGE, pkey=k, err=0x6)


@pytest.mark.parametrize("size", [0, 3, 5, 16, -1])
def test_invalid_access_size_is_value_error(size):
    """x86 moves 1, 2, 4 or 8 bytes: another size is an API misuse (ValueError), and nothing happens."""
    t = System().spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    with pytest.raises(ValueError):
        t.load(a, size)
    with pytest.raises(ValueError):
        t.store(a, 1, size)
    assert t.alive
    assert t.load(a) == 0


def test_shared_mapping_is_shared_with_child():
    """A MAP_SHARED anonymous page is the same memory in parent and child."""
    t = System().spawn()
    a = t.mmap(0, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS)
    child = t.fork()
    child.store(a, 0x33)
    assert t.load(a) == 0x33


# --- RDPKRU / WRPKRU -------------------------------------------------------------------


def test_rdpkru_returns_init_pkru():
    """The main thread starts with 0x55555554 (INIT-PKRU-VALUE; observed a)."""
    t = System().spawn()
    assert t.rdpkru() == 0x55555554


def test_wrpkru_sets_pkru():
    """WRPKRU writes EAX into PKRU; RDPKRU reads it back (HW-X86-INSNS, SEC-UNPRIV-WRITERS)."""
    t = System().spawn()
    assert t.wrpkru(0x12345678) is None
    assert t.rdpkru() == 0x12345678
    assert t.pkru == 0x12345678


def test_wrpkru_uses_only_eax():
    """Only the low 32 bits of RAX are written (HW-X86-INSNS)."""
    t = System().spawn()
    t.wrpkru(0xABCD_0000_0004)
    assert t.rdpkru() == 0x4


def test_wrpkru_is_thread_local():
    """WRPKRU changes only the executing thread (HW-X86-THREAD-LOCAL, THR-NO-REMOTE-SET; observed g)."""
    t = System().spawn()
    other = t.clone()
    t.wrpkru(0)
    assert other.rdpkru() == 0x55555554


@pytest.mark.parametrize("call", [
    lambda t: t.rdpkru(1),
    lambda t: t.rdpkru(0xFFFFFFFF),
    lambda t: t.wrpkru(0, 1, 0),
    lambda t: t.wrpkru(0, 0, 1),
    lambda t: t.wrpkru(0, 0x80000000, 0),
])
def test_nonzero_ecx_or_edx_is_gp_sigsegv_si_kernel(call):
    """RDPKRU with ECX != 0, WRPKRU with ECX or EDX != 0: #GP, SIGSEGV SI_KERNEL, si_addr 0 (HW-X86-INSNS; kernel notes §7)."""
    t = System().spawn()
    assert_killed(call(t), SIGSEGV, SI_KERNEL, 0)
    assert not t.alive


def test_upper_halves_of_rcx_rdx_are_ignored():
    """Only ECX/EDX are checked: RCX = 2**32 is ECX = 0, no fault (HW-X86-INSNS)."""
    t = System().spawn()
    assert t.rdpkru(2**32) == 0x55555554
    assert t.wrpkru(0x4, 2**32, 2**33) is None
    assert t.rdpkru() == 0x4


@pytest.mark.parametrize("call", [lambda t: t.rdpkru(), lambda t: t.wrpkru(0)])
def test_without_pku_rdpkru_wrpkru_are_sigill(call):
    """No PKU (CR4.PKE clear): #UD, SIGILL ILL_ILLOPN (GLIBC-UB-UNALLOCATED; observed z: pkey_get dies with SIGILL)."""
    t = System(pku=False).spawn()
    end = call(t)
    assert isinstance(end, Killed)
    assert (end.signo, end.siginfo.si_signo, end.siginfo.si_code) == (SIGILL, SIGILL, ILL_ILLOPN)
    assert not t.alive


def test_clone_inherits_current_pkru():
    """A new thread starts with its creator's current PKRU (THR-CLONE-INHERITS; observed g: 0x15555558)."""
    t = System().spawn()
    t.wrpkru(0x15555558)
    assert t.clone().pkru == 0x15555558


# --- fork -------------------------------------------------------------------------------


def test_fork_copies_memory_then_independent():
    """The child sees the parent's bytes; later writes do not cross over."""
    t = System().spawn()
    a = t.mmap(0, PAGE, RW, ANON)
    t.store(a, 0x11)
    child = t.fork()
    assert child.load(a) == 0x11
    child.store(a, 0x22)
    t.store(a + 1, 0x33)
    assert t.load(a) == 0x11
    assert child.load(a + 1) == 0


def test_fork_copies_vma_keys():
    """The child's VMAs keep their keys (FORK-VMA-KEYS; observed h)."""
    t = System().spawn()
    k = t.pkey_alloc(0, PKEY_DISABLE_ACCESS)
    a = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(a, PAGE, RW, k)
    child = t.fork()
    assert child.smaps_pkey(a) == 1
    assert_killed(child.load(a), SIGSEGV, SEGV_PKUERR, a, pkey=1)
    assert t.alive


def test_fork_child_gets_pkru_of_calling_thread():
    """The child gets the PKRU of the thread that called fork, not the main thread's (FORK-PKRU; observed h)."""
    t = System().spawn()
    other = t.clone()
    other.wrpkru(0x15555550)
    t.wrpkru(0x55555555)
    child = other.fork()
    assert child.pkru == 0x15555550
    assert child.process.threads == [child]


def test_fork_child_pkru_same_as_parent_main():
    """Initial PKRU after fork: 0x55555554, same as the parent (observed a)."""
    t = System().spawn()
    assert t.fork().rdpkru() == 0x55555554


def test_child_death_does_not_kill_parent():
    """A child killed by SIGSEGV leaves the parent running."""
    t = System().spawn()
    child = t.fork()
    child.load(0)
    assert t.alive and not child.alive


# --- execve -------------------------------------------------------------------------------


def test_execve_resets_pkru():
    """execve: PKRU = init_pkru 0x55555554 (EXEC-RESET; observed i)."""
    t = System().spawn()
    t.wrpkru(0)
    t.execve()
    assert t.pkru == 0x55555554


def test_execve_resets_allocation_map():
    """After execve: free(k) EINVAL, pkey_mprotect(k) EINVAL, first alloc 1 (EXEC-RESET; observed i)."""
    t = System().spawn()
    for _ in range(3):
        t.pkey_alloc(0, 0)
    t.execve()
    a = t.mmap(0, PAGE, RW, ANON)
    with pytest.raises(OSError) as info:
        t.pkey_free(2)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        t.pkey_mprotect(a, PAGE, RW, 2)
    assert info.value.errno == errno.EINVAL
    assert t.pkey_alloc(0, 0) == 1


def test_execve_resets_exec_only_key_and_key0():
    """execve forgets the exec-only key and a freed key 0: map {0} again (EXEC-RESET)."""
    t = System().spawn()
    t.pkey_free(0)
    a = t.mmap(0, PAGE, PROT_EXEC, ANON)
    t.execve()
    assert t.pkey_alloc(0, 0) == 1
    assert t.pkey_free(0) == 0
    assert t.smaps_pkey(0x402000) == 0
    assert_killed(t.load(a), SIGSEGV, SEGV_MAPERR, a)


def test_execve_gives_a_fresh_address_space():
    """Old mappings are gone after execve; the program's pages read as new."""
    t = System().spawn()
    t.store(0x402000, 9)
    a = t.mmap(0, PAGE, RW, ANON)
    t.execve()
    assert t.load(0x402000) == 0
    assert t.mmap(0, PAGE, RW, ANON) == a


def test_execve_uses_init_pkru_boot_parameter():
    """With init_pkru=0x15555554 new programs start with it (INIT-PKRU-TUNABLE; observed p)."""
    t = System(init_pkru=0x15555554).spawn()
    assert t.pkru == 0x15555554
    t.wrpkru(0)
    t.execve()
    assert t.pkru == 0x15555554


def test_execve_ends_the_other_threads():
    """execve kills every other thread of the process (de_thread): their later calls fail with ESRCH."""
    t = System().spawn()
    other = t.clone()
    t.execve()
    assert t.process.threads == [t]
    with pytest.raises(ProcessLookupError) as info:
        other.load(0x402000)
    assert info.value.errno == errno.ESRCH


# --- faults no handler can repair ------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda t: t.store(0x8000000000000000 - 2, 0x4142434445464748, 8),   # crosses into the hole
    lambda t: t.load(0xA7AD862210FCADDD),
    lambda t: t.rdpkru(1),
    lambda t: t.wrpkru(0, 0, 1),
])
def test_gp_with_a_handler_that_returns_runs_again_it_is_not_skipped(call):
    """#GP (a non-canonical address, RDPKRU/WRPKRU with ECX or EDX not 0) under a SIGSEGV
    handler that returns: the instruction runs again and faults again, forever, since the
    model's handlers cannot change the registers that cause it; the model records a
    Livelock. Before, the instruction was taken as done: the store wrote its bytes into
    the non-canonical hole and rdpkru returned None.

    Source: arch/x86/kernel/traps.c (``exc_general_protection`` -> ``force_sig(SIGSEGV)``;
    ``sigreturn`` resumes at the faulting instruction).
    """
    t = System().spawn()
    calls = []
    t.sigaction(SIGSEGV, lambda ctx: calls.append(ctx.info))
    end = call(t)
    assert isinstance(end, Livelock), end
    assert end.siginfo.si_code == SI_KERNEL
    assert len(calls) == 8
    assert not [a for a in t.process.mm.memory if a >= 0x7FFFFFFFF000]


def test_ud_without_pku_with_a_sigill_handler_livelocks():
    """RDPKRU without PKU is #UD: SIGILL; a handler that returns runs it again (arch/x86/kernel/
    traps.c ``exc_invalid_op`` -> ``do_error_trap``)."""
    t = System(pku=False).spawn()
    t.sigaction(SIGILL, lambda ctx: None)
    end = t.rdpkru()
    assert isinstance(end, Livelock) and end.siginfo.si_signo == SIGILL


def test_handlers_that_raise_their_own_signal_nest_until_the_stack_is_used_up():
    """A handler that raises its own signal with SA_NODEFER nests frames without end; Linux
    stops when a frame can no longer be written (force_sigsegv: SIGSEGV, SI_KERNEL). The model
    nests at most 32 frames (before, Python's recursion limit ended the call with a
    RecursionError).

    Source: arch/x86/kernel/signal.c ``handle_signal`` (``signal_setup_done`` ->
    ``force_sigsegv`` when ``setup_rt_frame`` fails).
    """
    t = System().spawn()
    big = t.mmap(0, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    u = t.clone(stack=big + (4 << 20) - 64)
    depth = []

    def again(ctx):
        depth.append(ctx.thread.handler_depth)
        ctx.thread.raise_signal(SIGUSR1)

    u.sigaction(SIGUSR1, again, SA_NODEFER)
    end = u.raise_signal(SIGUSR1)
    assert end.signo == SIGSEGV and end.siginfo.si_code == SI_KERNEL
    assert max(depth) == 32

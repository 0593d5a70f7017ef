"""The model against what real kernels did (``/work/shared/linux-observed.md``).

One test per row of the observation table, for the sections the foundation
model covers: a (initial state), b (allocation), c (argument checks),
d (PKRU bits), e (faults, without signal handlers), j (freeing a key in use),
k (execute-only, with k3), q (VMAs) and z (a CPU without PKU). Rows that need
signal handlers, pipes, /proc/self/mem or glibc are left to the modules that
are being built for them.

Each test is written as the model's own sequence of calls, the way the C test
program did it: every scenario starts in a fresh process (the program ran each
one in a forked child), maps fresh anonymous pages, allocates keys, re-keys and
touches. "Populated" means the page was written by a store before it was
re-keyed; "never-touched" means nothing touched it before the access under
test. Expected values are the literal observed ones; where a row is the same on
6.1, 6.12 and 7.2 the test still runs on all three.
"""

import errno
import re
import signal

import pytest

from pkeyspec import (
    MADV_DONTNEED, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PKEY_DISABLE_ACCESS,
    PKEY_DISABLE_WRITE, PROT_EXEC, PROT_GROWSDOWN, PROT_NONE, PROT_READ, PROT_WRITE, Killed,
    System,
)

KERNELS = ("6.1", "6.12", "7.2")
PAGE = 4096
RW = PROT_READ | PROT_WRITE
AD = PKEY_DISABLE_ACCESS
WD = PKEY_DISABLE_WRITE
#: ``mov eax, 42; ret``: the function the C program put into its code pages.
RET42 = bytes((0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3))


# --- helpers: what the C test program did in a few lines each ---------------

@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


@pytest.fixture
def main(kernel):
    """The main thread of a fresh process on a PKU CPU (``-cpu max``)."""
    return System(kernel=kernel, pku=True).spawn()


def new_page(t, pages=1, prot=RW, flags=MAP_PRIVATE | MAP_ANONYMOUS):
    """``mmap(NULL, pages*4096, prot, flags, -1, 0)``."""
    return t.mmap(0, pages * PAGE, prot, flags, -1, 0)


def populated_page(t, pages=1, flags=MAP_PRIVATE | MAP_ANONYMOUS):
    """A fresh RW page, each page written once (so its PTE is present)."""
    p = new_page(t, pages, RW, flags)
    for i in range(pages):
        assert t.store(p + i * PAGE, 0x5A) is None
    return p


def code_page(t):
    """A fresh RW page holding ``mov eax, 42; ret`` (populated by the stores)."""
    p = new_page(t)
    for i, b in enumerate(RET42):
        assert t.store(p + i, b) is None
    return p


def err_of(fn, *args):
    """The errno of a failing call (-1 and errno in C)."""
    with pytest.raises(OSError) as exc:
        fn(*args)
    return exc.value.errno


def rights(pkru, pkey):
    """The two PKRU bits of ``pkey``: bit 0 = AD, bit 1 = WD."""
    return (pkru >> (2 * pkey)) & 3


def smaps_vmas(t):
    """``/proc/self/smaps`` as (start, end, perms, name, ProtectionKey or None)."""
    vmas = []
    for line in t.smaps().splitlines():
        fields = line.split()
        if fields and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", fields[0]):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            vmas.append([lo, hi, fields[1], fields[5] if len(fields) > 5 else "", None])
        elif line.startswith("ProtectionKey:"):
            vmas[-1][4] = int(fields[1])
    return [tuple(v) for v in vmas]


def smaps_key(t, addr):
    """The ProtectionKey of the VMA holding ``addr``, read from smaps text."""
    for lo, hi, _perms, _name, pkey in smaps_vmas(t):
        if lo <= addr < hi:
            return pkey
    raise AssertionError(f"{addr:#x} is not in smaps")


def assert_pkuerr(end, *, addr=None, pkey=None, err=None):
    """Killed by SIGSEGV with si_code 4 (SEGV_PKUERR), and the given fields."""
    assert isinstance(end, Killed), end
    assert end.signo == signal.SIGSEGV
    assert end.siginfo.si_signo == signal.SIGSEGV
    assert end.siginfo.si_code == 4
    if addr is not None:
        assert end.siginfo.si_addr == addr
    if pkey is not None:
        assert end.siginfo.si_pkey == pkey
    if err is not None:
        assert end.err == err


# --- a: the initial state ------------------------------------------------------

def test_a_cpuinfo_has_pku_and_ospke(main):
    """Row a: "guest cpuinfo `pku`/`ospke`; CPUID PKU/OSPKE" -> "yes / yes" (all kernels).

    Facts: HW-X86-ENUM.
    """
    flags = main.system.cpuinfo_flags()
    assert "pku" in flags
    assert "ospke" in flags


def test_a_initial_pkru_main_thread_and_after_fork(main):
    """Row a: "initial PKRU of the main thread (and after fork)" -> "0x55555554 (keys 1..15 AD)".

    Facts: INIT-PKRU-VALUE, FORK-PKRU, THR-DENY-BY-DEFAULT-X86.
    """
    pkru = main.rdpkru()
    assert pkru == 0x55555554
    assert rights(pkru, 0) == 0b00
    assert [rights(pkru, k) for k in range(1, 16)] == [0b01] * 15
    child = main.fork()
    assert child.rdpkru() == 0x55555554


def test_a_stack_and_text_have_key_0(main):
    """Row a: "ProtectionKey of stack and text" -> "0" (all kernels).

    Facts: SYS-MMAP-DEFAULT-KEY, PROC-SMAPS-LINE.
    """
    vmas = smaps_vmas(main)
    stack = [v for v in vmas if v[3] == "[stack]"]
    text = [v for v in vmas if "x" in v[2] and not v[3].startswith("[")]
    assert stack and text
    for _lo, _hi, _perms, _name, pkey in stack + text:
        assert pkey == 0


# --- b: allocation -------------------------------------------------------------

def test_b_alloc_until_failure_gives_1_to_15_then_enospc(main):
    """Row b: "`pkey_alloc(0,0)` sequence until failure" -> "1,2,…,15, then -1 ENOSPC (15 keys)".

    Facts: SYS-ALLOC-LOWEST, SYS-KEY0-PREALLOCATED, SEC-16-KEYS, ERR-TABLE.
    """
    got = [main.pkey_alloc(0, 0) for _ in range(15)]
    assert got == list(range(1, 16))
    assert err_of(main.pkey_alloc, 0, 0) == errno.ENOSPC


def test_b_free5_then_alloc_returns_5(main):
    """Row b: "free(5), then alloc" -> "5" (after the 15 keys of the previous row).

    Facts: SYS-ALLOC-LOWEST.
    """
    assert [main.pkey_alloc(0, 0) for _ in range(15)] == list(range(1, 16))
    assert main.pkey_free(5) == 0
    assert main.pkey_alloc(0, 0) == 5


def test_b_free_all_then_alloc_returns_1(main):
    """Row b: "free all, then alloc" -> "1".

    Facts: SYS-ALLOC-LOWEST.
    """
    keys = [main.pkey_alloc(0, 0) for _ in range(15)]
    for k in keys:
        assert main.pkey_free(k) == 0
    assert main.pkey_alloc(0, 0) == 1


def test_b_double_free_is_einval(main):
    """Row b: "double free" -> "-1 EINVAL".

    Facts: SYS-FREE-ERRNO.
    """
    k = main.pkey_alloc(0, 0)
    assert main.pkey_free(k) == 0
    assert err_of(main.pkey_free, k) == errno.EINVAL


# --- c: argument checks ----------------------------------------------------------

def test_c_alloc_bad_flags_or_rights_is_einval(main):
    """Row c: "alloc flags=1 / rights=4 / rights=0x10 / rights=~0" -> "-1 EINVAL (all)".

    Facts: SYS-ALLOC-CHECK-ORDER, SYS-ALLOC-MASK, ERR-TABLE.
    """
    assert err_of(main.pkey_alloc, 1, 0) == errno.EINVAL
    assert err_of(main.pkey_alloc, 0, 4) == errno.EINVAL
    assert err_of(main.pkey_alloc, 0, 0x10) == errno.EINVAL
    assert err_of(main.pkey_alloc, 0, ~0) == errno.EINVAL
    # none of them took a key
    assert main.pkey_alloc(0, 0) == 1


def test_c_alloc_rights_ad_wd_is_ok(main):
    """Row c: "alloc rights=3 (AD|WD)" -> "ok".

    Facts: SYS-ALLOC-X86-RIGHTS-MAP, SYS-ALLOC-CHECK-ORDER.
    """
    assert main.pkey_alloc(0, AD | WD) == 1


def test_c_free_unallocated_or_out_of_range_is_einval(main):
    """Row c: "free(15) unallocated / free(16) / free(-1)" -> "-1 EINVAL".

    Facts: SYS-FREE-ERRNO, ERR-TABLE.
    """
    assert err_of(main.pkey_free, 15) == errno.EINVAL
    assert err_of(main.pkey_free, 16) == errno.EINVAL
    assert err_of(main.pkey_free, -1) == errno.EINVAL


def test_c_free0_then_alloc_returns_0(main):
    """Row c: "free(0)" -> "**0** (next alloc returns **0**; later pkey_mprotect(key 0)
    gives -1 EINVAL)"; headline 1 adds "(plain `mprotect` still works)".

    The row does not say exactly when the EINVAL was seen. The kernel code
    (``mm_pkey_is_allocated``) refuses key 0 while its bit is clear and
    accepts it again once ``pkey_alloc`` has handed 0 out, so the test
    checks pkey_mprotect(…, 0) and plain mprotect while key 0 is free, then
    the re-allocation of 0.

    Facts: SYS-FREE-KEY0, SYS-KEY0-PREALLOCATED, SYS-ALLOC-LOWEST.
    """
    p = new_page(main)
    assert main.pkey_free(0) == 0
    assert err_of(main.pkey_mprotect, p, PAGE, RW, 0) == errno.EINVAL
    assert main.mprotect(p, PAGE, PROT_READ) == 0
    assert main.pkey_alloc(0, 0) == 0


def test_c_pkey_mprotect_unallocated_or_out_of_range_key_is_einval(main):
    """Row c: "pkey_mprotect with unallocated key 5 / key 16 / key -2" -> "-1 EINVAL".

    Facts: SYS-MPROT-CHECK-ORDER, ERR-TABLE, SYS-MPROT-UNSUPPORTED.
    """
    p = new_page(main)
    assert err_of(main.pkey_mprotect, p, PAGE, RW, 5) == errno.EINVAL
    assert err_of(main.pkey_mprotect, p, PAGE, RW, 16) == errno.EINVAL
    assert err_of(main.pkey_mprotect, p, PAGE, RW, -2) == errno.EINVAL


def test_c_pkey_mprotect_key_minus1_keeps_vma_key(main):
    """Row c: "pkey_mprotect key -1" -> "0, **keeps the VMA's existing key** (same for
    plain mprotect)".

    Facts: SYS-MPROT-NEG1, GLIBC-MPROTECT-NEG1.
    """
    p = new_page(main)
    k = main.pkey_alloc(0, 0)
    assert main.pkey_mprotect(p, PAGE, RW, k) == 0
    assert main.pkey_mprotect(p, PAGE, PROT_READ, -1) == 0
    assert smaps_key(main, p) == k
    assert main.mprotect(p, PAGE, RW) == 0
    assert smaps_key(main, p) == k


def test_c_pkey_mprotect_key_0_is_ok(main):
    """Row c: "pkey_mprotect key 0" -> "0".

    Facts: SYS-KEY0-PREALLOCATED, SYS-MPROT-ANY-PROT.
    """
    p = new_page(main)
    assert main.pkey_mprotect(p, PAGE, RW, 0) == 0
    assert smaps_key(main, p) == 0


def test_c_pkey_mprotect_misaligned_badprot_growsdown_is_einval(main):
    """Row c: "misaligned addr / bad prot 0x1000 / PROT_GROWSDOWN on a normal VMA" -> "-1 EINVAL".

    Facts: SYS-MPROT-CHECK-ORDER, ERR-TABLE.
    """
    p = new_page(main)
    k = main.pkey_alloc(0, 0)
    assert err_of(main.pkey_mprotect, p + 1, PAGE, RW, k) == errno.EINVAL
    assert err_of(main.pkey_mprotect, p, PAGE, 0x1000, k) == errno.EINVAL
    assert err_of(main.pkey_mprotect, p, PAGE, RW | PROT_GROWSDOWN, k) == errno.EINVAL
    assert smaps_key(main, p) == 0


def test_c_pkey_mprotect_len0_is_noop(main):
    """Row c: "len 0" -> "0, no-op".

    Facts: SYS-MPROT-LEN0, SYS-MPROT-CHECK-ORDER.
    """
    p = new_page(main)
    k = main.pkey_alloc(0, 0)
    before = smaps_vmas(main)
    assert main.pkey_mprotect(p, 0, PROT_READ, k) == 0
    assert smaps_vmas(main) == before
    assert smaps_key(main, p) == 0


def test_c_pkey_mprotect_unmapped_wrapping_kernel_is_enomem(main):
    """Row c: "unmapped range / addr+len wraps / kernel address" -> "-1 ENOMEM".

    Facts: SYS-MPROT-CHECK-ORDER, ERR-TABLE.
    """
    k = main.pkey_alloc(0, 0)
    gone = new_page(main)
    assert main.munmap(gone, PAGE) == 0
    assert err_of(main.pkey_mprotect, gone, PAGE, RW, k) == errno.ENOMEM
    p = new_page(main)
    assert err_of(main.pkey_mprotect, p, 2**64 - PAGE, RW, k) == errno.ENOMEM
    assert err_of(main.pkey_mprotect, 0xFFFFFFFF81000000, PAGE, RW, k) == errno.ENOMEM


def test_c_pkey_mprotect_unmapped_tail_is_enomem_after_rekeying_head(main):
    """Row c: "range with unmapped tail" -> "-1 ENOMEM, **mapped head already re-keyed**".

    Facts: SYS-MPROT-NONATOMIC, RACE-PKEY-MPROTECT-PARTIAL.
    """
    p = new_page(main, 2)
    assert main.munmap(p + PAGE, PAGE) == 0
    k = main.pkey_alloc(0, 0)
    assert err_of(main.pkey_mprotect, p, 2 * PAGE, RW, k) == errno.ENOMEM
    assert smaps_key(main, p) == k


@pytest.mark.parametrize(("kernel", "expected"), [
    ("6.1", errno.ENOMEM),
    ("6.12", errno.EACCES),
    ("7.2", errno.EACCES),
])
def test_c_pkey_mprotect_huge_len_across_vmas(kernel, expected):
    """Row c: "huge len across many VMAs" -> 6.1 "-1 ENOMEM", 6.12 "-1 EACCES", 7.2 "-1 EACCES".

    Several fresh mappings with different keys (so they stay separate VMAs),
    then one pkey_mprotect from the lowest of them with a 16 TiB length.

    Facts: SYS-MPROT-CHECK-ORDER, SYS-MPROT-NONATOMIC, ERR-TABLE.
    """
    main = System(kernel=kernel, pku=True).spawn()
    pages = []
    for _ in range(4):
        p = new_page(main)
        pages.append(p)
        assert main.pkey_mprotect(p, PAGE, RW, main.pkey_alloc(0, 0)) == 0
    k = main.pkey_alloc(0, 0)
    assert err_of(main.pkey_mprotect, min(pages), 1 << 44, RW, k) == expected


# --- d: PKRU bits ------------------------------------------------------------------

def test_d_alloc_rights_set_caller_pkru_bits(main):
    """Row d: "PKRU bits after alloc with rights 0 / WD / AD / AD|WD" -> "00 / 10 / 01 / 11
    (e.g. 0x55555718)" (bits written WD AD).

    0x55555718 gives key 1 WD, key 2 AD, key 3 none, key 4 AD|WD, so the
    program allocated in the order WD, AD, 0, AD|WD; the test does the same.

    Facts: SYS-ALLOC-X86-RIGHTS-MAP, SYS-ALLOC-RIGHTS-CALLER-ONLY, HW-X86-PKRU-LAYOUT.
    """
    k_wd = main.pkey_alloc(0, WD)
    k_ad = main.pkey_alloc(0, AD)
    k_0 = main.pkey_alloc(0, 0)
    k_adwd = main.pkey_alloc(0, AD | WD)
    assert (k_wd, k_ad, k_0, k_adwd) == (1, 2, 3, 4)
    pkru = main.rdpkru()
    assert rights(pkru, k_0) == 0b00
    assert rights(pkru, k_wd) == 0b10
    assert rights(pkru, k_ad) == 0b01
    assert rights(pkru, k_adwd) == 0b11
    assert pkru == 0x55555718


def test_d_pkey_free_leaves_pkru_unchanged(main):
    """Row d: "PKRU after pkey_free" -> "unchanged".

    Facts: SEC-FREE-DOESNT-REVOKE, SYS-FREE-NO-INUSE-CHECK.
    """
    k = main.pkey_alloc(0, WD)
    before = main.rdpkru()
    assert main.pkey_free(k) == 0
    assert main.rdpkru() == before


def test_d_realloc_overwrites_bits_set_with_pkey_set(main):
    """Row d: "re-alloc of a key whose bits were changed with pkey_set" -> "bits overwritten
    by the new init rights".

    glibc's x86 pkey_set is RDPKRU, replace the key's two bits, WRPKRU; the
    test does those two instructions itself.

    Facts: SYS-ALLOC-X86-RIGHTS-MAP, GLIBC-X86-SET, RACE-STALE-RIGHTS-REALLOC.
    """
    k = main.pkey_alloc(0, 0)
    pkru = main.rdpkru()
    assert main.wrpkru((pkru & ~(3 << (2 * k))) | (WD << (2 * k))) is None   # pkey_set(k, WD)
    assert rights(main.rdpkru(), k) == 0b10
    assert main.pkey_free(k) == 0
    assert main.pkey_alloc(0, AD) == k
    assert rights(main.rdpkru(), k) == 0b01


# --- e: faults (no signal handler: the default action ends the process) ---------------

def test_e_ad_read_populated_is_pkuerr_err_0x25(main):
    """Row e: "AD + read (populated page)" -> "SIGSEGV si_code=4 (SEGV_PKUERR), si_pkey=k,
    si_addr exact, err=0x25".

    Facts: ERR-SIGINFO, HW-X86-PFEC-PK, HW-X86-AD-WD-SEMANTICS.
    """
    p = populated_page(main)
    k = main.pkey_alloc(0, AD)
    assert main.pkey_mprotect(p, PAGE, RW, k) == 0
    end = main.load(p + 0x123)
    assert_pkuerr(end, addr=p + 0x123, pkey=k, err=0x25)


def test_e_ad_read_never_touched_is_pkuerr_err_0x4(main):
    """Row e: "AD + read (never-touched page)" -> "SEGV_PKUERR, si_pkey=k, err=0x4 (no PK bit)".

    Facts: HW-X86-PK-NEEDS-PRESENT, ERR-SIGINFO.
    """
    p = new_page(main)
    k = main.pkey_alloc(0, AD)
    assert main.pkey_mprotect(p, PAGE, RW, k) == 0
    end = main.load(p)
    assert_pkuerr(end, pkey=k, err=0x4)


def test_e_ad_write_is_pkuerr_err_0x27(main):
    """Row e: "AD + write" -> "SEGV_PKUERR, err=0x27".

    Facts: HW-X86-AD-WD-SEMANTICS, HW-X86-PFEC-PK.
    """
    p = populated_page(main)
    k = main.pkey_alloc(0, AD)
    assert main.pkey_mprotect(p, PAGE, RW, k) == 0
    end = main.store(p, 1)
    assert_pkuerr(end, addr=p, pkey=k, err=0x27)


@pytest.mark.parametrize(("access", "touched", "expected_err"), [
    ("read", True, None),
    ("read", False, None),
    ("write", True, 0x27),
    ("write", False, 0x6),
], ids=["read-populated", "read-never-touched", "write-populated", "write-never-touched"])
def test_e_wd_read_ok_write_pkuerr(main, access, touched, expected_err):
    """Row e: "WD + read / WD + write" -> "ok / SEGV_PKUERR err=0x27 (never-touched page: err=0x6)".

    One access per scenario, as in the C program (a fault ends the child).

    Facts: HW-X86-AD-WD-SEMANTICS, HW-X86-PK-NEEDS-PRESENT, HW-X86-PFEC-PK.
    """
    p = populated_page(main) if touched else new_page(main)
    k = main.pkey_alloc(0, WD)
    assert main.pkey_mprotect(p, PAGE, RW, k) == 0
    if access == "read":
        assert main.load(p) == (0x5A if touched else 0)
    else:
        end = main.store(p, 1)
        assert_pkuerr(end, addr=p, pkey=k, err=expected_err)


def test_e_prot_read_page_wd_key_write_is_pkuerr_err_0x27(main):
    """Row e: "PROT_READ page, key WD, write" -> "SEGV_PKUERR err=0x27".

    Facts: HW-X86-BOTH-VIOLATIONS, SYS-MPROT-ADDITIVE.
    """
    p = populated_page(main)
    k = main.pkey_alloc(0, WD)
    assert main.pkey_mprotect(p, PAGE, PROT_READ, k) == 0
    end = main.store(p, 1)
    assert_pkuerr(end, addr=p, pkey=k, err=0x27)


def test_e_call_into_rx_page_with_ad_key_executes_read_faults(main):
    """Row e: "call into PROT_READ|PROT_EXEC page whose key is AD" -> "**executes** (returns 42);
    a read of it faults".

    The page holds ``mov eax, 42; ret``; the test fetches its bytes.

    Facts: HW-X86-DATA-ONLY, KERN-EXEC-CHECK.
    """
    p = code_page(main)
    k = main.pkey_alloc(0, AD)
    assert main.pkey_mprotect(p, PAGE, PROT_READ | PROT_EXEC, k) == 0
    fetched = bytes(main.execute(p + i) for i in range(len(RET42)))
    assert fetched == RET42
    assert int.from_bytes(fetched[1:5], "little") == 42
    end = main.load(p)
    assert_pkuerr(end, addr=p, pkey=k)


# --- j: freeing a key that pages still carry ------------------------------------------

def test_j_free_in_use_key_keeps_smaps_and_pkru(main):
    """Row j: "pkey_free(k) while pages carry k" -> "0; smaps still shows k; PKRU unchanged".

    Facts: SYS-FREE-NO-INUSE-CHECK, SEC-FREE-DOESNT-REVOKE.
    """
    p = populated_page(main)
    k = main.pkey_alloc(0, WD)
    assert main.pkey_mprotect(p, PAGE, RW, k) == 0
    before = main.rdpkru()
    assert main.pkey_free(k) == 0
    assert smaps_key(main, p) == k
    assert main.rdpkru() == before


def test_j_pkey_mprotect_with_freed_key_is_einval(main):
    """Row j: "pkey_mprotect with the freed key" -> "-1 EINVAL".

    Facts: SYS-FREE-NO-INUSE-CHECK, ERR-TABLE, RACE-FREE-VS-MPROTECT.
    """
    p = populated_page(main)
    k = main.pkey_alloc(0, 0)
    assert main.pkey_mprotect(p, PAGE, RW, k) == 0
    assert main.pkey_free(k) == 0
    assert err_of(main.pkey_mprotect, p, PAGE, RW, k) == errno.EINVAL


def test_j_realloc_ad_same_key_governs_old_pages(main):
    """Row j: "re-alloc with AD returns the same k; read of the old page" -> "SEGV_PKUERR
    (new rights govern the old pages)".

    Facts: RACE-PKEY-UAF, SEC-PKEY-UAF, SYS-ALLOC-LOWEST.
    """
    p = populated_page(main)
    k = main.pkey_alloc(0, 0)
    assert main.pkey_mprotect(p, PAGE, RW, k) == 0
    assert main.load(p) == 0x5A
    assert main.pkey_free(k) == 0
    assert main.pkey_alloc(0, AD) == k
    end = main.load(p)
    assert_pkuerr(end, addr=p, pkey=k)


# --- k: execute-only memory ----------------------------------------------------------

def test_k_mprotect_exec_takes_key_1(main):
    """Row k: "mprotect(PROT_EXEC) on an RW page" -> "0; smaps ProtectionKey **1**; exec ok;
    read gives SEGV_PKUERR si_pkey=1".

    Facts: XO-X86-IMPLICIT, HW-X86-DATA-ONLY.
    """
    p = code_page(main)
    assert main.mprotect(p, PAGE, PROT_EXEC) == 0
    assert smaps_key(main, p) == 1
    assert main.execute(p) == 0xB8
    end = main.load(p)
    assert_pkuerr(end, addr=p, pkey=1)


def test_k_exec_only_key_free_and_pkey_mprotect_are_einval(main):
    """Row k: "pkey_free(exec-only key) / pkey_mprotect(…, exec-only key)" -> "-1 EINVAL / -1 EINVAL".

    Facts: XO-X86-HIDDEN-KEY, SYS-FREE-ERRNO.
    """
    p = code_page(main)
    assert main.mprotect(p, PAGE, PROT_EXEC) == 0
    xo = smaps_key(main, p)
    assert xo == 1
    assert err_of(main.pkey_free, xo) == errno.EINVAL
    q = new_page(main)
    assert err_of(main.pkey_mprotect, q, PAGE, RW, xo) == errno.EINVAL


def test_k_every_exec_only_path_uses_same_key_1(main):
    """Row k: "2nd mprotect(PROT_EXEC) / mmap(PROT_EXEC) / pkey_mprotect(PROT_EXEC, -1)" ->
    "same key 1".

    Facts: XO-X86-IMPLICIT, SYS-MMAP-DEFAULT-KEY, SYS-MPROT-NEG1.
    """
    first = code_page(main)
    assert main.mprotect(first, PAGE, PROT_EXEC) == 0
    assert smaps_key(main, first) == 1
    second = code_page(main)
    assert main.mprotect(second, PAGE, PROT_EXEC) == 0
    assert smaps_key(main, second) == 1
    mapped = new_page(main, prot=PROT_EXEC)
    assert smaps_key(main, mapped) == 1
    third = code_page(main)
    assert main.pkey_mprotect(third, PAGE, PROT_EXEC, -1) == 0
    assert smaps_key(main, third) == 1


def test_k_exec_only_leaves_14_user_keys(main):
    """Row k: "user keys left" -> "14 (first user alloc returns 2)".

    Facts: XO-X86-HIDDEN-KEY, SEC-16-KEYS, RACE-EXEC-ONLY-FIRST-ALLOC.
    """
    p = code_page(main)
    assert main.mprotect(p, PAGE, PROT_EXEC) == 0
    got = []
    while True:
        try:
            got.append(main.pkey_alloc(0, 0))
        except OSError as e:
            assert e.errno == errno.ENOSPC
            break
    assert got[0] == 2
    assert len(got) == 14
    assert got == list(range(2, 16))


def test_k_pkey_mprotect_exec_explicit_key_keeps_it_readable(main):
    """Row k: "pkey_mprotect(PROT_EXEC, explicit k)" -> "keeps k; readable if k allows".

    Facts: SYS-MPROT-EXPLICIT-WINS, XO-EXPLICIT-KEY-READABLE.
    """
    p = code_page(main)
    k = main.pkey_alloc(0, 0)
    assert main.pkey_mprotect(p, PAGE, PROT_EXEC, k) == 0
    assert smaps_key(main, p) == k
    assert main.load(p) == 0xB8


def test_k_clear_ad_of_exec_only_key_makes_page_readable(main):
    """Row k: "clear AD of the exec-only key in PKRU" -> "page readable".

    Facts: XO-X86-IMPLICIT, HW-X86-AD-WD-SEMANTICS, SEC-UNPRIV-WRITERS.
    """
    p = code_page(main)
    assert main.mprotect(p, PAGE, PROT_EXEC) == 0
    xo = smaps_key(main, p)
    assert main.wrpkru(main.rdpkru() & ~(1 << (2 * xo))) is None
    assert main.load(p) == 0xB8


def test_k_mprotect_back_to_read_gives_key_0(main):
    """Row k: "mprotect back to PROT_READ" -> "key 0".

    Facts: XO-X86-REVERT.
    """
    p = code_page(main)
    assert main.mprotect(p, PAGE, PROT_EXEC) == 0
    assert smaps_key(main, p) == 1
    assert main.mprotect(p, PAGE, PROT_READ) == 0
    assert smaps_key(main, p) == 0
    assert main.load(p) == 0xB8


def test_k_mprotect_exec_sets_ad_again_in_caller(main):
    """Row k: "mprotect(PROT_EXEC) with a thread PKRU that allows key 1" -> "AD for key 1 set
    again in the caller (PKRU 0x0 becomes 0x4)".

    Facts: XO-X86-PKRU-SHORTCUT, XO-X86-IMPLICIT.
    """
    p = code_page(main)
    assert main.mprotect(p, PAGE, PROT_EXEC) == 0
    assert main.wrpkru(0x0) is None
    assert main.rdpkru() == 0x0
    assert main.mprotect(p, PAGE, PROT_EXEC) == 0
    assert main.rdpkru() == 0x4


def test_k3_other_thread_with_pkru_0_reads_exec_only_page(main):
    """Row k3: "another thread (PKRU 0) reads the exec-only page" -> "**reads it** (val 0xb8);
    main faults".

    The other thread exists before the mprotect and has set PKRU 0.

    Facts: RACE-XO-OTHER-THREAD, XO-X86-IMPLICIT, HW-X86-THREAD-LOCAL.
    """
    p = code_page(main)
    other = main.clone()
    assert other.wrpkru(0x0) is None
    assert main.mprotect(p, PAGE, PROT_EXEC) == 0
    assert other.load(p) == 0xB8
    end = main.load(p)
    assert_pkuerr(end, addr=p, pkey=1)


# --- q: keys and VMAs ---------------------------------------------------------------

def test_q_new_mmap_key_0_and_map_shared_anon_can_be_keyed(main):
    """Row q: "new mmap; malloc; MAP_SHARED anon can be keyed" -> "key 0; key 0; yes".

    The malloc part is not here: the model has no heap and no malloc.

    Facts: SYS-MMAP-DEFAULT-KEY, SYS-MPROT-ANY-PROT.
    """
    p = new_page(main)
    assert smaps_key(main, p) == 0
    s = new_page(main, flags=MAP_SHARED | MAP_ANONYMOUS)
    assert smaps_key(main, s) == 0
    k = main.pkey_alloc(0, 0)
    assert main.pkey_mprotect(s, PAGE, RW, k) == 0
    assert smaps_key(main, s) == k


def test_q_pkey_mprotect_middle_page_splits_vma(main):
    """Row q: "pkey_mprotect of the middle page" -> "VMA split k1/k2/k1".

    Facts: SYS-MPROT-EXPLICIT-WINS, PROC-SMAPS-LINE.
    """
    p = populated_page(main, 3)
    k1 = main.pkey_alloc(0, 0)
    k2 = main.pkey_alloc(0, 0)
    assert main.pkey_mprotect(p, 3 * PAGE, RW, k1) == 0
    assert main.pkey_mprotect(p + PAGE, PAGE, RW, k2) == 0
    mine = [(lo, hi, pkey) for lo, hi, _perms, _name, pkey in smaps_vmas(main)
            if p <= lo and hi <= p + 3 * PAGE]
    assert mine == [(p, p + PAGE, k1), (p + PAGE, p + 2 * PAGE, k2),
                    (p + 2 * PAGE, p + 3 * PAGE, k1)]


def test_q_prot_none_and_back_and_dontneed_keep_key(main):
    """Row q: "mprotect PROT_NONE and back; MADV_DONTNEED" -> "keep key".

    Facts: SYS-MPROT-NEG1, SEC-REMAP-RETAG.
    """
    p = populated_page(main)
    k = main.pkey_alloc(0, 0)
    assert main.pkey_mprotect(p, PAGE, RW, k) == 0
    assert main.mprotect(p, PAGE, PROT_NONE) == 0
    assert smaps_key(main, p) == k
    assert main.mprotect(p, PAGE, RW) == 0
    assert smaps_key(main, p) == k
    assert main.madvise(p, PAGE, MADV_DONTNEED) == 0
    assert smaps_key(main, p) == k


# --- z: a CPU without PKU (-cpu qemu64), kernel 7.2 ------------------------------------

@pytest.fixture
def no_pku_child():
    """The observation's test program on a CPU without PKU, and one scenario's child.

    The program was one long-lived process that ran each scenario in a forked
    child. The kernel code (``mm_alloc`` zeroes the mm; ``init_new_context``
    sets the allocation map only with OSPKE) makes the first pkey_alloc in a
    fresh exec image take key 0 (arch_max_pkey() is 1), fail in
    ``arch_set_user_pkey_access`` with EINVAL, and leak bit 0 (pkey_free of 0
    is refused because ``execute_only_pkey`` is 0 in the zeroed mm). That
    first EINVAL is the model's code-derived claim, asserted here on the
    parent's probe; fork copies the leaked map, so the child then shows what
    was observed.
    """
    parent = System(kernel="7.2", pku=False).spawn()
    assert err_of(parent.pkey_alloc, 0, 0) == errno.EINVAL
    return parent.fork()


def test_z_no_pku_pkey_alloc_enospc_bad_args_einval(no_pku_child):
    """Row z: "**no-PKU CPU** (qemu64, 7.2): pkey_alloc(0,0) / (0,AD) / (1,0) / (0,4)" ->
    "-1 ENOSPC / -1 ENOSPC / -1 EINVAL / -1 EINVAL".

    Run as the parent's probe (code-derived: EINVAL, see the fixture), then
    fork, then the observed sequence in the child.

    Facts: SYS-X86-DISABLED, SYS-ALLOC-CHECK-ORDER, ERR-TABLE.
    """
    child = no_pku_child
    assert err_of(child.pkey_alloc, 0, 0) == errno.ENOSPC
    assert err_of(child.pkey_alloc, 0, AD) == errno.ENOSPC
    assert err_of(child.pkey_alloc, 1, 0) == errno.EINVAL
    assert err_of(child.pkey_alloc, 0, 4) == errno.EINVAL


def test_z_no_pku_key0_einval_minus1_ok_no_smaps_line_sigill(no_pku_child):
    """Row z: "no-PKU: pkey_mprotect key 0 / key -1 / pkey_free(0) / smaps field / glibc
    pkey_get" -> "**-1 EINVAL** / 0 / -1 EINVAL / absent / **SIGILL**".

    glibc's x86 pkey_get is RDPKRU, which the test executes itself. Same
    program structure as the previous row: parent probe, fork, child.

    Facts: SYS-X86-DISABLED, SYS-MPROT-UNSUPPORTED, PROC-SMAPS-LINE, GLIBC-X86-GET.
    """
    child = no_pku_child
    p = new_page(child)
    assert err_of(child.pkey_mprotect, p, PAGE, RW, 0) == errno.EINVAL
    assert child.pkey_mprotect(p, PAGE, RW, -1) == 0
    assert err_of(child.pkey_free, 0) == errno.EINVAL
    assert "ProtectionKey" not in child.smaps()
    assert all(pkey is None for *_rest, pkey in smaps_vmas(child))
    end = child.rdpkru()
    assert isinstance(end, Killed)
    assert end.signo == signal.SIGILL

"""The model against what real kernels did (``/work/shared/linux-observed.md``).

One test per row of the observation table: a (initial state), b (allocation),
c (argument checks), d (PKRU bits), e (faults, with and without a signal
handler), f (PKRU in signal handlers and frames), g (threads), h (fork),
i (execve), j (freeing a key in use), k (execute-only, with k3), l (the
kernel's copies to and from user memory), m (foreign access), n (glibc),
o0 to o4 (alternate signal stacks), p (init_pkru), q (VMAs) and z (a CPU
without PKU).

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
    PKEY_DISABLE_WRITE, PROT_EXEC, PROT_GROWSDOWN, PROT_NONE, PROT_READ, PROT_WRITE, SA_ONSTACK,
    Exited, Killed, System, glibc,
)
from tests.helpers import err_of, bits as rights

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
    child. The conformance harness later settled the first call of a freshly
    exec'd process: ENOSPC too (7.2.13), although the x86 source we read
    would give EINVAL once. The parent's own first call is asserted here.
    """
    parent = System(kernel="7.2", pku=False).spawn()
    assert err_of(parent.pkey_alloc, 0, 0) == errno.ENOSPC
    return parent.fork()


def test_z_no_pku_pkey_alloc_enospc_bad_args_einval(no_pku_child):
    """Row z: "**no-PKU CPU** (qemu64, 7.2): pkey_alloc(0,0) / (0,AD) / (1,0) / (0,4)" ->
    "-1 ENOSPC / -1 ENOSPC / -1 EINVAL / -1 EINVAL".

    Run as the parent's first call (ENOSPC, see the fixture), then fork,
    then the observed sequence in the child.

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


# --- helpers for the rows with signal handlers, pipes and foreign access ----------------

#: The XSAVE image in the signal frame: XSTATE_BV at byte 512, PKRU at byte 2688.
XSAVE_XSTATE_BV = 512
XSAVE_PKRU = 2688


def frame_pkru(ctx):
    """The handler's 4-byte load of the saved PKRU: the frame's XSAVE image + 2688."""
    return ctx.thread.load(ctx.fpstate + XSAVE_PKRU, 4)


def keyed_page(t, rights, value=0x5A):
    """A populated page holding ``value``, re-keyed with a fresh key allocated with ``rights``."""
    p = populated_page(t)
    assert t.store(p, value) is None
    k = t.pkey_alloc(0, rights)
    assert t.pkey_mprotect(p, PAGE, PROT_READ | PROT_WRITE, k) == 0
    return p, k


def keyed_altstack(t, rights):
    """A 2-page alternate signal stack whose pages carry a fresh key allocated with ``rights``."""
    alt = populated_page(t, 2)
    k = t.pkey_alloc(0, rights)
    assert t.pkey_mprotect(alt, 2 * PAGE, RW, k) == 0
    assert t.sigaltstack(alt, 2 * PAGE) == 0
    return alt, k


# --- e: a fault on the stack, with a SIGSEGV handler ------------------------------------------

@pytest.mark.parametrize(("kernel", "handler_runs"), [
    ("6.1", False),
    ("6.12", True),
    ("7.2", True),
])
@pytest.mark.parametrize("key0_rights", [WD, AD], ids=["key0-WD", "key0-AD"])
def test_e_key0_denied_touch_stack_with_sigsegv_handler(kernel, handler_runs, key0_rights):
    """Row e: "key 0 WD (or AD), then touch the stack, with a SIGSEGV handler" ->
    6.1 "**killed by SIGSEGV** (no frame)", 6.12 "handler runs: si_code 4, si_pkey 0,
    frame PKRU 0x55555556", 7.2 "= 6.12".

    The thread sets key 0's bits in PKRU (0x55555556 for WD) and pushes. The
    handler records what it sees and ends the process with status 17. With
    AD the frame holds that thread's 0x55555555.

    Facts: SIG-X86-612-PERMISSIVE-XSAVE, RACE-PRE612-ALTSTACK, ERR-SIGINFO.
    """
    main = System(kernel=kernel, pku=True).spawn()
    seen = []

    def handler(ctx):
        seen.append((ctx.info.si_code, ctx.info.si_pkey, frame_pkru(ctx)))
        ctx.thread.exit_group(17)

    main.sigaction(signal.SIGSEGV, handler)
    pkru = 0x55555556 if key0_rights == WD else 0x55555555
    assert main.wrpkru(pkru) is None
    end = main.store(main.sp - 8, 0, 8)
    if handler_runs:
        assert end == Exited(17)
        assert seen == [(4, 0, pkru)]
    else:
        assert isinstance(end, Killed), end
        assert end.signo == signal.SIGSEGV
        assert seen == []


# --- f: PKRU in a signal handler and in its frame ----------------------------------------------

def test_f_pkru_inside_sigusr1_handler_is_init_pkru(main):
    """Row f: "PKRU inside a SIGUSR1 handler (interrupted PKRU 0x55555558)" ->
    "0x55555554 (= init_pkru)".

    Facts: SIG-X86-HANDLER-RIGHTS, INIT-PKRU-VALUE.
    """
    assert main.pkey_alloc(0, WD) == 1
    assert main.rdpkru() == 0x55555558
    seen = []
    main.sigaction(signal.SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()))
    assert main.raise_signal(signal.SIGUSR1) is None
    assert seen == [0x55555554]


@pytest.mark.parametrize("interrupted", [0x55555558, 0x0])
def test_f_frame_xsave_pkru_at_2688_and_xstate_bv_bit9(main, interrupted):
    """Row f: "PKRU in the frame's XSAVE area (offset 2688), xstate_bv bit 9" ->
    "0x55555558, bit set (also set when PKRU=0)".

    Facts: SIG-X86-RESTORE, HW-X86-XSAVE-COMPONENT, SIG-X86-613-XSTATE_BV.
    """
    if interrupted == 0x55555558:
        assert main.pkey_alloc(0, WD) == 1
    else:
        assert main.wrpkru(0) is None
    assert main.rdpkru() == interrupted
    seen = []

    def handler(ctx):
        bv = ctx.thread.load(ctx.fpstate + XSAVE_XSTATE_BV, 8)
        seen.append((frame_pkru(ctx), bool(bv & (1 << 9))))

    main.sigaction(signal.SIGUSR1, handler)
    assert main.raise_signal(signal.SIGUSR1) is None
    assert seen == [(interrupted, True)]


def test_f_wrpkru_inside_handler_is_lost(main):
    """Row f: "wrpkru inside the handler, then return" -> "lost: PKRU back to 0x55555558".

    Facts: SIG-X86-HANDLER-WRPKRU-LOST, SIG-X86-RESTORE.
    """
    assert main.pkey_alloc(0, WD) == 1
    main.sigaction(signal.SIGUSR1, lambda ctx: ctx.thread.wrpkru(0))
    assert main.raise_signal(signal.SIGUSR1) is None
    assert main.rdpkru() == 0x55555558


def test_f_frame_pkru_edit_takes_effect(main):
    """Row f: "edit the frame PKRU, then return" -> "takes effect (0x59555558)".

    Facts: SIG-FRAME-PKRU-IS-INPUT, SEC-SIGRETURN.
    """
    assert main.pkey_alloc(0, WD) == 1
    main.sigaction(signal.SIGUSR1,
                   lambda ctx: ctx.thread.store(ctx.fpstate + XSAVE_PKRU, 0x59555558, 4))
    assert main.raise_signal(signal.SIGUSR1) is None
    assert main.rdpkru() == 0x59555558


def test_f_sigsegv_handler_clears_ad_in_frame_load_reexecutes_once(main):
    """Row f: "SIGSEGV handler clears AD in the frame, then returns" -> "faulting load
    re-executes and succeeds, 1 handler call".

    Facts: SIG-FRAME-PKRU-IS-INPUT, ERR-SIGINFO.
    """
    p, k = keyed_page(main, AD, value=42)
    calls = []

    def repair(ctx):
        calls.append((ctx.info.si_code, ctx.info.si_pkey, ctx.info.si_addr))
        saved = frame_pkru(ctx)
        assert ctx.thread.store(ctx.fpstate + XSAVE_PKRU, saved & ~(1 << (2 * k)), 4) is None

    main.sigaction(signal.SIGSEGV, repair)
    assert main.load(p) == 42
    assert calls == [(4, k, p)]


# --- g: threads --------------------------------------------------------------------------------

def creator_0x15555558(t):
    """key 1 allocated with WD (0x55555558), then key 15 opened: 0x15555558."""
    assert t.pkey_alloc(0, WD) == 1
    assert glibc.pkey_set(t, 15, 0) == 0
    assert t.rdpkru() == 0x15555558


def test_g_new_thread_inherits_creators_pkru(main):
    """Row g: "new thread's initial PKRU (creator 0x15555558)" -> "0x15555558 (inherits)".

    Facts: THR-CLONE-INHERITS.
    """
    creator_0x15555558(main)
    thread = main.clone()
    assert thread.rdpkru() == 0x15555558


def test_g_existing_thread_has_ad_for_key_main_allocates(main):
    """Row g: "main allocs k2 with rights 0; the existing thread's bits for k2" -> "01 (AD);
    its read of a k2 page gives SEGV_PKUERR si_pkey=2".

    Facts: SYS-ALLOC-RIGHTS-CALLER-ONLY, RACE-NEW-KEY-EXISTING-THREAD, THR-DENY-BY-DEFAULT-X86.
    """
    creator_0x15555558(main)
    thread = main.clone()
    k2 = main.pkey_alloc(0, 0)
    assert k2 == 2
    assert rights(main.rdpkru(), k2) == 0b00
    assert rights(thread.rdpkru(), k2) == 0b01
    p = populated_page(main)
    assert main.pkey_mprotect(p, PAGE, RW, k2) == 0
    assert main.load(p) == 0x5A
    end = thread.load(p)
    assert_pkuerr(end, addr=p, pkey=2)


def test_g_pkey_set_in_a_thread_does_not_change_the_other(main):
    """Row g: "pkey_set in a thread" -> "does not change the other thread".

    Facts: THR-NO-REMOTE-SET, GLIBC-X86-SET.
    """
    thread = main.clone()
    k = main.pkey_alloc(0, AD)
    before = main.rdpkru()
    assert glibc.pkey_set(thread, k, 0) == 0
    assert rights(thread.rdpkru(), k) == 0b00
    assert main.rdpkru() == before


def test_g_pkey_alloc_in_a_thread_sets_bits_only_there(main):
    """Row g: "pkey_alloc in a thread" -> "sets bits only in that thread; main keeps 01".

    Facts: SYS-ALLOC-RIGHTS-CALLER-ONLY.
    """
    thread = main.clone()
    k = thread.pkey_alloc(0, 0)
    assert rights(thread.rdpkru(), k) == 0b00
    assert rights(main.rdpkru(), k) == 0b01


# --- h: fork -------------------------------------------------------------------------------------

def test_h_fork_child_pkru_and_smaps_key_same_as_parent(main):
    """Row h: "fork: child PKRU / child smaps key" -> "same as parent / same".

    Facts: FORK-PKRU, FORK-VMA-KEYS.
    """
    p, k = keyed_page(main, WD)
    child = main.fork()
    assert child.rdpkru() == main.rdpkru() == 0x55555558
    assert smaps_key(child, p) == smaps_key(main, p) == k


def test_h_child_map_copied_then_independent(main):
    """Row h: "child pkey_mprotect(k), pkey_free(k), alloc, alloc" -> "0, 0, 1, 2 (map copied,
    then independent)".

    Facts: FORK-COPIES-MAP.
    """
    p, k = keyed_page(main, 0)
    assert k == 1
    child = main.fork()
    assert child.pkey_mprotect(p, PAGE, RW, k) == 0
    assert child.pkey_free(k) == 0
    assert child.pkey_alloc(0, 0) == 1
    assert child.pkey_alloc(0, 0) == 2


def test_h_parent_after_child_free_alloc(main):
    """Row h: "parent after the child: free(k), alloc" -> "0, 1".

    Facts: FORK-COPIES-MAP.
    """
    p, k = keyed_page(main, 0)
    child = main.fork()
    assert (child.pkey_mprotect(p, PAGE, RW, k), child.pkey_free(k),
            child.pkey_alloc(0, 0), child.pkey_alloc(0, 0)) == (0, 0, 1, 2)
    assert main.pkey_free(k) == 0
    assert main.pkey_alloc(0, 0) == 1


# --- i: execve -------------------------------------------------------------------------------------

def test_i_execve_pkru_is_init_pkru(main):
    """Row i: "execve: PKRU" -> "0x55555554 (init_pkru)".

    Facts: EXEC-RESET, INIT-PKRU-VALUE.
    """
    assert main.pkey_alloc(0, 0) == 1
    assert main.wrpkru(0x0) is None
    new = main.execve()
    assert new.rdpkru() == 0x55555554


def test_i_execve_resets_allocation_map(main):
    """Row i: "execve: free(k) / pkey_mprotect(k) / first alloc" -> "-1 EINVAL / -1 EINVAL /
    1 (map reset)".

    Facts: EXEC-RESET.
    """
    assert main.pkey_alloc(0, 0) == 1
    k = main.pkey_alloc(0, 0)
    new = main.execve()
    p = new_page(new)
    assert err_of(new.pkey_free, k) == errno.EINVAL
    assert err_of(new.pkey_mprotect, p, PAGE, RW, k) == errno.EINVAL
    assert new.pkey_alloc(0, 0) == 1


# --- l: the kernel's own copies ----------------------------------------------------------------------

def test_l_pipe_write_from_and_read_into_ad_buffers_efault(main):
    """Row l: "write(pipe, AD buf) / read(pipe → AD buf) / read(→ never-touched AD buf)" ->
    "-1 EFAULT".

    No signal: the process is still running afterwards.

    Facts: KERN-COPY-USER, KERN-DOC-SIGSEGV-CLAIM, HW-X86-PK-NEEDS-PRESENT.
    """
    secret, k = keyed_page(main, AD)
    untouched = new_page(main)
    assert main.pkey_mprotect(untouched, PAGE, RW, k) == 0
    plain = populated_page(main)
    r, w = main.pipe()
    assert err_of(main.write, w, secret, 1) == errno.EFAULT
    assert main.write(w, plain, 1) == 1
    assert err_of(main.read, r, secret, 1) == errno.EFAULT
    assert err_of(main.read, r, untouched, 1) == errno.EFAULT
    assert main.alive


# --- m: foreign access --------------------------------------------------------------------------------

def test_m_proc_self_mem_bypasses_ad_and_wd(main):
    """Row m: "/proc/self/mem pread / pwrite on an AD page, pwrite on a WD page" ->
    "succeed (bypass)".

    Facts: KERN-FOREIGN-BYPASS.
    """
    secret, _ = keyed_page(main, AD, value=0x41)
    ro, _ = keyed_page(main, WD, value=0x33)
    plain = populated_page(main)
    mem = main.open_proc_mem()
    assert main.pread(mem, plain, 1, secret) == 1
    assert main.load(plain) == 0x41
    assert main.pwrite(mem, plain, 1, secret) == 1
    assert main.pwrite(mem, plain, 1, ro) == 1
    assert main.load(ro) == 0x41


def test_m_process_vm_readv_writev_own_ad_page(main):
    """Row m: "process_vm_readv/writev, remote = own AD page" -> "succeed".

    Facts: KERN-FOREIGN-BYPASS.
    """
    secret, _ = keyed_page(main, AD, value=0x41)
    plain = populated_page(main)
    me = main.process.pid
    assert main.process_vm_readv(me, [(plain, 1)], [(secret, 1)]) == 1
    assert main.load(plain) == 0x41
    assert main.store(plain, 0x42) is None
    assert main.process_vm_writev(me, [(plain, 1)], [(secret, 1)]) == 1
    assert main.process_vm_readv(me, [(plain + 1, 1)], [(secret, 1)]) == 1
    assert main.load(plain + 1) == 0x42


def test_m_child_process_vm_readv_of_parents_ad_page(main):
    """Row m: "child process_vm_readv of the parent's AD page" -> "succeeds".

    Facts: KERN-FOREIGN-BYPASS, FORK-PKRU.
    """
    secret, _ = keyed_page(main, AD, value=0x41)
    child = main.fork()
    buf = populated_page(child)
    assert child.process_vm_readv(main.process.pid, [(buf, 1)], [(secret, 1)]) == 1
    assert child.load(buf) == 0x41


# --- n: glibc --------------------------------------------------------------------------------------------

def test_n_glibc_pkey_get_initially(main):
    """Row n: "glibc pkey_get(0..15) initially" -> "0,1,1,…,1".

    Facts: GLIBC-X86-GET, INIT-PKRU-VALUE.
    """
    assert [glibc.pkey_get(main, k) for k in range(16)] == [0] + [1] * 15


def test_n_glibc_pkey_get_set_out_of_range_einval(main):
    """Row n: "pkey_get(16) / pkey_get(-1) / pkey_set(16,0) / pkey_set(1,4)" -> "-1 EINVAL".

    Facts: GLIBC-X86-GET, GLIBC-X86-SET, ERR-TABLE.
    """
    assert err_of(glibc.pkey_get, main, 16) == errno.EINVAL
    assert err_of(glibc.pkey_get, main, -1) == errno.EINVAL
    assert err_of(glibc.pkey_set, main, 16, 0) == errno.EINVAL
    assert err_of(glibc.pkey_set, main, 1, 4) == errno.EINVAL
    assert main.rdpkru() == 0x55555554


def test_n_glibc_pkey_set_on_never_allocated_key(main):
    """Row n: "pkey_set(7, WD) on a never-allocated key" -> "0, PKRU changed (no allocation check)".

    Facts: GLIBC-X86-SET, GLIBC-UB-UNALLOCATED.
    """
    assert glibc.pkey_set(main, 7, WD) == 0
    assert main.rdpkru() == 0x55559554
    assert rights(main.rdpkru(), 7) == 0b10


def test_n_glibc_alloc_mprotect_free_same_as_raw_syscalls(kernel):
    """Row n: "glibc pkey_alloc/pkey_mprotect/pkey_free" -> "same as the raw syscalls".

    Facts: GLIBC-MPROTECT-NEG1, ERR-TABLE.
    """
    def run(via_glibc):
        t = System(kernel=kernel, pku=True).spawn()
        alloc = (lambda *a: glibc.pkey_alloc(t, *a)) if via_glibc else t.pkey_alloc
        mprot = (lambda *a: glibc.pkey_mprotect(t, *a)) if via_glibc else t.pkey_mprotect
        free = (lambda *a: glibc.pkey_free(t, *a)) if via_glibc else t.pkey_free
        p = new_page(t)
        results = []
        for call, args in [(alloc, (0, WD)), (mprot, (p, PAGE, RW, 1)), (mprot, (p, PAGE, RW, 5)),
                           (free, (1,)), (free, (1,)), (alloc, (1, 0)), (alloc, (0, 4)),
                           (mprot, (p, PAGE, PROT_READ, -1))]:
            try:
                results.append(call(*args))
            except OSError as e:
                results.append(-e.errno)
        return results, smaps_key(t, p), t.rdpkru()

    raw = run(False)
    assert run(True) == raw
    assert raw == ([1, 0, -errno.EINVAL, 0, -errno.EINVAL, -errno.EINVAL, -errno.EINVAL, 0],
                   1, 0x55555558)


# --- o: alternate signal stacks ------------------------------------------------------------------

def test_o0_altstack_on_key0_sigusr1(main):
    """Row o0: "altstack on key 0, SIGUSR1" -> "handler runs (init_pkru), PKRU restored".

    Facts: SIG-X86-HANDLER-RIGHTS, SIG-X86-RESTORE.
    """
    assert main.pkey_alloc(0, WD) == 1
    alt = populated_page(main, 2)
    assert main.sigaltstack(alt, 2 * PAGE) == 0
    seen = []
    main.sigaction(signal.SIGUSR1,
                   lambda ctx: seen.append((ctx.thread.rdpkru(), alt <= ctx.frame < alt + 2 * PAGE)),
                   SA_ONSTACK)
    assert main.raise_signal(signal.SIGUSR1) is None
    assert seen == [(0x55555554, True)]
    assert main.rdpkru() == 0x55555558


@pytest.mark.parametrize(("kernel", "handler_runs"), [
    ("6.1", False),
    ("6.12", True),
    ("7.2", True),
])
def test_o1_altstack_key_ad_in_thread_asm_handler(kernel, handler_runs):
    """Row o1: "altstack key k, thread AD on k, asm handler" -> 6.1 "**killed SIGSEGV**",
    6.12 "handler runs (PKRU init), PKRU restored to AD after return", 7.2 "= 6.12".

    The assembly handler reads PKRU, then opens every key (WRPKRU 0) before
    it touches its stack, and returns.

    Facts: SIG-X86-612-PERMISSIVE-XSAVE, SIG-HANDLER-STACK-KEY.
    """
    main = System(kernel=kernel, pku=True).spawn()
    _, k = keyed_altstack(main, AD)
    interrupted = main.rdpkru()
    assert rights(interrupted, k) == 0b01
    seen = []

    def asm_handler(ctx):
        seen.append(ctx.thread.rdpkru())
        assert ctx.thread.wrpkru(0) is None

    main.sigaction(signal.SIGUSR1, asm_handler, SA_ONSTACK, touches_stack=False)
    end = main.raise_signal(signal.SIGUSR1)
    if handler_runs:
        assert end is None
        assert seen == [0x55555554]
        assert main.rdpkru() == interrupted
        assert rights(main.rdpkru(), k) == 0b01
    else:
        assert isinstance(end, Killed), end
        assert end.signo == signal.SIGSEGV
        assert seen == []


def test_o2_altstack_key_allowed_plain_c_handler_killed(main):
    """Row o2: "altstack key k, thread allows k, plain C handler" -> "killed SIGSEGV
    (init_pkru denies k)" (all kernels).

    Facts: SIG-HANDLER-STACK-KEY, SIG-X86-HANDLER-RIGHTS.
    """
    _, k = keyed_altstack(main, 0)
    calls = []
    main.sigaction(signal.SIGUSR1, lambda ctx: calls.append(1), SA_ONSTACK)
    end = main.raise_signal(signal.SIGUSR1)
    assert isinstance(end, Killed), end
    assert end.signo == signal.SIGSEGV
    assert calls == []


def test_o3_altstack_key_allowed_asm_handler_wrpkru0_first_works(main):
    """Row o3: "same as o2, asm handler that does wrpkru(0) first" -> "works" (all kernels).

    Facts: SIG-HANDLER-STACK-KEY.
    """
    _, k = keyed_altstack(main, 0)
    before = main.rdpkru()
    calls = []

    def asm_handler(ctx):
        assert ctx.thread.wrpkru(0) is None
        assert ctx.thread.store(ctx.frame - 8, 0, 8) is None    # now it may push
        calls.append(1)

    main.sigaction(signal.SIGUSR1, asm_handler, SA_ONSTACK, touches_stack=False)
    assert main.raise_signal(signal.SIGUSR1) is None
    assert calls == [1]
    assert main.rdpkru() == before


@pytest.mark.parametrize(("kernel", "expected"), [
    ("6.1", None),
    ("6.12", Exited(17)),
    ("7.2", Exited(17)),
])
def test_o4_pkey_sigsegv_handler_on_ad_altstack(kernel, expected):
    """Row o4: "pkey SIGSEGV, handler on an AD altstack" -> 6.1 "**killed SIGSEGV**",
    6.12 "handler runs (exit 17)", 7.2 "= 6.12".

    The handler calls _exit(17) without touching its stack (assembly kind).

    Facts: SIG-X86-612-PERMISSIVE-XSAVE, RACE-PRE612-ALTSTACK.
    """
    main = System(kernel=kernel, pku=True).spawn()
    keyed_altstack(main, AD)
    p, k = keyed_page(main, AD)
    main.sigaction(signal.SIGSEGV, lambda ctx: ctx.thread.exit_group(17), SA_ONSTACK,
                   touches_stack=False)
    end = main.load(p)
    if expected is None:
        assert isinstance(end, Killed), end
        assert end.signo == signal.SIGSEGV
    else:
        assert end == expected


# --- p: init_pkru ------------------------------------------------------------------------------------------

def test_p_debugfs_init_pkru_reads_default(main):
    """Row p: "debugfs `x86/init_pkru`" -> "0x55555554".

    Facts: INIT-PKRU-TUNABLE, INIT-PKRU-VALUE.
    """
    assert main.system.debugfs_read("x86/init_pkru") == "0x55555554\n"


def test_p_debugfs_write_key0_bits_or_garbage_einval(main):
    """Row p: "write 0x55555555 / 0x2 / "hello"" -> "-1 EINVAL".

    Facts: INIT-PKRU-TUNABLE.
    """
    for text in ("0x55555555", "0x2", "hello"):
        assert err_of(main.system.debugfs_write, "x86/init_pkru", text) == errno.EINVAL
    assert main.system.debugfs_read("x86/init_pkru") == "0x55555554\n"


@pytest.mark.parametrize("kernel", ["6.1", "7.2"])
def test_p_boot_parameter_init_pkru(kernel):
    """Row p: "boot parameter `init_pkru=0x15555554`" -> 6.1 "PID 1, main process and handlers
    start with it", 6.12 "not run", 7.2 "=" (so 6.12 is not tested here).

    PID 1 forks and executes the test program, which raises SIGUSR1.

    Facts: INIT-PKRU-TUNABLE, SIG-HANDLER-RIGHTS-GLOBAL, EXEC-RESET.
    """
    system = System(kernel=kernel, pku=True, init_pkru="0x15555554")
    pid1 = system.spawn()
    assert pid1.process.pid == 1
    assert pid1.rdpkru() == 0x15555554
    prog = pid1.fork().execve()
    assert prog.rdpkru() == 0x15555554
    seen = []
    prog.sigaction(signal.SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()))
    assert prog.wrpkru(0x0) is None
    assert prog.raise_signal(signal.SIGUSR1) is None
    assert seen == [0x15555554]

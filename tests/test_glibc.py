"""glibc's pkeys functions on x86-64: pkey_get/pkey_set in user space, thin syscall wrappers.

Expected values are glibc's and Linux's: row n (and z) of
``/work/shared/linux-observed.md``, the facts of ``pkeys-facts.md`` (IDs in the
docstrings) and glibc's sources (``sysdeps/unix/sysv/linux/x86/pkey_set.c``,
``pkey_get.c``, ``sysdeps/unix/sysv/linux/pkey_mprotect.c``, the prototypes in
``bits/mman-shared.h``).
"""

import errno

import pytest

from pkeyspec import (
    MAP_ANONYMOUS, MAP_PRIVATE, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE, PROT_EXEC, PROT_READ,
    PROT_WRITE, SIGILL, Killed, System, glibc,
)
from tests.helpers import err_of, bits

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
AD = PKEY_DISABLE_ACCESS
WD = PKEY_DISABLE_WRITE
ILL_ILLOPN = 2


def spawn(pku=True, kernel="7.2"):
    return System(kernel=kernel, pku=pku).spawn()




# --- pkey_get ------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.2"])
def test_pkey_get_initially_0_then_1_for_keys_1_to_15(kernel):
    """Row n: "glibc pkey_get(0..15) initially" -> "0,1,1,…,1".

    Facts: GLIBC-X86-GET, INIT-PKRU-VALUE.
    """
    t = spawn(kernel=kernel)
    assert [glibc.pkey_get(t, k) for k in range(16)] == [0] + [1] * 15


@pytest.mark.parametrize("rights", [0, 1, 2, 3])
def test_pkey_get_returns_the_two_pkru_bits(rights):
    """pkey_get(k) = (PKRU >> 2k) & 3: the same encoding as PKEY_DISABLE_ACCESS/WRITE.

    AD alone reads back as 1 (not 3): pkey_get does not translate "AD implies no write".

    Facts: GLIBC-X86-GET, HW-X86-PKRU-LAYOUT.
    """
    t = spawn()
    for k in (0, 7, 15):
        assert glibc.pkey_set(t, k, rights) == 0
        assert glibc.pkey_get(t, k) == rights
        assert bits(t.rdpkru(), k) == rights


@pytest.mark.parametrize("key", [-1, 16, 17, 2**31 - 1, -2**31])
def test_pkey_get_key_out_of_range_einval(key):
    """Row n: "pkey_get(16) / pkey_get(-1)" -> "-1 EINVAL".

    Facts: GLIBC-X86-GET, ERR-TABLE.
    """
    t = spawn()
    assert err_of(glibc.pkey_get, t, key) == errno.EINVAL


def test_pkey_get_key_is_a_c_int():
    """``int pkey_get(int key)``: 2**32 + 1 arrives as key 1, 2**32 - 1 as -1 (EINVAL).

    Source: glibc ``bits/mman-shared.h`` prototype.
    """
    t = spawn()
    assert glibc.pkey_get(t, 2**32 + 1) == 1
    assert err_of(glibc.pkey_get, t, 2**32 - 1) == errno.EINVAL


def test_pkey_get_works_on_never_allocated_keys_and_changes_nothing():
    """pkey_get checks no allocation and does not enter the kernel.

    Facts: GLIBC-X86-GET, GLIBC-UB-UNALLOCATED.
    """
    t = spawn()
    before = (t.rdpkru(), t.process.mm.pkey_allocation_map)
    assert glibc.pkey_get(t, 9) == 1
    assert (t.rdpkru(), t.process.mm.pkey_allocation_map) == before


# --- pkey_set ------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "rights"), [(16, 0), (1, 4), (-1, 0), (15, 5), (0, 0xFFFFFFFF),
                                             (-2**31, 0)])
def test_pkey_set_einval_for_key_out_of_range_or_rights_above_3(key, rights):
    """Row n: "pkey_set(16,0) / pkey_set(1,4)" -> "-1 EINVAL"; PKRU is not touched.

    Facts: GLIBC-X86-SET, ERR-TABLE.
    """
    t = spawn()
    before = t.rdpkru()
    assert err_of(glibc.pkey_set, t, key, rights) == errno.EINVAL
    assert t.rdpkru() == before


def test_pkey_set_rights_is_an_unsigned_int():
    """``int pkey_set(int key, unsigned int rights)``: 2**32 + 2 arrives as 2 (WD).

    Source: glibc ``bits/mman-shared.h``.
    """
    t = spawn()
    assert glibc.pkey_set(t, 3, 2**32 + 2) == 0
    assert bits(t.rdpkru(), 3) == WD


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.2"])
def test_pkey_set_on_never_allocated_key_changes_pkru(kernel):
    """Row n: "pkey_set(7, WD) on a never-allocated key" -> "0, PKRU changed (no allocation check)".

    The allocation map is not touched: key 7 is still free for pkey_free
    (EINVAL) and the next pkey_alloc still returns 1.

    Facts: GLIBC-X86-SET, GLIBC-UB-UNALLOCATED.
    """
    t = spawn(kernel=kernel)
    assert glibc.pkey_set(t, 7, WD) == 0
    assert t.rdpkru() == 0x55559554
    assert bits(t.rdpkru(), 7) == WD
    assert err_of(t.pkey_free, 7) == errno.EINVAL
    assert t.pkey_alloc(0, 0) == 1


def test_pkey_set_read_modify_writes_only_its_key_in_the_calling_thread():
    """Only the two bits of the key change, and only in the calling thread.

    Facts: GLIBC-X86-SET, THR-NO-REMOTE-SET, HW-X86-THREAD-LOCAL.
    """
    t = spawn()
    u = t.clone()
    assert t.wrpkru(0x12345678 & ~3) is None
    assert glibc.pkey_set(t, 5, 0) == 0
    assert t.rdpkru() == (0x12345678 & ~3) & ~(3 << 10)
    assert u.rdpkru() == 0x55555554


def test_pkey_set_steps_are_rdpkru_then_wrpkru():
    """pkey_set is two instructions: RDPKRU, then WRPKRU; PKRU changes only at the second.

    Facts: GLIBC-X86-SET, RACE-GLIBC-SET-VS-SIGNAL.
    """
    t = spawn()
    steps = glibc.pkey_set_steps(t, 1, 0)
    assert next(steps) == "rdpkru"
    assert t.rdpkru() == 0x55555554
    assert next(steps) == "wrpkru"
    assert t.rdpkru() == 0x55555550
    with pytest.raises(StopIteration) as done:
        next(steps)
    assert done.value.value == 0


def test_pkey_set_steps_with_bad_arguments_fail_before_any_instruction():
    """EINVAL comes before RDPKRU: the first step raises it and PKRU is untouched."""
    t = spawn()
    steps = glibc.pkey_set_steps(t, 16, 0)
    with pytest.raises(OSError) as exc:
        next(steps)
    assert exc.value.errno == errno.EINVAL
    assert t.rdpkru() == 0x55555554


def test_pkey_set_is_not_atomic_a_change_between_its_steps_is_lost():
    """Between pkey_set's RDPKRU and WRPKRU the thread's own pkey_alloc opens key 2;
    the WRPKRU writes back the stale value, so key 2 is AD again.

    Facts: RACE-GLIBC-SET-VS-SIGNAL, GLIBC-X86-SET, SYS-ALLOC-X86-RIGHTS-MAP.
    """
    t = spawn()
    assert t.pkey_alloc(0, AD) == 1
    steps = glibc.pkey_set_steps(t, 1, 0)
    assert next(steps) == "rdpkru"
    assert t.pkey_alloc(0, 0) == 2
    assert bits(t.rdpkru(), 2) == 0
    assert next(steps) == "wrpkru"
    assert bits(t.rdpkru(), 1) == 0
    assert bits(t.rdpkru(), 2) == AD


# --- a CPU without PKU -------------------------------------------------------------------

@pytest.mark.parametrize("call", ["pkey_get", "pkey_set"])
def test_pkey_get_and_set_die_of_sigill_without_pku(call):
    """Row z: "glibc pkey_get" on a CPU without PKU -> "SIGILL" (RDPKRU is #UD).

    si_code is ILL_ILLOPN (2).

    Facts: GLIBC-UB-UNALLOCATED, SYS-X86-DISABLED. Source: arch/x86/kernel/traps.c
    ``handle_invalid_op``.
    """
    t = spawn(pku=False)
    end = glibc.pkey_get(t, 1) if call == "pkey_get" else glibc.pkey_set(t, 1, 0)
    assert isinstance(end, Killed), end
    assert end.signo == SIGILL
    assert end.siginfo.si_code == ILL_ILLOPN
    assert not t.alive


def test_pkey_set_argument_check_comes_before_the_instruction_without_pku():
    """Without PKU, pkey_set(16, 0) and pkey_get(-1) still return EINVAL: no RDPKRU is run."""
    t = spawn(pku=False)
    assert err_of(glibc.pkey_set, t, 16, 0) == errno.EINVAL
    assert err_of(glibc.pkey_get, t, -1) == errno.EINVAL
    assert t.alive


# --- the syscall wrappers ----------------------------------------------------------------------

def test_pkey_alloc_wrapper_truncates_flags_to_unsigned_int():
    """glibc ``int pkey_alloc(unsigned int flags, unsigned int access_rights)``:
    pkey_alloc(2**32, 0) is pkey_alloc(0, 0) to the kernel and returns 1; the raw
    system call (``unsigned long flags``) gets EINVAL.

    Facts: SYS-ALLOC-CHECK-ORDER. Source: glibc ``bits/mman-shared.h``;
    mm/mprotect.c ``SYSCALL_DEFINE2(pkey_alloc, unsigned long, flags, unsigned long, init_val)``.
    """
    t = spawn()
    assert err_of(t.pkey_alloc, 2**32, 0) == errno.EINVAL
    assert glibc.pkey_alloc(t, 2**32, 0) == 1
    assert err_of(t.pkey_alloc, 0, 2**32 + AD) == errno.EINVAL
    assert glibc.pkey_alloc(t, 0, 2**32 + AD) == 2
    assert bits(t.rdpkru(), 2) == AD


def test_pkey_free_wrapper_takes_an_int():
    """``int pkey_free(int key)``: 2**32 + k frees k, as the kernel's ``int pkey`` would."""
    t = spawn()
    k = glibc.pkey_alloc(t, 0, 0)
    assert glibc.pkey_free(t, 2**32 + k) == 0
    assert err_of(glibc.pkey_free, t, k) == errno.EINVAL


def test_glibc_wrappers_return_what_the_system_calls_return():
    """Row n: "glibc pkey_alloc/pkey_mprotect/pkey_free" -> "same as the raw syscalls".

    The same sequence, once through glibc and once raw, in two fresh processes.

    Facts: ERR-TABLE, GLIBC-MPROTECT-NEG1.
    """
    def run(alloc, mprotect, free):
        t = spawn()
        p = t.mmap(0, PAGE, RW, ANON)
        out = []
        for call, args in [(alloc, (0, 0)), (alloc, (0, AD)), (mprotect, (p, PAGE, RW, 1)),
                           (free, (1,)), (free, (1,)), (mprotect, (p, PAGE, RW, 1)),
                           (alloc, (1, 0)), (alloc, (0, 4)), (free, (16,)),
                           (mprotect, (p, PAGE, RW, -1))]:
            try:
                out.append(call(t, *args))
            except OSError as e:
                out.append(-e.errno)
        return out, t.smaps_pkey(p), t.rdpkru()

    raw = run(lambda t, *a: t.pkey_alloc(*a), lambda t, *a: t.pkey_mprotect(*a),
              lambda t, *a: t.pkey_free(*a))
    via_glibc = run(glibc.pkey_alloc, glibc.pkey_mprotect, glibc.pkey_free)
    assert raw == via_glibc
    assert raw[0] == [1, 2, 0, 0, -errno.EINVAL, -errno.EINVAL, -errno.EINVAL, -errno.EINVAL,
                      -errno.EINVAL, 0]
    assert raw[1] == 1


@pytest.mark.parametrize("pku", [True, False])
def test_pkey_mprotect_minus_1_is_mprotect_even_without_pku(pku):
    """glibc pkey_mprotect(…, -1) calls mprotect: the VMA keeps its key; works without PKU.

    With PKU the page carries key k, and pkey_mprotect(-1) keeps k; without
    PKU there is no key, and the call returns 0 where pkey_mprotect(…, 0)
    fails with EINVAL (row z).

    Facts: GLIBC-MPROTECT-NEG1, SYS-MPROT-NEG1, SYS-MPROT-UNSUPPORTED.
    """
    t = spawn(pku=pku)
    p = t.mmap(0, PAGE, RW, ANON)
    if pku:
        k = t.pkey_alloc(0, 0)
        assert t.pkey_mprotect(p, PAGE, RW, k) == 0
    assert glibc.pkey_mprotect(t, p, PAGE, PROT_READ, -1) == 0
    assert glibc.pkey_mprotect(t, p, PAGE, PROT_READ, 2**32 - 1) == 0
    if pku:
        assert t.smaps_pkey(p) == k
    else:
        assert err_of(glibc.pkey_mprotect, t, p, PAGE, PROT_READ, 0) == errno.EINVAL
    assert t.store(p, 1) is not None          # PROT_READ now


def test_pkey_mprotect_minus_1_with_prot_exec_takes_the_exec_only_key():
    """Because it is mprotect, glibc pkey_mprotect(PROT_EXEC, -1) gives the exec-only key 1.

    Facts: GLIBC-MPROTECT-NEG1, XO-X86-IMPLICIT.
    """
    t = spawn()
    p = t.mmap(0, PAGE, RW, ANON)
    assert glibc.pkey_mprotect(t, p, PAGE, PROT_EXEC, -1) == 0
    assert t.smaps_pkey(p) == 1
    assert bits(t.rdpkru(), 1) == AD

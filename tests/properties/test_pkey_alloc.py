"""Properties of docs/reference/pkey_alloc.md."""

from hypothesis import assume, given, settings, strategies as st

from pkeyspec import INIT_PKRU_VALUE, PAGE_SIZE, Killed, glibc
from tests.helpers import err_of
from tests.properties import proves
from tests.properties.histories import ANON, RW, keyed_page, killed, pkru_values, rights, worlds

EINVAL, ENOSPC, SIGSEGV, SEGV_PKUERR = 22, 28, 11, 4


def refusal(flags, rights, bitmap, pku=True):
    """The errno of Linux's checks, in order: flags != 0, rights outside 0x3, no free key,
    no PKU; None when the call succeeds."""
    if flags:
        return EINVAL
    if rights & ~3:
        return EINVAL
    if not pku or bitmap & 0xFFFF == 0xFFFF:
        return ENOSPC
    return None


def with_rights(pkru, k, r):
    """Linux's rule: PKEY_DISABLE_ACCESS (1) sets AD, bit 2k, and PKEY_DISABLE_WRITE (2) WD,
    bit 2k+1; the key's two bits are replaced and no other."""
    return pkru & ~(3 << 2 * k) | (r & 1) << 2 * k | (r >> 1 & 1) << (2 * k + 1)


@proves("SYS-ALLOC-RIGHTS-CALLER-ONLY")
@settings(deadline=None, max_examples=80)
@given(worlds(), st.integers(0, 3), rights)
def test_pkey_alloc_writes_the_rights_into_the_callers_pkru_only(w, who, r):
    """pkey_alloc changes the two bits of the new key in the caller's PKRU and no other
    thread's PKRU; a thread created later starts with the caller's new PKRU; an older
    thread with the default PKRU (AD for keys 1 to 15) faults on memory with the new key."""
    threads = list(w.threads)
    older = threads[0].clone()
    older.wrpkru(INIT_PKRU_VALUE)
    threads.append(older)
    caller = threads[who % (len(threads) - 1)]
    before = {u: u.rdpkru() for u in threads}
    try:
        k = caller.pkey_alloc(0, r)
    except OSError:
        assume(False)                               # ENOSPC: no key to look at
    assert caller.rdpkru() == with_rights(before[caller], k, r)
    assert all(u.rdpkru() == before[u] for u in threads if u is not caller)
    assert caller.clone().rdpkru() == caller.rdpkru()
    page = keyed_page(caller, k, value=1)
    if k != 0:
        end = older.load(page)
        assert killed(end, SIGSEGV, SEGV_PKUERR) and end.siginfo.si_pkey == k


@proves("SYS-ALLOC-X86-RIGHTS-MAP")
@settings(deadline=None, max_examples=80)
@given(worlds(), pkru_values, rights)
def test_disable_access_is_ad_and_disable_write_is_wd(w, pkru, r):
    """Whatever the caller's PKRU was, pkey_alloc(0, r) sets AD of the new key k (bit 2k)
    iff r has PKEY_DISABLE_ACCESS and WD (bit 2k+1) iff it has PKEY_DISABLE_WRITE, keeps
    every other bit, and so lets the thread read iff r is 0 or PKEY_DISABLE_WRITE, and
    write iff r is 0."""
    t = w.t
    page = t.mmap(0, PAGE_SIZE, RW, ANON)
    t.wrpkru(pkru)
    try:
        k = t.pkey_alloc(0, r)
    except OSError:
        assume(False)
    assert t.rdpkru() == with_rights(pkru, k, r)
    t.pkey_mprotect(page, PAGE_SIZE, RW, k)
    read = t.load(page)
    assert isinstance(read, Killed) == (r not in (0, 2))
    if r in (0, 2):
        assert isinstance(t.store(page, 1), Killed) == (r != 0)


#: Integers around the C boundaries (2**32, 2**64, negative), and any integer.
wide = st.one_of(st.builds(lambda m, w, low: m * 2**w + low,
                           st.integers(-2, 2), st.sampled_from([32, 64]), st.integers(0, 9)),
                 st.integers(-2**70, 2**70))


@proves("SYS-SIGNATURES")
@settings(deadline=None, max_examples=100)
@given(worlds(), wide, wide, st.booleans())
def test_the_arguments_are_unsigned_long_and_unsigned_int_in_glibc(w, flags, init_val, via_glibc):
    """The system call takes flags and rights modulo 2**64 (unsigned long), glibc's
    pkey_alloc modulo 2**32 (unsigned int): the call then succeeds or fails exactly as
    pkey_alloc with those values would."""
    t = w.t
    width = 32 if via_glibc else 64
    f, v = flags % 2**width, init_val % 2**width
    bitmap = t.process.mm.pkey_allocation_map
    call = glibc.pkey_alloc if via_glibc else type(t).pkey_alloc
    errno = refusal(f, v, bitmap)
    if errno is not None:
        assert err_of(call, t, flags, init_val) == errno
    else:
        k = call(t, flags, init_val)
        assert not bitmap >> k & 1 and t.rdpkru() >> 2 * k & 3 == v


@proves("SYS-ALLOC-CHECK-ORDER")
@settings(deadline=None, max_examples=100)
@given(worlds(pku=(True, False)), st.integers(0, 3),
       st.one_of(st.just(0), wide), st.one_of(rights, st.sampled_from([4, 8, 0x10]), wide))
def test_pkey_alloc_checks_flags_then_rights_then_free_keys(w, who, flags, r):
    """pkey_alloc fails with EINVAL for flags != 0, then EINVAL for rights outside 0x3, then
    ENOSPC when every key is allocated or the CPU has no keys; a call that fails changes
    nothing in the map. (Without PKU: the newest stable release of each series.)"""
    t = w.threads[who % len(w.threads)]
    bitmap = t.process.mm.pkey_allocation_map
    errno = refusal(flags % 2**64, r % 2**64, bitmap, w.system.pku)
    if errno is None:
        assert not bitmap >> t.pkey_alloc(flags, r) & 1
    else:
        assert err_of(t.pkey_alloc, flags, r) == errno
        assert t.process.mm.pkey_allocation_map == bitmap

"""Properties of docs/reference/pkey_free.md."""

from hypothesis import assume, given, settings, strategies as st

from pkeyspec import PAGE_SIZE, PROT_EXEC
from tests.helpers import err_of
from tests.properties import proves
from tests.properties.histories import (
    ANON, PROTS, c_int, keyed_page, keys, prots, take_key, worlds,
)

EINVAL = 22


def smaps_keys(t):
    """Every ``ProtectionKey:`` line of /proc/self/smaps, in order."""
    return [line for line in t.smaps().splitlines() if line.startswith("ProtectionKey:")]


@proves("SYS-FREE-NO-INUSE-CHECK")
@settings(deadline=None, max_examples=80)
@given(worlds(), keys, prots, st.booleans())
def test_freeing_a_key_in_use_succeeds_and_changes_nothing_else(w, k, prot, touched):
    """pkey_free(k) of a key that still tags memory returns 0 and clears bit k of the map
    only: every mapping keeps its key (smaps shows the same keys) and no thread's PKRU
    changes."""
    threads, t = w.threads, w.t
    assume(take_key(t, k))
    page = keyed_page(t, k, prot, 1 if touched else None)
    mm = t.process.mm
    bitmap, vmas, ptes = mm.pkey_allocation_map, list(mm.vmas), dict(mm.ptes)
    shown, pkrus = smaps_keys(t), [u.rdpkru() for u in threads]
    assert t.pkey_free(k) == 0
    assert mm.pkey_allocation_map == bitmap & ~(1 << k)
    assert (mm.vmas, mm.ptes, smaps_keys(t)) == (vmas, ptes, shown)
    assert t.smaps_pkey(page) == k
    assert [u.rdpkru() for u in threads] == pkrus


@proves("SYS-FREE-KEY0")
@settings(deadline=None, max_examples=60)
@given(worlds(), st.data(), st.sampled_from([p for p in PROTS if p != PROT_EXEC]))
def test_key_0_can_be_freed_and_comes_back_from_pkey_alloc(w, data, prot):
    """While key 0 is allocated, pkey_free(0) succeeds; then pkey_mprotect(..., 0) is EINVAL
    while plain mprotect works, the next pkey_alloc returns 0, and pkey_mprotect(..., 0)
    works again."""
    t, mm = w.t, w.mm
    assume(mm.pkey_allocation_map & 1 and mm.execute_only_pkey != 0)
    a = data.draw(st.sampled_from(w.mapped() + [t.mmap(0, PAGE_SIZE, prot, ANON)]), "page")
    assert t.pkey_free(0) == 0
    assert err_of(t.pkey_mprotect, a, PAGE_SIZE, prot, 0) == EINVAL
    # prot is never PROT_EXEC alone: that mprotect would take key 0 as the execute-only key.
    assert t.mprotect(a, PAGE_SIZE, prot) == 0
    assert t.pkey_alloc(0, 0) == 0
    assert t.pkey_mprotect(a, PAGE_SIZE, prot, 0) == 0


wide_ints = st.one_of(st.integers(-2, 17), st.builds(lambda m, low: m * 2**32 + low,
                                                     st.integers(-3, 3), st.integers(-2, 17)),
                      st.integers(-2**70, 2**70))


@proves("SYS-FREE-ERRNO")
@settings(deadline=None, max_examples=100)
@given(worlds(), st.one_of(st.just("execute-only key"), wide_ints))
def test_pkey_free_refuses_what_is_not_an_allocated_visible_key(w, pkey):
    """pkey_free (of the C int the value becomes) fails with EINVAL for a key < 0, >= 16,
    not allocated, or the execute-only key, and for the second free of a key; otherwise it
    returns 0 and clears the key's bit."""
    t = w.t
    mm = t.process.mm
    if pkey == "execute-only key":
        pkey = mm.execute_only_pkey
    bitmap, k = mm.pkey_allocation_map, c_int(pkey)
    if k < 0 or k >= 16 or not bitmap >> k & 1 or k == mm.execute_only_pkey:
        assert err_of(t.pkey_free, pkey) == EINVAL and mm.pkey_allocation_map == bitmap
    else:
        assert t.pkey_free(pkey) == 0 and mm.pkey_allocation_map == bitmap & ~(1 << k)
        assert err_of(t.pkey_free, pkey) == EINVAL

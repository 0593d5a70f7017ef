"""Properties of docs/reference/access.md: the signal a denied access raises."""

from hypothesis import assume, given, settings, strategies as st

from pkeyspec import PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE
from tests.properties import proves
from tests.properties.histories import (
    keyed_page, keys, killed, pkru_values, prots, take_key, worlds,
)

SIGSEGV, SEGV_ACCERR, SEGV_PKUERR = 11, 2, 4


@proves("ERR-SIGINFO")
@settings(deadline=None, max_examples=120)
@given(worlds(), st.integers(0, 3), keys, prots, st.booleans(), pkru_values, st.booleans(),
       st.booleans(), st.sampled_from([1, 2, 4, 8]), st.integers(0, PAGE_SIZE - 8))
def test_a_denied_key_is_segv_pkuerr_with_address_and_key(w, who, k, prot, touched, pkru, write,
                                                          by_wd, size, offset):
    """When the accessing thread's PKRU denies a load or store to a page with key k (whatever
    the page's protection), the process gets SIGSEGV, si_code 4 (SEGV_PKUERR), si_addr the
    address the instruction touched and si_pkey = k."""
    assume(take_key(w.t, k))
    page = keyed_page(w.t, k, prot, 1 if touched else None)
    t = w.threads[who % len(w.threads)]
    t.wrpkru(pkru | 1 << (2 * k + (write and by_wd)))      # AD, or for a write AD or WD
    addr = page + offset
    end = t.store(addr, 1, size) if write else t.load(addr, size)
    assert killed(end, SIGSEGV, 4) and (end.siginfo.si_addr, end.siginfo.si_pkey) == (addr, k)


@proves("KERN-EXEC-CHECK")
@settings(deadline=None, max_examples=120)
@given(worlds(), keys, st.booleans(), pkru_values, st.booleans(),
       st.sampled_from(["read", "write", "fetch"]),
       st.sampled_from([PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE]))
def test_prot_none_reports_the_key_and_a_fetch_reports_the_page(w, k, touched, pkru, by_wd,
                                                                access, fetch_prot):
    """A load or store the key denies on a PROT_NONE page is SEGV_PKUERR with si_pkey = k;
    a fetch from a page that is not executable, whose key has AD, is SEGV_ACCERR."""
    t = w.t
    prot = PROT_NONE if access != "fetch" else fetch_prot
    assume(take_key(t, k))
    page = keyed_page(t, k, prot, 1 if touched else None)
    t.wrpkru(pkru | 1 << (2 * k + (access == "write" and by_wd)))   # AD, or for a write AD or WD
    if access == "fetch":
        assert killed(t.execute(page), SIGSEGV, SEGV_ACCERR)
    else:
        end = t.load(page) if access == "read" else t.store(page, 1)
        assert killed(end, SIGSEGV, SEGV_PKUERR) and end.siginfo.si_pkey == k

"""Properties of docs/reference/no_pku.md: the pkey system calls on a CPU without keys."""

from hypothesis import given, settings, strategies as st

from pkeyspec import PAGE_SIZE
from tests.helpers import err_of
from tests.properties import proves
from tests.properties.histories import ANON, KERNELS, c_int, prots, rights, worlds

EINVAL, ENOSPC = 22, 28
# Kernels before 6.1.188 and 6.12.110 answer the first pkey_alloc without PKU with EINVAL
# (dee87e09b0dd); that boundary is being added to the model. A bare series is its newest
# release, so these are the kernels that answer ENOSPC from the first call on.
no_pku = worlds(pku=(False,), kernels=("6.1", "6.12", "7.2"))
wide = st.one_of(st.integers(-2, 17), st.integers(-2**70, 2**70),
                 st.builds(lambda m, low: m * 2**32 + low, st.integers(-3, 3), st.integers(-2, 2)))


@proves("SYS-X86-DISABLED")
@settings(deadline=None, max_examples=60)
@given(no_pku, st.booleans(),
       st.lists(st.tuples(st.one_of(st.just(0), wide), st.one_of(rights, wide)), min_size=1))
def test_without_pku_every_valid_pkey_alloc_is_enospc(w, exec_first, calls):
    """Without PKU, after any history and from the first call of a freshly exec'd program
    on, pkey_alloc fails with EINVAL for flags != 0 or rights outside 0x3 and with ENOSPC
    otherwise; the map stays empty."""
    t = w.t
    if exec_first:
        t = t.execve()
    for flags, r in calls:
        bad = flags % 2**64 != 0 or r % 2**64 & ~3
        assert err_of(t.pkey_alloc, flags, r) == (EINVAL if bad else ENOSPC)
    assert t.process.mm.pkey_allocation_map == 0


@proves("SYS-MPROT-UNSUPPORTED")
@settings(deadline=None, max_examples=80)
@given(worlds(pku=(False,), kernels=KERNELS + ("6.1.150", "6.12.100")), st.data(), prots,
       st.one_of(st.sampled_from([-1, 0]), wide))
def test_without_pku_pkey_mprotect_works_only_with_minus_1(w, data, prot, pkey):
    """Without PKU, pkey_mprotect of a mapping with any key but -1 (0 included) fails with
    EINVAL and changes nothing; with -1 it is mprotect: the page gets prot and key 0."""
    t = w.t
    a = data.draw(st.sampled_from(w.mapped() + [t.mmap(0, PAGE_SIZE, prot, ANON)]), "page")
    vmas = list(t.process.mm.vmas)
    if c_int(pkey) != -1:
        assert err_of(t.pkey_mprotect, a, PAGE_SIZE, prot, pkey) == EINVAL
        assert t.process.mm.vmas == vmas
    else:
        assert t.pkey_mprotect(a, PAGE_SIZE, prot, pkey) == 0
        vma = t.process.mm.find_vma(a)
        assert (vma.prot, vma.pkey) == (prot, 0)

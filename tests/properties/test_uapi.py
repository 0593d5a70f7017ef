"""Properties of docs/reference/uapi.md."""

from hypothesis import given, settings, strategies as st

import pkeyspec
from tests.helpers import err_of
from tests.properties import proves
from tests.properties.histories import worlds

EINVAL = 22


@proves("SYS-ALLOC-MASK")
@settings(deadline=None, max_examples=80)
@given(worlds(pku=(True, False)), st.integers(0, 3),
       st.one_of(st.sampled_from([0x4, 0x8, 0xC]), st.integers(4, 2**64 - 1)))
def test_x86_refuses_the_execute_and_read_rights_of_other_architectures(w, low, extra):
    """x86 defines no PKEY_DISABLE_EXECUTE (0x4) or PKEY_DISABLE_READ (0x8) and its
    PKEY_ACCESS_MASK is 0x3: pkey_alloc with any right outside 0x3, alone or with the valid
    ones, fails with EINVAL and allocates nothing, with or without PKU."""
    assert pkeyspec.PKEY_ACCESS_MASK == 0x3
    assert not {"PKEY_DISABLE_EXECUTE", "PKEY_DISABLE_READ"} & set(dir(pkeyspec))
    t = w.t
    bitmap = t.process.mm.pkey_allocation_map
    assert err_of(t.pkey_alloc, 0, extra & ~3 | low) == EINVAL
    assert t.process.mm.pkey_allocation_map == bitmap

from hypothesis import given, strategies as st

from pkeyspec import System
from tests.properties import proves


@proves("SYS-FREE-KEY0")
@given(st.sampled_from(["6.1", "6.12", "7.2"]))
def test_key0_can_be_freed(kernel):
    assert System(kernel=kernel).spawn().pkey_free(0) == 0


@proves("SYS-KEY0-PREALLOCATED")
@given(st.booleans())
def test_key0_allocated(pku):
    assert System(pku=pku).spawn().process.mm.pkey_allocation_map & 1 == int(pku)

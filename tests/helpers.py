"""Small helpers shared by the test modules (written independently of the model on purpose)."""

import pytest


def err_of(fn, *args, **kw):
    """The errno of a failing call (-1 and errno in C); fails the test if the call succeeds."""
    with pytest.raises(OSError) as exc:
        fn(*args, **kw)
    return exc.value.errno


def bits(pkru, key):
    """The two PKRU bits of ``key``: bit 0 = AD, bit 1 = WD."""
    return (pkru >> (2 * key)) & 3

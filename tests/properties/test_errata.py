"""Properties of docs/explanation/errata.md: what Linux does where its documentation is wrong."""

import errno
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pkeyspec
from pkeyspec import PKEY_DISABLE_ACCESS, Killed, System
from tests.properties import proves
from tests.properties.histories import AD, bits, fresh_key, histories, keyed_page, kernels, run

#: arm64's PKEY_DISABLE_READ; x86's headers have no such name.
ARM64_PKEY_DISABLE_READ = 0x8


@proves("ERR-DOC-TYPO")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(), other_bits=st.integers(0, 2**64 - 1),
       write=st.booleans(), touched=st.booleans())
def test_x86_refuses_pkey_disable_read_and_reports_a_key_fault_as_segv_pkuerr_4(
        kernel, history, other_bits, write, touched):
    """x86 refuses pkey_alloc rights with arm64's PKEY_DISABLE_READ (0x8) in them with EINVAL; with
    PKEY_DISABLE_ACCESS instead, an access to the key's memory faults with si_code 4, SEGV_PKUERR."""
    assert not hasattr(pkeyspec, "PKEY_DISABLE_READ")
    t = System(kernel=kernel).spawn()
    run(t, history)
    with pytest.raises(OSError) as refused:
        t.pkey_alloc(0, other_bits | ARM64_PKEY_DISABLE_READ)
    assert refused.value.errno == errno.EINVAL
    k = fresh_key(t, PKEY_DISABLE_ACCESS)
    page = keyed_page(t, k, value=42 if touched else None)
    end = t.store(page, 7) if write else t.load(page)
    assert isinstance(end, Killed) and (end.siginfo.si_code, end.siginfo.si_pkey) == (4, k)


@proves("INIT-PKRU-DAVE-MISREMEMBERS")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(),
       started_by=st.sampled_from(["spawn", "execve in the main thread", "execve in a thread"]),
       where=st.sampled_from(["[stack]", "/prog"]), page=st.integers(0, 2))
def test_a_new_program_starts_with_0x55555554(kernel, history, started_by, where, page):
    """Every new program starts with PKRU 0x55555554 (key 0 open, AD for keys 1 to 15, no WD),
    not 0 nor 0xfffffff5; under 0xfffffff5 a touch of its stack or of the program faults on key 0."""
    t = System(kernel=kernel).spawn()
    if started_by != "spawn":                   # execve, after whatever the process did before
        run(t, history)
        t = (t.clone() if started_by == "execve in a thread" else t).execve()
    pkru = t.rdpkru()
    assert [bits(pkru, key) for key in range(16)] == [0] + [AD] * 15
    broken = System(kernel=kernel, init_pkru=0xFFFFFFF5).spawn()
    starts = re.findall(rf"^(\w+)-\w+ .*{re.escape(where)}$", broken.smaps(), re.M)
    addr = int(starts[page % len(starts)], 16)
    end = broken.load(addr)
    assert isinstance(end, Killed) and (end.siginfo.si_code, end.siginfo.si_pkey) == (4, 0)

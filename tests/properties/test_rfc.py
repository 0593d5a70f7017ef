"""Properties of docs/reference/rfc.md: the 2016 RFC's pkey_get and pkey_set system calls."""

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pkeyspec import PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE, Thread, rfc, uapi
from tests.properties import proves
from tests.properties.histories import (
    ANY_INT, KERNELS, STABLE, bits, c_int, map_bits, mostly, outcome, user_keys, with_bits,
    worlds,
)

who = st.integers(0, 2)


def as_rfc_rights(two_bits):
    """PKRU bits (AD = 1, WD = 2) as the RFC's pkey_get reports them: AD reads back as AD|WD."""
    return PKEY_DISABLE_ACCESS | PKEY_DISABLE_WRITE if two_bits & 1 else two_bits


def set_keys(w):
    """Keys 0 to 15 whose bit is set in the map (the execute-only key among them), else any."""
    return mostly(st.sampled_from(sorted(map_bits(w.mm)) or [0]), st.integers(0, 15))


@proves("RFC-DROPPED")
def test_the_merged_abi_has_three_pkey_system_calls():
    """The model's x86-64 system call table numbers pkey_mprotect, pkey_alloc and pkey_free
    329 to 331 and has nothing for pkey_get or pkey_set; a thread offers no such call."""
    table = {name[3:]: nr for name, nr in vars(uapi).items() if name.startswith("NR_")}
    pkey_calls = {name: nr for name, nr in table.items() if name.startswith("pkey")}
    assert pkey_calls == {"pkey_mprotect": 329, "pkey_alloc": 330, "pkey_free": 331}
    assert not hasattr(Thread, "pkey_get") and not hasattr(Thread, "pkey_set")


@proves("RFC-SIGNATURES")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), data=st.data(), who=who, access=st.integers(0, 3))
def test_rfc_calls_get_and_set_the_callers_rights(w, data, who, access):
    """For a key whose bit is set in the map, pkey_get returns the calling thread's rights as
    PKEY_DISABLE_* bits (AD reads back as AD|WD), and pkey_set writes them into the caller's
    PKRU as pkey_alloc's helper does; no other thread's PKRU changes."""
    assume(map_bits(w.mm))
    key = data.draw(st.sampled_from(sorted(map_bits(w.mm))), "key")
    t = w.threads[who % len(w.threads)]
    pkru, others = t.pkru, [(u, u.pkru) for u in w.threads if u is not t]
    assert rfc.pkey_get(t, key, 0) == as_rfc_rights(bits(pkru, key))
    assert rfc.pkey_set(t, key, access, 0) == 0
    assert t.pkru == with_bits(pkru, key, access)
    assert rfc.pkey_get(t, key, 0) == as_rfc_rights(access)
    assert [u.pkru for u, _ in others] == [p for _, p in others]


@proves("RFC-ERRNO")
@settings(deadline=None, max_examples=100)
@given(w=worlds(), key=mostly(st.integers(-2**31, 2**31 - 1), ANY_INT),
       flags=mostly(st.just(0), ANY_INT), access=st.integers(0, 3))
def test_rfc_errno(w, key, flags, access):
    """flags != 0 (an unsigned long) gives EINVAL first; then a clear bit ``1U << key`` of the
    16-bit map (shift count modulo 32) gives EBADF; a set bit for a key that is not 0 to 15
    gives EINVAL; else the caller's rights. A failing call leaves PKRU alone."""
    t, the_map, k = w.t, w.mm.pkey_allocation_map, c_int(key)
    pkru = t.pkru
    if flags % 2**64:
        expected = "EINVAL"
    elif not the_map >> (k & 31) & 1:
        expected = "EBADF"
    elif not 0 <= k < 16:
        expected = "EINVAL"
    else:
        expected = as_rfc_rights(bits(pkru, k))
    assert outcome(rfc.pkey_get, t, key, flags) == expected
    if expected in ("EINVAL", "EBADF"):
        assert outcome(rfc.pkey_set, t, key, access, flags) == expected
        assert t.pkru == pkru


@proves("RFC-NO-RIGHTS-MASK")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), data=st.data(), access=mostly(ANY_INT, st.integers(0, 3)))
def test_rfc_pkey_set_ignores_unknown_rights_bits(w, data, access):
    """For any access_rights (an unsigned long), pkey_set on a key whose bit is set returns 0
    and keeps only PKEY_DISABLE_ACCESS and PKEY_DISABLE_WRITE; pkey_alloc refuses the same
    value with EINVAL when it has any other bit."""
    assume(map_bits(w.mm))
    key = data.draw(st.sampled_from(sorted(map_bits(w.mm))), "key")
    assert rfc.pkey_set(w.t, key, access, 0) == 0
    assert bits(w.t.pkru, key) == access % 4
    if access % 2**64 > 3:
        assert outcome(w.t.pkey_alloc, 0, access) == "EINVAL"


@proves("RFC-LOCKLESS")
@settings(deadline=None, max_examples=80)
@given(w=worlds(), data=st.data(), setter=st.booleans(), access=st.integers(0, 3),
       between=st.lists(st.tuples(st.sampled_from(["pkey_alloc", "pkey_free"]),
                                  st.integers(0, 15)), max_size=6))
def test_rfc_call_answers_from_its_snapshot_of_the_map(w, data, setter, access, between):
    """Whatever another thread does to the map between the two steps of pkey_get or pkey_set,
    the call answers from the map its first step read: success if the key was allocated then,
    even when it is free by the time the call returns, and EBADF if it was free then."""
    key = data.draw(set_keys(w), "key")
    a, b = w.t, w.t.clone()
    allocated_then, pkru = w.mm.pkey_allocation_map >> key & 1, a.pkru
    seen = rfc.read_map(a, key, 0)
    for call, k in between:
        if call == "pkey_alloc":
            outcome(b.pkey_alloc, 0, 0)
        else:
            outcome(b.pkey_free, k)
    if setter:
        result = outcome(rfc.set_rights, a, key, access, seen)
        after = with_bits(pkru, key, access) if allocated_then else pkru
        assert (result, a.pkru) == (0 if allocated_then else "EBADF", after)
    else:
        result = outcome(rfc.get_rights, a, key, seen)
        assert result == (as_rfc_rights(bits(pkru, key)) if allocated_then else "EBADF")


def interleavings(steps_a, steps_b):
    """Every order of the steps of A and B that keeps each thread's own order."""
    return st.permutations(steps_a + steps_b).filter(
        lambda order: [s for s in order if s in steps_a] == steps_a
        and [s for s in order if s in steps_b] == steps_b)


@proves("RFC-NO-LOST-UPDATE")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), data=st.data(), rights_a=st.integers(0, 3), rights_b=st.integers(0, 3),
       order=interleavings(["A reads the map", "A sets"], ["B reads the map", "B sets"]))
def test_two_rfc_pkey_set_calls_lose_no_update(w, data, rights_a, rights_b, order):
    """Two threads' pkey_set calls, their steps interleaved in any order, never write the map
    and never undo each other: each thread ends with the rights it set (if its key was
    allocated), and no other thread's PKRU changes."""
    key_a, key_b = data.draw(set_keys(w), "key A"), data.draw(set_keys(w), "key B")
    a, b = w.t, w.t.clone()
    the_map, others = w.mm.pkey_allocation_map, [(u, u.pkru) for u in w.threads[1:]]
    expected = [with_bits(a.pkru, key_a, rights_a) if the_map >> key_a & 1 else a.pkru,
                with_bits(b.pkru, key_b, rights_b) if the_map >> key_b & 1 else b.pkru]
    seen = {}
    steps = {
        "A reads the map": lambda: seen.update(a=rfc.read_map(a, key_a, 0)),
        "A sets": lambda: outcome(rfc.set_rights, a, key_a, rights_a, seen["a"]),
        "B reads the map": lambda: seen.update(b=rfc.read_map(b, key_b, 0)),
        "B sets": lambda: outcome(rfc.set_rights, b, key_b, rights_b, seen["b"]),
    }
    for step in order:
        steps[step]()
    assert w.mm.pkey_allocation_map == the_map
    assert [a.pkru, b.pkru] == expected
    assert [u.pkru for u, _ in others] == [p for _, p in others]


@proves("RFC-STAT-ANALOGY")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), data=st.data())
def test_a_successful_rfc_pkey_get_is_like_stat(w, data):
    """A successful pkey_get(k) says only that k was allocated when it looked: the map is the
    same at the call's end, yet right after it another thread can free k (pkey_get now says
    EBADF) and get k back from pkey_alloc as its own, and pkey_get answers as before."""
    assume(user_keys(w.mm))
    k = data.draw(st.sampled_from(user_keys(w.mm)), "k")
    a, b = w.t, w.t.clone()
    the_map = w.mm.pkey_allocation_map
    answer = rfc.pkey_get(a, k, 0)
    assert w.mm.pkey_allocation_map == the_map     # a sequence counter would see no change
    assert b.pkey_free(k) == 0
    assert outcome(rfc.pkey_get, a, k, 0) == "EBADF"
    assert k in [outcome(b.pkey_alloc, 0, 0) for _ in range(16)]
    assert rfc.pkey_get(a, k, 0) == answer


@proves("RFC-MEL-ACK-SCOPE")
@settings(deadline=None, max_examples=40)
@given(w=worlds(kernels=KERNELS + STABLE), who=who)
def test_new_programs_start_with_the_restrictive_default(w, who):
    """A new program starts with key 0 open and keys 1 to 15 access-disabled (PKRU
    0x55555554), on every kernel and CPU with keys, also when any thread of a process with any
    history calls execve."""
    restrictive = sum(1 << 2 * k for k in range(1, 16))
    assert w.system.spawn().rdpkru() == restrictive
    assert w.threads[who % len(w.threads)].execve().rdpkru() == restrictive

"""Properties of docs/reference/keys.md: the allocation map."""

from hypothesis import given, settings, strategies as st

from pkeyspec import PAGE_SIZE
from tests.helpers import err_of
from tests.properties import proves
from tests.properties.histories import ANON, histories, prots, rights, run, worlds

ENOSPC = 28


def lowest_clear(bitmap):
    """``ffz`` over the 16 keys: the lowest key whose bit is clear, or None."""
    return next((k for k in range(16) if not bitmap >> k & 1), None)


@proves("SYS-KEY0-PREALLOCATED")
@settings(deadline=None, max_examples=60)
@given(worlds(), st.integers(0, 3), prots, histories())
def test_a_new_address_space_has_key_0_and_no_execute_only_key(w, who, prot, later):
    """A new address space (a fresh program, or one that any history exec'd) has the map
    0b1, every mapping with key 0, and no execute-only key (-1); key 0 can be attached
    without a pkey_alloc; and no pkey_alloc returns 0 while key 0 stays allocated."""
    for t in (w.system.spawn(), w.threads[who % len(w.threads)].execve()):
        mm = t.process.mm
        assert (mm.pkey_allocation_map, mm.execute_only_pkey) == (0b1, -1)
        assert {line for line in t.smaps().splitlines() if "ProtectionKey" in line} == \
            {"ProtectionKey:         0"}
        assert t.pkey_mprotect(t.mmap(0, PAGE_SIZE, prot, ANON), PAGE_SIZE, prot, 0) == 0
        key0_allocated = True
        for op, args, result in run(t, later).log:
            if op == "pkey_alloc" and key0_allocated:
                assert result != 0
            if (op, args, result) == ("pkey_free", (0,), 0):
                key0_allocated = False
            if (op, result) == ("pkey_alloc", 0):
                key0_allocated = True


@proves("SYS-ALLOC-LOWEST")
@settings(deadline=None, max_examples=100)
@given(worlds(), st.integers(0, 3), rights)
def test_pkey_alloc_takes_the_lowest_clear_bit(w, who, r):
    """After any history, pkey_alloc returns the lowest key whose bit in the map is clear
    and sets that bit (ENOSPC when none is clear); after freeing every key it can, the next
    key is 1 unless key 0 was freed or key 1 is the execute-only key."""
    t = w.threads[who % len(w.threads)]
    mm = t.process.mm
    before, expected = mm.pkey_allocation_map, lowest_clear(mm.pkey_allocation_map)
    if expected is None:
        assert err_of(t.pkey_alloc, 0, r) == ENOSPC and mm.pkey_allocation_map == before
    else:
        assert t.pkey_alloc(0, r) == expected
        assert mm.pkey_allocation_map == before | 1 << expected
    for k in range(1, 16):
        try:
            t.pkey_free(k)
        except OSError:
            pass
    if mm.pkey_allocation_map & 1 and mm.execute_only_pkey != 1:
        assert t.pkey_alloc(0, r) == 1


@proves("SYS-SERIALIZED")
@settings(deadline=None, max_examples=60)
@given(worlds(), st.lists(rights, min_size=2, max_size=4), st.randoms())
def test_threads_that_allocate_at_once_get_the_free_keys_in_lock_order(w, rs, rnd):
    """Threads of one process that call pkey_alloc at the same time run one after the other:
    whatever the order they take the lock in, each gets a different key, the i-th to take
    it gets the i-th lowest free key, and each one's rights land in its own PKRU."""
    main = w.t
    threads = [main] + [main.clone() for _ in rs[1:]]
    order = rnd.sample(range(len(threads)), len(threads))
    free = [k for k in range(16) if not main.process.mm.pkey_allocation_map >> k & 1]
    for i, n in enumerate(order):
        if i < len(free):
            assert threads[n].pkey_alloc(0, rs[n]) == free[i]
            assert threads[n].rdpkru() >> 2 * free[i] & 3 == rs[n]
        else:
            assert err_of(threads[n].pkey_alloc, 0, rs[n]) == ENOSPC

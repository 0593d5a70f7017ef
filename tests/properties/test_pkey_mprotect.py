"""Properties of docs/reference/pkey_mprotect.md: pkey_mprotect and mprotect."""

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pkeyspec import (
    PAGE_SIZE, PKRU_AD_BIT, PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_READ, PROT_SEM,
    PROT_WRITE,
)
from tests.properties import proves
from tests.properties.histories import (
    ANY_INT, ARENA_PAGES, PROTS, bits, byte_at, c_int, exec_only, key_of, mapped_run, mostly,
    outcome, twin, user_keys, worlds,
)

GROWS = PROT_GROWSDOWN | PROT_GROWSUP
VM_GROWSDOWN = 0x100


@proves("SYS-MPROT-NEG1")
@settings(deadline=None, max_examples=60)
@given(w=worlds(pku=(True, False)), first=st.integers(0, ARENA_PAGES - 1),
       n=st.integers(1, ARENA_PAGES), prot=st.sampled_from([p for p in PROTS if p != PROT_EXEC]))
def test_key_minus_one_keeps_each_vmas_key(w, first, n, prot):
    """With key -1 every VMA of the range keeps its key, except that an execute-only one
    the call reaches returns to key 0; plain mprotect is the same call, with the same result."""
    n = min(n, ARENA_PAGES - first)
    addr, plain = w.page(first), twin(w)
    pages = [addr + i * PAGE_SIZE for i in range(n)]
    reached = pages[:mapped_run(w.mm, addr, n)]
    expected = {p: 0 if p in reached and exec_only(w.mm, p) else key_of(w.mm, p) for p in pages}
    result = outcome(w.t.pkey_mprotect, addr, n * PAGE_SIZE, prot, -1)
    assert {p: key_of(w.mm, p) for p in pages} == expected
    assert outcome(plain.t.mprotect, addr, n * PAGE_SIZE, prot) == result
    assert plain.system.state() == w.system.state()


@proves("SYS-MPROT-EXPLICIT-WINS")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), data=st.data(), first=st.integers(0, ARENA_PAGES - 1),
       n=st.integers(1, ARENA_PAGES), prot=st.sampled_from(PROTS), reader=st.integers(0, 2**32 - 1))
def test_explicit_key_is_never_replaced(w, data, first, n, prot, reader):
    """Every page the call reaches gets the key it was given, whatever the prot (exactly
    PROT_EXEC too): no execute-only key is taken, and a PROT_EXEC page stays readable by a
    thread whose PKRU allows the key."""
    assume(user_keys(w.mm))
    key = data.draw(st.sampled_from(user_keys(w.mm)), "key")
    n = min(n, ARENA_PAGES - first)
    addr, xo, pkru = w.page(first), w.mm.execute_only_pkey, w.t.pkru
    reached = [addr + i * PAGE_SIZE for i in range(mapped_run(w.mm, addr, n))]
    expected_byte = byte_at(w.mm, addr)
    outcome(w.t.pkey_mprotect, addr, n * PAGE_SIZE, prot, key)
    assert [key_of(w.mm, p) for p in reached] == [key] * len(reached)
    assert (w.mm.execute_only_pkey, w.t.pkru) == (xo, pkru)
    if prot == PROT_EXEC and reached:
        child = w.t.fork()
        child.wrpkru(reader & ~(PKRU_AD_BIT << 2 * key))
        assert child.load(addr) == expected_byte


@proves("SEC-PKEY-MPROTECT-NO-PKRU-CHECK")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), data=st.data(), first=st.integers(0, ARENA_PAGES - 1),
       n=st.integers(1, ARENA_PAGES), pkru=st.integers(0, 2**32 - 1))
def test_retagging_needs_no_rights_to_either_key(w, data, first, n, pkru):
    """Whatever the caller's PKRU says about the range's old keys and the new one, re-keying a
    mapped range with an allocated key succeeds; if the PKRU allows the new key (key 0, say),
    the caller then reads memory its old key denied it."""
    assume(user_keys(w.mm))
    new = data.draw(st.sampled_from(user_keys(w.mm)), "new key")
    n = min(n, ARENA_PAGES - first)
    addr = w.page(first)
    assume(mapped_run(w.mm, addr, n) == n)
    expected_byte = byte_at(w.mm, addr)
    w.t.wrpkru(pkru)
    assert w.t.pkey_mprotect(addr, n * PAGE_SIZE, PROT_READ | PROT_WRITE, new) == 0
    assert [key_of(w.mm, addr + i * PAGE_SIZE) for i in range(n)] == [new] * n
    if not bits(pkru, new) & PKRU_AD_BIT:
        assert w.t.load(addr) == expected_byte


@proves("SYS-MPROT-NONATOMIC")
@settings(deadline=None, max_examples=80)
@given(w=worlds(), data=st.data(), first=st.integers(0, ARENA_PAGES - 1),
       n=st.integers(1, ARENA_PAGES + 6), prot=st.sampled_from(PROTS))
def test_stops_at_the_first_error_and_undoes_nothing(w, data, first, n, prot):
    """VMA by VMA from addr, every page before the first hole (ENOMEM) or the first VMA whose
    VM_MAY* bits refuse the prot (EACCES) gets the prot and the key; the call then fails and
    the pages from there on are as they were. The range may run past the arena into [vvar]."""
    assume(user_keys(w.mm))
    key = data.draw(st.sampled_from(user_keys(w.mm)), "key")
    addr = w.page(first)
    pages = [addr + i * PAGE_SIZE for i in range(n)]
    before = {p: w.mm.find_vma(p) for p in pages}
    expected, done = 0, n
    for i, p in enumerate(pages):
        if before[p] is None:
            expected, done = "ENOMEM", i
            break
        if prot & ~(before[p].flags >> 4):      # VM_MAYREAD/MAYWRITE/MAYEXEC are bits 4-6
            expected, done = "EACCES", i
            break
    assert outcome(w.t.pkey_mprotect, addr, n * PAGE_SIZE, prot, key) == expected
    for i, p in enumerate(pages):
        v, old = w.mm.find_vma(p), before[p]
        if i < done:
            assert (v.flags & 7, v.pkey) == (prot, key)
        else:
            assert (v and (v.flags, v.pkey)) == (old and (old.flags, old.pkey))


@proves("SYS-MPROT-LEN0")
@settings(deadline=None, max_examples=80)
@given(w=worlds(pku=(True, False)), data=st.data(),
       length=st.integers(-2, 2).map(lambda m: m * 2**64), prot=ANY_INT, key=ANY_INT)
def test_length_zero_succeeds_whatever_the_key(w, data, length, prot, key):
    """A length of 0 (as a size_t: 2**64 too) returns 0 and changes nothing, for every key,
    garbage included, every prot and every address, mapped or not; only both grows flags and
    an unaligned address give EINVAL."""
    addr = data.draw(st.one_of(st.integers(0, ARENA_PAGES).map(w.page), ANY_INT,
                               st.integers(1, PAGE_SIZE - 1).map(lambda o: w.arena + o)), "addr")
    before = w.system.state()
    bad = (prot % 2**64 & GROWS) == GROWS or addr % PAGE_SIZE != 0
    assert outcome(w.t.pkey_mprotect, addr, length, prot, key) == ("EINVAL" if bad else 0)
    assert w.system.state() == before


def answer_by_the_steps(mm, addr, length, prot, key):
    """The page's ten steps, in order: (the errno name or 0, the step that gave it)."""
    addr, length, prot, key = addr % 2**64, length % 2**64, prot % 2**64, c_int(key)
    grows, prot = prot & GROWS, prot & ~GROWS
    if grows == GROWS:
        return "EINVAL", 1
    if addr % PAGE_SIZE:
        return "EINVAL", 2
    if length == 0:
        return 0, 3
    end = (addr + -(-length // PAGE_SIZE) * PAGE_SIZE % 2**64) % 2**64
    if end <= addr:
        return "ENOMEM", 4
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):
        return "EINVAL", 5
    if key != -1 and key not in user_keys(mm):
        return "EINVAL", 7
    in_range = [v for v in mm.vmas if v.end > addr and v.start < end]
    if not in_range:
        return "ENOMEM", 8
    if grows & PROT_GROWSDOWN:      # the range starts at the first VMA in it
        if not in_range[0].flags & VM_GROWSDOWN:
            return "EINVAL", 9
    else:
        if in_range[0].start > addr:
            return "ENOMEM", 8
        if grows & PROT_GROWSUP:
            return "EINVAL", 9
    covered = in_range[0].start
    for v in in_range:
        if v.start != covered:
            return "ENOMEM", 10
        if prot & 7 & ~(v.flags >> 4):
            return "EACCES", 10
        covered = v.end
    return ("ENOMEM" if covered < end else 0), 10


def arguments(w):
    """Mostly good arguments with, now and then, a bad one of each kind: arena pages (mapped
    or holes), unaligned ones, [vvar], the stack, unmapped and kernel addresses; lengths of 0,
    that wrap or that are huge; grows flags and unknown prot bits; keys that are allocated,
    -1, or anything; and any integer anywhere."""
    named = {v.name: v for v in w.mm.vmas}
    stack = named["[stack]"].start
    addr = mostly(st.integers(0, ARENA_PAGES).map(w.page), ANY_INT, st.sampled_from(
        [w.arena + 1, w.arena + 8, named["[vvar]"].start, stack, stack + PAGE_SIZE,
         stack - PAGE_SIZE, 0x10000, 0xFFFF800000000000, 2**64 - PAGE_SIZE]))
    length = mostly(st.integers(1, 16).map(lambda n: n * PAGE_SIZE), ANY_INT,
                    st.sampled_from([0, 1, 2**64, 2**64 - PAGE_SIZE, 2**40]))
    prot = st.tuples(st.sampled_from(PROTS), st.sampled_from([0, PROT_SEM]),
                     mostly(st.just(0), st.sampled_from([PROT_GROWSDOWN, PROT_GROWSUP, GROWS])),
                     mostly(st.just(0), st.sampled_from([0x1000, 0x10, 2**40]), ANY_INT))
    key = mostly(st.sampled_from(user_keys(w.mm) + [-1]), st.integers(-2, 16), ANY_INT)
    return st.tuples(addr, length, prot.map(sum), key)


@proves("SYS-MPROT-CHECK-ORDER")
@settings(deadline=None, max_examples=100)
@given(w=worlds(pku=(True, False)), data=st.data())
def test_the_first_failing_step_answers(w, data):
    """Every call gets the answer of the first of the page's steps that fails (or 0), for
    any address, length, prot and key; a call refused before the per-VMA loop changes
    nothing."""
    addr, length, prot, key = data.draw(arguments(w), "addr, len, prot, key")
    before = w.system.state()
    expected, step = answer_by_the_steps(w.mm, addr, length, prot, key)
    assert outcome(w.t.pkey_mprotect, addr, length, prot, key) == expected
    if step < 10:
        assert w.system.state() == before


@proves("SYS-MPROT-BADKEY-BEATS-ENOMEM")
@settings(deadline=None, max_examples=80)
@given(w=worlds(pku=(True, False)), data=st.data(), pages=st.integers(1, 16),
       offset=st.sampled_from([0, 0, 1, 8, PAGE_SIZE - 1]))
def test_unallocated_key_beats_unmapped_range(w, data, pages, offset):
    """Where nothing is mapped at addr, a key that is not allocated gives EINVAL and an
    allocated one ENOMEM; an unaligned addr gives EINVAL, whatever the key."""
    key = data.draw(st.one_of(st.sampled_from(user_keys(w.mm) or [0]), ANY_INT), "key")
    assume(c_int(key) != -1)
    holes = [w.page(i) for i in range(ARENA_PAGES) if w.mm.find_vma(w.page(i)) is None]
    base = data.draw(st.one_of(st.sampled_from(holes + [0x10000, 0xFFFF800000000000]),
                               st.integers(0, 2**52 - 32).map(lambda n: n * PAGE_SIZE)), "addr")
    assume(w.mm.find_vma(base) is None or offset)
    if offset:
        expected = "EINVAL"
    else:
        expected = "ENOMEM" if c_int(key) in user_keys(w.mm) else "EINVAL"
    assert outcome(w.t.pkey_mprotect, base + offset, pages * PAGE_SIZE, PROT_READ, key) == expected

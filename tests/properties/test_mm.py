"""Properties of docs/reference/mm.md: the key of a new mapping, and smaps."""

import re

from hypothesis import assume, given, settings, strategies as st

from pkeyspec import PAGE_SIZE, PROT_EXEC
from tests.properties import proves
from tests.properties.histories import keyed_page, keys, pkru_values, prots, take_key, worlds

MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20


@proves("SYS-MMAP-DEFAULT-KEY")
@settings(deadline=None, max_examples=100)
@given(worlds(), st.integers(0, 3), pkru_values, prots, st.sampled_from([0, 0x1000]),
       st.sampled_from([MAP_PRIVATE, MAP_SHARED]), st.integers(-1, 7))
def test_a_new_mapping_has_key_0_unless_it_is_exactly_prot_exec(w, who, pkru, prot, junk, kind,
                                                                fixed):
    """Whatever keys are allocated and whatever the caller's PKRU, a new mapping (also one
    that replaces a keyed mapping with MAP_FIXED) gets key 0, except one whose prot is
    exactly PROT_EXEC: it gets the execute-only key, which is the lowest free key the
    first time (key 0 when there is none)."""
    t = w.threads[who % len(w.threads)]
    t.wrpkru(pkru)
    mm = t.process.mm
    if fixed >= 0 and w.pages:
        addr, flags = w.pages[fixed % len(w.pages)], MAP_FIXED
    else:
        addr, flags = 0, 0
    xo = mm.execute_only_pkey
    if xo == -1:
        xo = next((k for k in range(16) if not mm.pkey_allocation_map >> k & 1), 0)
    a = t.mmap(addr, PAGE_SIZE, prot | junk, kind | MAP_ANONYMOUS | flags)
    assert t.smaps_pkey(a) == (xo if prot | junk == PROT_EXEC else 0)


def smaps_entries(t):
    """/proc/self/smaps cut into entries: the header line and the field lines after it."""
    entries = []
    for line in t.smaps().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            entries.append([line])
        else:
            entries[-1].append(line)
    return entries


def entry_of(t, addr):
    """The smaps entry of the mapping that holds ``addr``."""
    for entry in smaps_entries(t):
        lo, hi = (int(x, 16) for x in entry[0].split()[0].split("-"))
        if lo <= addr < hi:
            return entry


@proves("PROC-SMAPS-LINE")
@settings(deadline=None, max_examples=60)
@given(worlds(pku=(True, False)), keys)
def test_smaps_prints_protectionkey_before_vmflags_when_pkeys_are_on(w, k):
    """With pkeys enabled, every entry of smaps has one "ProtectionKey:  %8u" line with its
    mapping's key, after the counters and just before VmFlags:; without PKU no entry has one."""
    t = w.t
    page = keyed_page(t, k, value=1) if take_key(t, k) else None
    entries = smaps_entries(t)
    assert len(entries) == len(t.process.mm.vmas)
    for entry, vma in zip(entries, t.process.mm.vmas):
        fields = [line.split(":")[0] for line in entry[1:]]
        assert fields[-1] == "VmFlags"
        if w.system.pku:
            assert fields.count("ProtectionKey") == 1 and fields[-2] == "ProtectionKey"
            assert entry[-2] == "ProtectionKey:  %8u" % vma.pkey
        else:
            assert "ProtectionKey" not in fields
    if page is not None:
        assert t.smaps_pkey(page) == k


@proves("PROC-VMFLAGS-HIDES-KEY")
@settings(deadline=None, max_examples=60)
@given(worlds(), prots, keys, keys, st.booleans())
def test_vmflags_is_the_same_whatever_the_key(w, prot, k1, k2, touched):
    """Two mappings made alike, away from any other, that differ only in their key (any
    two keys) have the same VmFlags: line, and re-keying a mapping leaves its VmFlags: line
    as it was."""
    t = w.t
    assume(take_key(t, k1) and take_key(t, k2))
    a = keyed_page(t, k1, prot, 1 if touched else None, at=0x100000000)
    b = keyed_page(t, k2, prot, 1 if touched else None, at=0x200000000)
    assert entry_of(t, a)[-1] == entry_of(t, b)[-1]
    before = entry_of(t, a)[-1]
    t.pkey_mprotect(a, PAGE_SIZE, prot, k2)
    assert t.smaps_pkey(a) == k2 and entry_of(t, a)[-1] == before

"""pkeyspec.pictures: every picture is well-formed SVG whose text alternative
says what the picture shows.

The pages draw these at build time ({pkru-picture} and {model-picture}); a
screen reader gets <title> and <desc>, so the text alternative must name
every key and every mapping that the picture draws.
"""

import colorsys
import re
import xml.etree.ElementTree as ET

import pytest

from pkeyspec import (
    MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, System,
)
from pkeyspec.hardware import decode_pkru
from pkeyspec.pictures import (
    Svg, address_space_svg, human_size, key_colour, key_ink, pkru_svg, signal_delivery_svg,
    timeline_svg,
)

SVG = "{http://www.w3.org/2000/svg}"
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def parse(svg: Svg) -> ET.Element:
    """The root <svg>, after checking what every picture must have."""
    root = ET.fromstring(svg.markup)
    assert root.tag == SVG + "svg"
    width, height = float(root.get("width")), float(root.get("height"))
    assert width > 0 and height > 0
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    assert root.get("role") == "img"
    title, desc = root.find(SVG + "title"), root.find(SVG + "desc")
    assert title is not None and title.text
    assert desc is not None and desc.text
    assert root.get("aria-label") == title.text
    assert svg.alt == f"{title.text}. {desc.text}"
    return root


def texts(root: ET.Element) -> list[str]:
    return [t.text for t in root.iter(SVG + "text")]


def keys_named(alt: str) -> set[int]:
    """Keys an alternative names, as 'key 3', 'keys 1 to 15' or 'keys 1, 4 and 7'."""
    named = set()
    for a, b in re.findall(r"\bkeys (\d+) to (\d+)", alt):
        named |= set(range(int(a), int(b) + 1))
    for run in re.findall(r"\bkeys ((?:\d+, )*\d+ and \d+)", alt):
        named |= {int(n) for n in re.findall(r"\d+", run)}
    named |= {int(n) for n in re.findall(r"\bkey (\d+)", alt)}
    return named


def contrast(a: str, b: str) -> float:
    def lum(rgb):
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    def rgb(colour):
        if colour.startswith("#"):
            digits = colour[1:]
            if len(digits) == 3:
                digits = "".join(d * 2 for d in digits)
            return [int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        hue, sat, light = (float(x) for x in re.findall(r"[\d.]+", colour))
        return colorsys.hls_to_rgb(hue / 360, light / 100, sat / 100)

    la, lb = lum(rgb(a)), lum(rgb(b))
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


# --- PKRU -----------------------------------------------------------------

PKRU_VALUES = [0, 0x55555554, 0x55555550, 0x55555558, 0x5555555C, 0xFFFFFFFF, 0x9C3A0B21]


@pytest.mark.parametrize("pkru", PKRU_VALUES)
def test_pkru_picture_is_well_formed_and_names_every_key(pkru):
    svg = pkru_svg(pkru)
    root = parse(svg)
    assert svg.alt.startswith(f"PKRU {pkru:#010x}.")
    assert keys_named(svg.alt) == set(range(16))


@pytest.mark.parametrize("pkru", PKRU_VALUES)
def test_pkru_alternative_gives_each_keys_bits(pkru):
    """Each run 'keys a to b: AD x, WD y, ...' matches decode_pkru."""
    alt = pkru_svg(pkru).alt
    rows = {r.pkey: r for r in decode_pkru(pkru)}
    for keys, ad, wd in re.findall(r"(keys? [\d, and to]+?): AD (\d), WD (\d)", alt):
        for k in keys_named(keys):
            assert (rows[k].ad, rows[k].wd) == (ad == "1", wd == "1"), (k, alt)


@pytest.mark.parametrize("pkru", PKRU_VALUES)
def test_pkru_picture_draws_bit_31_first(pkru):
    """The 32 bit cells read left to right are the value's binary digits, MSB first;
    the eight hex digits above them are the value's hex digits."""
    root = parse(pkru_svg(pkru))
    cells = [t for t in root.iter(SVG + "text") if t.text in ("0", "1") and t.get("y") == "81"]
    cells.sort(key=lambda t: float(t.get("x")))
    assert "".join(t.text for t in cells) == f"{pkru:032b}"
    digits = [t for t in root.iter(SVG + "text") if t.get("y") == "42" and t.get("text-anchor") == "middle"]
    digits.sort(key=lambda t: float(t.get("x")))
    assert "".join(t.text for t in digits) == f"{pkru:08x}"


def test_pkru_picture_data_row():
    root = parse(pkru_svg(0x55555558))
    data = [t for t in root.iter(SVG + "text") if t.get("y") == "126" and t.text != "data"]
    data.sort(key=lambda t: float(t.get("x")))
    assert [t.text for t in data] == ["--"] * 14 + ["r-", "rw"]


# --- keys' colours ----------------------------------------------------------

@pytest.mark.parametrize("pkey", range(16))
def test_text_on_a_key_colour_is_readable(pkey):
    """Key numbers and set bits are drawn in key_ink on key_colour: WCAG AA for
    large bold text (3:1) at least, whatever the theme."""
    assert key_ink(pkey) in ("#000", "#fff")
    assert contrast(key_ink(pkey), key_colour(pkey)) >= 3.0


def test_key_ink_is_the_better_of_black_and_white():
    for k in range(16):
        other = "#fff" if key_ink(k) == "#000" else "#000"
        assert contrast(key_ink(k), key_colour(k)) >= contrast(other, key_colour(k))


# --- address space ------------------------------------------------------------

def test_human_size():
    assert human_size(PAGE_SIZE) == "4 KiB"
    assert human_size(132 * 1024) == "132 KiB"
    assert human_size(1 << 20) == "1 MiB"
    assert human_size(0x7FFFF7FF9000 - 0x403000) == "≈128 TiB"
    assert human_size(100) == "100 B"


def vma_row_texts(root):
    return [t for t in texts(root) if re.fullmatch(r"0x[0-9a-f]+-0x[0-9a-f]+", t or "")]


def test_fresh_program_names_every_vma_and_marks_the_gaps():
    t = System().spawn()
    svg = address_space_svg(t.process.mm)
    root = parse(svg)
    vmas = t.process.mm.vmas
    assert vma_row_texts(root) == [f"{v.start:#x}-{v.end:#x}" for v in vmas]
    for v in vmas:
        assert f"{v.start:#x} to {v.end:#x}, {v.perms}, key {v.pkey}, {v.name}" in svg.alt
    # Two holes: between /prog and [vvar], and between [vdso] and [stack].
    assert svg.alt.count("unmapped") == 2
    assert sum(1 for s in texts(root) if s.startswith("unmapped, ")) == 2
    assert "0x403000 to 0x7ffff7ff9000 unmapped, about 128 TiB" in svg.alt
    assert "Keys drawn: 0." in svg.alt


def test_adjacent_vmas_have_no_gap_row_and_each_key_is_in_the_legend():
    t = System().spawn()
    buf = t.mmap(0, 3 * PAGE_SIZE, RW, ANON)
    k1, k2 = t.pkey_alloc(0, 0), t.pkey_alloc(0, 0)
    t.pkey_mprotect(buf, 3 * PAGE_SIZE, RW, k1)
    t.pkey_mprotect(buf + PAGE_SIZE, PAGE_SIZE, RW, k2)
    svg = address_space_svg(t.process.mm, only_anonymous=True)
    root = parse(svg)
    assert len(vma_row_texts(root)) == 3
    assert "unmapped" not in svg.alt and "not shown" not in svg.alt
    assert "Keys drawn: 1, 2." in svg.alt
    assert [k for k in re.findall(r"key (\d+)", svg.alt)] == ["1", "2", "1"]
    assert keys_named(svg.alt) == {1, 2}
    # each key's colour is used, and the legend has one swatch per key
    fills = [r.get("fill") for r in root.iter(SVG + "rect")]
    assert fills.count(key_colour(1)) == 1 + 2 and fills.count(key_colour(2)) == 1 + 1


def test_partial_pkey_mprotect_shows_the_hole_that_stopped_it():
    t = System().spawn()
    a = t.mmap(0, 2 * PAGE_SIZE, RW, ANON)
    t.munmap(a + PAGE_SIZE, PAGE_SIZE)
    k = t.pkey_alloc(0, 0)
    with pytest.raises(OSError):
        t.pkey_mprotect(a, 2 * PAGE_SIZE, PROT_READ, k)
    svg = address_space_svg(t.process.mm)
    parse(svg)
    assert f"{a:#x} to {a + PAGE_SIZE:#x}, r--p, key 1, 4 KiB" in svg.alt
    assert f"{a + PAGE_SIZE:#x} to {a + 2 * PAGE_SIZE:#x} unmapped, 4 KiB" in svg.alt


def test_only_anonymous_says_which_mappings_it_leaves_out():
    t = System().spawn()
    below = t.mmap(0, PAGE_SIZE, RW, ANON)                 # directly below [vvar]
    above = t.mmap(0x7FFFF7FFF000, PAGE_SIZE, RW, ANON | MAP_FIXED)   # right after [vdso]
    svg = address_space_svg(t.process.mm, only_anonymous=True)
    root = parse(svg)
    assert vma_row_texts(root) == [f"{below:#x}-{below + PAGE_SIZE:#x}",
                                   f"{above:#x}-{above + PAGE_SIZE:#x}"]
    assert "2 mappings not shown: [vvar], [vdso]" in svg.alt
    assert "2 mappings not shown: [vvar], [vdso]" in texts(root)
    assert "/prog" not in svg.alt and "[stack]" not in svg.alt


def test_execute_only_key_is_marked_in_the_legend():
    t = System().spawn()
    t.mmap(0, PAGE_SIZE, PROT_EXEC, ANON)
    xo = t.process.mm.execute_only_pkey
    svg = address_space_svg(t.process.mm)
    root = parse(svg)
    assert f"{xo} (execute-only)" in texts(root)
    assert f"Keys drawn: 0, {xo} (execute-only)." in svg.alt


def test_many_keys_wrap_the_legend_inside_the_picture():
    t = System().spawn()
    buf = t.mmap(0, 16 * PAGE_SIZE, RW, ANON)
    for i in range(15):
        t.pkey_mprotect(buf + i * PAGE_SIZE, PAGE_SIZE, PROT_READ, t.pkey_alloc(0, 0))
    svg = address_space_svg(t.process.mm, only_anonymous=True)
    root = parse(svg)
    width = float(root.get("width"))
    assert keys_named(svg.alt) == set(range(16))
    for r in root.iter(SVG + "rect"):
        assert float(r.get("x")) + float(r.get("width")) <= width
    assert max(float(r.get("y")) for r in root.iter(SVG + "rect")) < float(root.get("height"))


def test_no_anonymous_mapping():
    svg = address_space_svg(System().spawn().process.mm, only_anonymous=True)
    parse(svg)
    assert "no mapping" in svg.alt


# --- the other pictures keep their contract ------------------------------------

def test_timeline_and_signal_pictures_are_well_formed():
    parse(timeline_svg(["T1", "T2"], [(0, "pkey_mprotect(a, k)"), (1, "munmap <b>")], marked=1))
    parse(signal_delivery_svg({"6.1": [("entry", 0x55555554), ("handler", 0)]}))

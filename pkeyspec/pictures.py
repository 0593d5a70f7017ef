"""Pictures drawn from the model: plain SVG text, no external tools.

Each function returns an :class:`Svg`: the markup and a text alternative
that says the same thing in words (for screen readers, and for anyone
reading the page as text). Colours come from CSS variables of the furo
theme with fallbacks, so a picture follows the light or dark theme; key
colours are mid-tone hues that read on both backgrounds, and text drawn on a
key colour is black or white, whichever contrasts more with that colour
(:func:`key_ink`), so it does not depend on the theme.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from html import escape

from . import cabi
from .hardware import NR_PKEYS, decode_pkru

FG = "var(--color-foreground-primary, #222)"
MUTED = "var(--color-foreground-muted, #666)"
BG = "var(--color-background-primary, #fff)"
BORDER = "var(--color-foreground-border, #999)"
FONT = 'font-family="var(--font-stack--monospace, monospace)"'


def _key_hsl(pkey: int) -> tuple[int, int, int]:
    """Hue, saturation and lightness (degrees, percent, percent) of a key's colour."""
    if pkey == 0:
        return 0, 0, 60
    return (pkey * 137) % 360, 65, 55


def key_colour(pkey: int) -> str:
    """A distinct mid-tone hue per key; key 0 is grey."""
    hue, sat, light = _key_hsl(cabi.index(pkey))
    return f"hsl({hue}, {sat}%, {light}%)"


def _luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG relative luminance of an sRGB colour with channels in [0, 1]."""
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def key_ink(pkey: int) -> str:
    """Black or white, whichever reads better on :func:`key_colour` (the theme does not matter)."""
    hue, sat, light = _key_hsl(cabi.index(pkey))
    lum = _luminance(colorsys.hls_to_rgb(hue / 360, light / 100, sat / 100))
    return "#000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#fff"


@dataclass(frozen=True)
class Svg:
    """An SVG picture and its text alternative."""

    markup: str
    alt: str

    def _repr_html_(self) -> str:
        return self.markup

    def __str__(self) -> str:
        return self.markup


def _svg(width: int, height: int, title: str, desc: str, body: list[str]) -> Svg:
    markup = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pkeyspec-picture" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>"
        + "".join(body) + "</svg>")
    return Svg(markup, f"{title}. {desc}")


def _text(x: float, y: float, s: str, *, size: int = 12, anchor: str = "middle",
          fill: str = FG, weight: str = "normal") -> str:
    return (f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill}" font-weight="{weight}" {FONT}>{escape(s)}</text>')


def _rect(x: float, y: float, w: float, h: float, fill: str, stroke: str = BORDER,
          rx: int = 2) -> str:
    return (f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" fill="{fill}" '
            f'stroke="{stroke}"/>')


def _keys_in_words(keys: list[int]) -> str:
    """'key 3', 'keys 1 to 15' or 'keys 1, 4 and 7' for a sorted list of keys."""
    if len(keys) == 1:
        return f"key {keys[0]}"
    if keys == list(range(keys[0], keys[-1] + 1)):
        return f"keys {keys[0]} to {keys[-1]}"
    return "keys " + ", ".join(map(str, keys[:-1])) + f" and {keys[-1]}"


def pkru_svg(pkru: int) -> Svg:
    """The PKRU register as the Intel SDM draws it: bit 31 on the left, two bits per key.

    Above the bits, the hex digits of the value (each covers two keys);
    below them, the key that owns each pair and the data accesses it allows.
    A set bit is filled with its key's colour. Of a wider int, the low 32 bits are drawn.
    """
    pkru = cabi.index(pkru) & 0xFFFFFFFF
    bit, left, right = 20, 64, 12
    width = left + 32 * bit + right
    mid = left + 16 * bit
    body = [_text(mid, 18, f"PKRU = {pkru:#010x}", size=14, weight="bold")]
    for label, y in (("hex", 42), ("bit", 62), ("value", 81), ("key", 106), ("data", 126)):
        body.append(_text(left - 10, y, label, anchor="end", fill=MUTED, size=11))
    # Hex digits: digit i (from the left) is bits 31-4i .. 28-4i, keys 15-2i and 14-2i.
    for i in range(8):
        x = left + i * 4 * bit
        body.append(_text(x + 2 * bit, 42, f"{(pkru >> (28 - 4 * i)) & 0xF:x}", size=13,
                          weight="bold"))
        body.append(f'<path d="M{x + 3} 50 v-4 h{4 * bit - 6} v4" fill="none" stroke="{BORDER}"/>')
    rows = decode_pkru(pkru)
    for row in rows:
        x = left + (15 - row.pkey) * 2 * bit          # key 15 leftmost
        for j, (name, set_) in enumerate((("WD", row.wd), ("AD", row.ad))):
            bx = x + j * bit
            body.append(_text(bx + bit / 2, 62, name[0], size=10, fill=MUTED))
            fill = key_colour(row.pkey) if set_ else BG
            body.append(_rect(bx + 1, 67, bit - 2, 20, fill))
            body.append(_text(bx + bit / 2, 81, "1" if set_ else "0", size=12,
                              fill=key_ink(row.pkey) if set_ else FG,
                              weight="bold" if set_ else "normal"))
        body.append(f'<path d="M{x + 2} 91 v4 h{2 * bit - 4} v-4" fill="none" stroke="{BORDER}"/>')
        body.append(_text(x + bit, 106, str(row.pkey), size=11))
        rights = "rw" if row.write else ("r-" if row.read else "--")
        body.append(_text(x + bit, 126, rights, size=12, weight="bold" if row.ad or row.wd else "normal"))
    body.append(_text(left, 140, "bit 31", size=10, anchor="start", fill=MUTED))
    body.append(_text(left + 32 * bit, 140, "bit 0", size=10, anchor="end", fill=MUTED))
    body.append(_text(mid, 140, "W = WD, write-disable (bit 2k+1); A = AD, access-disable (bit 2k)",
                      size=10, fill=MUTED))
    # Text alternative: runs of keys with the same bits, key 0 first.
    groups: list[tuple[tuple[bool, bool], list[int]]] = []
    for row in rows:
        if groups and groups[-1][0] == (row.ad, row.wd):
            groups[-1][1].append(row.pkey)
        else:
            groups.append(((row.ad, row.wd), [row.pkey]))
    words = []
    for (ad, wd), keys in groups:
        access = "read and write" if not (ad or wd) else ("read only" if not ad else "no data access")
        words.append(f"{_keys_in_words(keys)}: AD {int(ad)}, WD {int(wd)}, {access}")
    desc = ("Two bits per key, AD (access-disable) at bit 2k and WD (write-disable) at bit 2k+1. "
            + "; ".join(words) + ".")
    return _svg(width, 146, f"PKRU {pkru:#010x}", desc, body)


_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def human_size(n: int) -> str:
    """'4 KiB', '132 KiB', '≈128 TiB': binary units, exact when the size is a whole number of them."""
    n = cabi.index(n)
    if abs(n).bit_length() > 128:           # no address space is that large: a power of two
        return f"≈{'-' if n < 0 else ''}2**{abs(n).bit_length() - 1} B"
    for unit, scale in _UNITS:
        if n >= scale:
            if n % scale == 0:
                return f"{n // scale} {unit}"
            return f"≈{n / scale:.3g} {unit}"
    return f"{n} B"


def address_space_svg(mm, *, only_anonymous: bool = False) -> Svg:
    """The VMAs of an mm from low to high addresses, one bar each, coloured by key.

    Unmapped ranges between two drawn VMAs are dashed rows with their size;
    with ``only_anonymous`` the named mappings (the program, the vDSO, the
    stack) are left out, and a muted row says which ones lie between two
    drawn VMAs. A legend names the keys drawn (and marks the execute-only key).
    """
    vmas = sorted(mm.vmas, key=lambda v: v.start)
    drawn = [v for v in vmas if not only_anonymous or not v.name]
    xo = getattr(mm, "execute_only_pkey", -1)
    row_h, gap_h, width = 28, 22, 660
    x_range, x_perms, x_name = 56, 302, 352
    keys = sorted({v.pkey for v in drawn})
    body: list[str] = []
    words: list[str] = []
    # Legend: a swatch and a number per key, on as many lines as it needs.
    body.append(_text(10, 17, "keys:", anchor="start", size=12, fill=MUTED))
    body.append(_text(width - 10, 17, "low addresses first", anchor="end", size=12, fill=MUTED))
    x, line = 56, 0
    for k in keys:
        label = f"{k} (execute-only)" if k == xo else str(k)
        step = 20 + 7.3 * len(label) + 16
        if x + step > width - 160 and x > 56:
            x, line = 56, line + 1
        body.append(_rect(x, 5 + 22 * line, 15, 15, key_colour(k)))
        body.append(_text(x + 20, 17 + 22 * line, label, anchor="start", size=12))
        x += step
    y = 30 + 22 * line
    if not drawn:
        body.append(_text(10, y + 16, "(no mapping)", anchor="start", fill=MUTED))
        y += row_h

    def between(lo: int, hi: int) -> None:
        """A row for what lies between two drawn VMAs: hidden mappings or a hole."""
        nonlocal y
        hidden = [v for v in vmas if v not in drawn and v.start >= lo and v.end <= hi]
        if hidden:
            names = sorted({v.name for v in hidden}, key=[v.name for v in hidden].index)
            text = f"{len(hidden)} mapping{'s' if len(hidden) > 1 else ''} not shown: {', '.join(names)}"
            words.append(text)
        elif hi > lo:
            text = f"unmapped, {human_size(hi - lo)}"
            words.append(f"{lo:#x} to {hi:#x} unmapped, {human_size(hi - lo).replace('≈', 'about ')}")
            body.append(f'<rect x="10" y="{y + 3}" width="36" height="{gap_h - 6}" rx="2" fill="none" '
                        f'stroke="{BORDER}" stroke-dasharray="3 2"/>')
        else:
            return
        body.append(f'<line x1="{x_range}" y1="{y + gap_h / 2}" x2="{x_range + 20}" '
                    f'y2="{y + gap_h / 2}" stroke="{BORDER}" stroke-dasharray="3 2"/>')
        body.append(_text(x_range + 28, y + gap_h / 2 + 4, text, anchor="start", size=12, fill=MUTED))
        y += gap_h

    for i, v in enumerate(drawn):
        if i:
            between(drawn[i - 1].end, v.start)
        body.append(_rect(10, y + 2, 36, row_h - 6, key_colour(v.pkey)))
        body.append(_text(28, y + 18, str(v.pkey), size=13, fill=key_ink(v.pkey), weight="bold"))
        body.append(_text(x_range, y + 18, f"{v.start:#x}-{v.end:#x}", anchor="start", size=13))
        body.append(_text(x_perms, y + 18, v.perms, anchor="start", size=13))
        if v.name:
            body.append(_text(x_name, y + 18, v.name, anchor="start", size=13))
        body.append(_text(width - 10, y + 18, human_size(v.end - v.start), anchor="end", fill=MUTED,
                          size=13))
        words.append(f"{v.start:#x} to {v.end:#x}, {v.perms}, key {v.pkey}"
                     f"{', ' + v.name if v.name else ''}, {human_size(v.end - v.start)}")
        y += row_h
    legend = ", ".join(f"{k} (execute-only)" if k == xo else str(k) for k in keys)
    desc = (f"Keys drawn: {legend or 'none'}. From low to high addresses: "
            + ("; ".join(words) or "no mapping") + ".")
    title = "Address space: " + ("anonymous VMAs" if only_anonymous else "VMAs") + " and their keys"
    return _svg(width, y + 4, title, desc, body)


def timeline_svg(lanes: list[str], steps: list[tuple[int, str]], *, marked: int | None = None,
                 title: str = "Interleaving") -> Svg:
    """One lane per thread, one column per step in execution order; ``marked`` is outlined."""
    col, lane_h, left = 176, 52, 40
    width = left + max(1, len(steps)) * col + 10
    height = 24 + len(lanes) * lane_h + 8
    body = [_text(8, 16, title, anchor="start", weight="bold")]
    for i, name in enumerate(lanes):
        y = 24 + i * lane_h
        body.append(f'<line x1="{left}" y1="{y + lane_h / 2}" x2="{width - 10}" '
                    f'y2="{y + lane_h / 2}" stroke="{BORDER}" stroke-dasharray="3 3"/>')
        body.append(_text(left - 8, y + lane_h / 2 + 4, name, anchor="end", weight="bold"))
    words = []
    for j, (lane, label) in enumerate(steps):
        x, y = left + j * col + 4, 24 + lane * lane_h + 6
        bad = j == marked
        stroke = "hsl(0, 75%, 50%)" if bad else BORDER
        body.append(f'<rect x="{x}" y="{y}" width="{col - 8}" height="{lane_h - 12}" rx="4" '
                    f'fill="{BG}" stroke="{stroke}" stroke-width="{3 if bad else 1}"/>')
        for k, line in enumerate(_wrap(label, 25)[:2]):
            body.append(_text(x + (col - 8) / 2, y + 16 + k * 14, line, size=11))
        words.append(f"{j + 1}. {lanes[lane]}: {label}{' (from here the bad outcome is certain)' if bad else ''}")
    return _svg(width, height, title, "; ".join(words), body)


def _wrap(text: str, width: int) -> list[str]:
    """Split ``text`` into lines of at most ``width`` characters at spaces; cut the last with '…'."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    if len(lines) > 2:
        lines = [lines[0], (lines[1] + " " + " ".join(lines[2:]))]
    return [ln if len(ln) <= width else ln[:width - 1] + "…" for ln in lines]


def signal_phases_svg(phases: list[tuple[str, int]], title: str) -> Svg:
    """PKRU through the phases of one signal delivery, as recorded by the model."""
    col, left = 150, 10
    width = left + len(phases) * col + 10
    body = [_text(8, 16, title, anchor="start", weight="bold")]
    words = []
    for j, (phase, pkru) in enumerate(phases):
        x = left + j * col
        body.append(_rect(x + 4, 28, col - 8, 56, BG))
        body.append(_text(x + col / 2, 50, phase, size=11))
        body.append(_text(x + col / 2, 72, f"{pkru:#010x}", size=12, weight="bold"))
        if j:
            body.append(f'<line x1="{x - 4}" y1="56" x2="{x + 4}" y2="56" stroke="{FG}"/>')
        words.append(f"{phase}: PKRU {pkru:#010x}")
    return _svg(width, 92, title, "; ".join(words), body)


def signal_delivery_svg(rows: dict[str, list[tuple[str, int]]]) -> Svg:
    """PKRU through the phases of a signal delivery, one row per kernel version, from model traces."""
    col, left, row_h = 150, 70, 64
    phases = max(len(p) for p in rows.values())
    width = left + phases * col + 10
    body, words = [], []
    for r, (name, trace) in enumerate(rows.items()):
        y = 8 + r * row_h
        body.append(_text(left - 8, y + 34, name, anchor="end", weight="bold"))
        for j, (phase, pkru) in enumerate(trace):
            x = left + j * col
            changed = j and pkru != trace[j - 1][1]
            body.append(_rect(x + 4, y + 4, col - 8, row_h - 12, BG,
                              stroke="hsl(210, 70%, 50%)" if changed else BORDER))
            body.append(_text(x + col / 2, y + 24, phase, size=11))
            body.append(_text(x + col / 2, y + 44, f"{pkru:#010x}", size=12, weight="bold"))
        words.append(f"{name}: " + ", ".join(f"{p} {v:#010x}" for p, v in trace))
    return _svg(width, 8 + len(rows) * row_h, "PKRU during signal delivery", "; ".join(words), body)

"""Pictures drawn from the model: plain SVG text, no external tools.

Each function returns an :class:`Svg`: the markup and a text alternative
that says the same thing in words (for screen readers, and for anyone
reading the page as text). Colours come from CSS variables of the furo
theme with fallbacks, so a picture follows the light or dark theme; key
colours are mid-tone hues that read on both backgrounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from .hardware import NR_PKEYS, decode_pkru

FG = "var(--color-foreground-primary, #222)"
MUTED = "var(--color-foreground-muted, #666)"
BG = "var(--color-background-primary, #fff)"
BORDER = "var(--color-foreground-border, #999)"
FONT = 'font-family="var(--font-stack--monospace, monospace)"'


def key_colour(pkey: int) -> str:
    """A distinct mid-tone hue per key; key 0 is grey."""
    if pkey == 0:
        return "hsl(0, 0%, 60%)"
    return f"hsl({(pkey * 137) % 360}, 65%, 55%)"


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


def pkru_svg(pkru: int) -> Svg:
    """The PKRU register: sixteen keys, each with its AD and WD bit and the rights they leave."""
    cell, left, top = 40, 60, 34
    body = [_text(left + NR_PKEYS * cell / 2, 18, f"PKRU = {pkru:#010x}", size=14, weight="bold")]
    body.append(_text(left - 8, top + 14, "AD", anchor="end", fill=MUTED))
    body.append(_text(left - 8, top + 36, "WD", anchor="end", fill=MUTED))
    body.append(_text(left - 8, top + 62, "rights", anchor="end", fill=MUTED))
    body.append(_text(left - 8, top + 80, "key", anchor="end", fill=MUTED))
    words = []
    for row in decode_pkru(pkru):
        x = left + row.pkey * cell
        for i, bit in enumerate((row.ad, row.wd)):
            fill = key_colour(row.pkey) if bit else BG
            body.append(_rect(x + 2, top + i * 22, cell - 4, 18, fill))
            body.append(_text(x + cell / 2, top + 13 + i * 22, "1" if bit else "0",
                              fill=FG if not bit else "#fff"))
        rights = "rw" if row.write else ("r-" if row.read else "--")
        body.append(_text(x + cell / 2, top + 62, rights))
        body.append(_text(x + cell / 2, top + 80, str(row.pkey), fill=MUTED))
        words.append(f"key {row.pkey} {'read-write' if row.write else 'read-only' if row.read else 'no access'}")
    desc = "; ".join(words)
    return _svg(left + NR_PKEYS * cell + 10, top + 92, f"PKRU {pkru:#010x}", desc, body)


def address_space_svg(mm, *, only_anonymous: bool = False) -> Svg:
    """The VMAs of an mm as a column of bars, each coloured by its key."""
    vmas = [v for v in mm.vmas if not only_anonymous or not v.name]
    row, top, width = 26, 10, 560
    body = []
    words = []
    for i, v in enumerate(vmas):
        y = top + i * row
        body.append(_rect(10, y, 24, row - 6, key_colour(v.pkey)))
        body.append(_text(22, y + 15, str(v.pkey), size=11, fill="#fff"))
        label = f"{v.start:#x}-{v.end:#x} {v.perms} {v.name}".rstrip()
        body.append(_text(44, y + 15, label, anchor="start"))
        body.append(_text(width - 10, y + 15, f"{(v.end - v.start) // 1024} KiB", anchor="end",
                          fill=MUTED))
        words.append(f"{v.start:#x} to {v.end:#x}, {v.perms}, key {v.pkey}{', ' + v.name if v.name else ''}")
    height = top + len(vmas) * row + 4
    return _svg(width, height, "Address space: VMAs and their keys", "; ".join(words), body)


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

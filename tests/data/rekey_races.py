"""Two threads re-key one buffer with pkey_mprotect: which key does it end with?

Result: Sometimes (2W+pkeymprotect+pkeymprotect), Never (...+neither)

A and B are threads of one process sharing one read-write page, buf. A
attaches key k1 to it while B attaches k2. Each pkey_mprotect runs under the
mmap lock, so the two calls run one after the other (SYS-SERIALIZED) and the
later one wins: the buffer can end with either key, and with no other.

Explore it with ``pkeyspec races explore tests/data/rekey_races.py``; this
file is the worked example of docs/how-to/explore-your-own-race.md.
"""

from pkeyspec import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, System
from pkeyspec.races import Race, World, syscall

RW = PROT_READ | PROT_WRITE


def setup() -> World:
    """The initial state: threads A and B, the page buf, and two free-to-use keys k1, k2."""
    system = System()
    a = system.spawn()
    b = a.clone()
    buf = a.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    k1 = a.pkey_alloc(0, 0)
    k2 = a.pkey_alloc(0, 0)
    return World(system, {"A": a, "B": b}, buf=buf, k1=k1, k2=k2)


def rekey(thread: str, key: str):
    """One step: ``thread`` attaches ``key`` to buf, then notes buf's key as ``key``.

    The note is what the final states show: the step that runs last leaves
    the buffer's final key in it.
    """
    def action(w: World) -> None:
        t = w.t[thread]
        w.do(f"{thread}.ret", t.pkey_mprotect, w.v["buf"], PAGE_SIZE, RW, w.v[key])
        w.v["key"] = t.smaps_pkey(w.v["buf"])
    return syscall(f"pkey_mprotect(buf, {key})", action)


THREADS = {"A": (rekey("A", "k1"),), "B": (rekey("B", "k2"),)}

REKEY = Race(
    name="2W+pkeymprotect+pkeymprotect",
    family="how-to",
    question="A re-keys buf to k1 while B re-keys it to k2. Can buf end with either key?",
    setup=setup,
    threads=THREADS,
    exists=lambda w: w.v["key"] == w.v["k1"],
    exists_text="buf ends with A's key k1",
    result="Sometimes",
    facts=("SYS-SERIALIZED",),
    observe=("key",),
)

NEITHER = Race(
    name="2W+pkeymprotect+pkeymprotect+neither",
    family="how-to",
    variant_of="2W+pkeymprotect+pkeymprotect",
    variant="As above, but the exists clause asks for a key that neither thread attached.",
    question="Can buf end with a key nobody attached, say the default key 0?",
    setup=setup,
    threads=THREADS,
    exists=lambda w: w.v["key"] not in (w.v["k1"], w.v["k2"]),
    exists_text="buf ends with neither k1 nor k2",
    result="Never",
    facts=("SYS-SERIALIZED",),
    observe=("key",),
)

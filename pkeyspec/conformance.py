"""Conformance scenarios: one source, two executors (the model and real kernels).

A scenario file (``conformance/scenarios/*.scn``) is a list of scenarios,
each a list of operations, one per line. The same files are executed by
``conformance/runner.c`` on real Linux kernels booted under QEMU (its output
is kept in ``conformance/observations/*.jsonl``) and by :func:`run_model`
on the model. :func:`compare_files` puts the two side by side.

The format::

    # a comment (anywhere on a line)
    scenario NAME                  # starts a scenario; names are unique
    doc TEXT...                    # what it shows (may repeat)
    rows b c                       # rows of linux-observed.md it covers
    facts ID ID                    # fact IDs of pkeys-facts.md
    only pku | nopku               # run on PKU CPUs only, or without PKU only
    [@SEL] [NAME =] OP ARG...      # one operation

``@SEL`` runs the operation in a thread made by ``NAME = thread`` or in the
process made by ``NAME = fork`` (default: the scenario's main thread).
``NAME =`` names the result: it is reported (unless NAME starts with ``_``)
and can be used later as ``$NAME``. An argument is terms joined by ``|`` or
``+`` (left to right); a term is a number, a constant (``PROT_READ``, ``RW``,
``MAP_PRIVATE``, ``AD``, ``PAGE``, ``SIGSEGV``...) or ``$NAME``.

A result is a string: a decimal integer, a hexadecimal PKRU (``0x55555554``),
an errno name (``EINVAL``), ``ok``, ``yes``/``no``, a key or ``absent`` from
smaps, ``$buf+0x10`` for a fault address relative to a named mapping (raw
addresses are never compared: they differ between runs), and for the
process, ``end``: ``exited N`` or ``killed SIGNAME``. An operation that ended
its process has no result.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import glibc
from .signals import SA_SIGINFO, SIG_DFL, SIG_IGN, Exited, Killed, Livelock
from .system import System
from .uapi import (
    IORING_OP_READ, IORING_OP_WRITE, IORING_SETUP_SQPOLL, IOSQE_ASYNC, SI_CODE_NAMES, SIGNAL_NAMES,
)

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = ROOT / "conformance" / "scenarios"
OBSERVATION_DIR = ROOT / "conformance" / "observations"

CONSTANTS = {
    "PROT_NONE": 0, "PROT_READ": 1, "PROT_WRITE": 2, "PROT_EXEC": 4,
    "PROT_GROWSDOWN": 0x01000000, "RW": 3, "RX": 5, "RWX": 7,
    "MAP_SHARED": 1, "MAP_PRIVATE": 2, "MAP_FIXED": 0x10, "MAP_ANONYMOUS": 0x20,
    "MADV_NORMAL": 0, "MADV_DONTNEED": 4,
    "AD": 1, "WD": 2, "PKEY_DISABLE_ACCESS": 1, "PKEY_DISABLE_WRITE": 2,
    "PAGE": 4096,
    "SIGILL": 4, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12,
    "SA_ONSTACK": 0x08000000, "SA_NODEFER": 0x40000000, "SA_RESETHAND": 0x80000000,
    "SS_DISABLE": 2, "SS_ONSTACK": 1, "SS_AUTODISARM": 0x80000000,
}

#: Operation -> (minimum, maximum) number of arguments; the runner knows the same set.
OPS = {
    "mmap": (4, 4), "munmap": (2, 2), "mprotect": (3, 3), "pkey_mprotect": (4, 4),
    "pkey_alloc": (2, 2), "pkey_free": (1, 1), "madvise": (3, 3),
    "glibc_pkey_alloc": (2, 2), "glibc_pkey_free": (1, 1), "glibc_pkey_mprotect": (4, 4),
    "pkey_get": (1, 1), "pkey_set": (2, 2),
    "rdpkru": (0, 0), "wrpkru": (1, 1), "touch_stack_with_pkru": (1, 1),
    "load": (1, 2), "store": (2, 3), "write_code": (1, 1), "call": (1, 1),
    "smaps_pkey": (1, 1), "smaps_pkey_of": (1, 1), "vma_count": (2, 2),
    "cpuinfo_has": (1, 1), "cpuid": (1, 1), "eq": (2, 2), "bits": (2, 2), "getpid": (0, 0),
    "pipe": (0, 0), "read": (3, 3), "write": (3, 3), "close": (1, 1),
    "open_proc_mem": (0, 1), "pread": (4, 4), "pwrite": (4, 4),
    "process_vm_readv": (4, 4), "process_vm_writev": (4, 4),
    "handler": (1, 12), "sigaction": (2, 3), "sigaltstack": (2, 3), "raise": (1, 1),
    "sigaltstack_flags": (0, 0), "raise_with_pkru": (2, 2),
    "thread": (0, 0), "fork": (0, 0), "wait": (1, 1), "execve": (0, 0), "exit": (1, 1),
    "debugfs_read": (0, 0), "debugfs_write": (1, 1),
}
# io_uring (pkeyspec.io_uring; the runner's uring_op): set up a ring, submit one SQE and
# wait for its CQE (RING OPCODE FD ADDR LEN [SQE_FLAGS]), close a ring.
OPS.update({"uring_setup": (1, 2), "uring_submit": (5, 6), "uring_close": (1, 1)})
CONSTANTS.update({"IORING_SETUP_SQPOLL": IORING_SETUP_SQPOLL, "IORING_OP_READ": IORING_OP_READ,
                  "IORING_OP_WRITE": IORING_OP_WRITE, "IOSQE_ASYNC": IOSQE_ASYNC})
#: Operations whose first argument is a word, not an expression.
WORD_ARG = {"smaps_pkey_of": ("stack", "text"), "cpuinfo_has": ("pku", "ospke"),
            "cpuid": ("pku", "ospke")}
NEED_NAME = {"thread", "fork", "pipe"}
HANDLER_FLAGS = {"pkru", "si_code", "si_pkey", "err", "frame_pkru", "xstate_bv9", "clear_xstate_bv9",
                 "ss_flags"}
HANDLER_VALUES = {"addr", "asm", "frame_set", "frame_clear", "frame", "wrpkru", "exit", "sigaltstack"}
RET42 = bytes((0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3))
MAX_TOKENS = 12


class ScenarioError(ValueError):
    """A malformed scenario file; the message starts with ``file:line:``."""


@dataclass
class Op:
    file: str
    line: int
    sel: str
    name: str
    op: str
    args: list[str]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def text(self) -> str:
        """The operation as written (without comments)."""
        parts = ([f"@{self.sel}"] if self.sel else []) + ([self.name, "="] if self.name else [])
        return " ".join(parts + [self.op] + self.args)


@dataclass
class Scenario:
    name: str
    file: str
    line: int
    doc: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    only: str | None = None
    ops: list[Op] = field(default_factory=list)

    def runs_on(self, pku: bool) -> bool:
        return self.only is None or (self.only == "pku") == pku


# --- parsing -------------------------------------------------------------------------

def _check_expr(text: str, known: set[str], where: str) -> None:
    term = ""
    for ch in text + "|":
        if ch in "|+":
            if not term:
                raise ScenarioError(f"{where}: empty term in {text!r}")
            if term.startswith("$"):
                if term[1:] not in known:
                    raise ScenarioError(f"{where}: ${term[1:]} is not defined before this line")
            elif term[0].isdigit() or term[0] == "-":
                try:
                    int(term, 0)
                except ValueError:
                    raise ScenarioError(f"{where}: bad number {term!r}") from None
            elif term not in CONSTANTS:
                raise ScenarioError(f"{where}: unknown name {term!r}")
            term = ""
        else:
            term += ch


def parse_text(text: str, file: str) -> list[Scenario]:
    """Parse one scenario file; raises :class:`ScenarioError` with ``file:line``."""
    for what, value in (("text", text), ("file", file)):
        if not isinstance(value, str):
            raise TypeError(f"parse_text's {what} is a str, not {type(value).__name__}")
    scenarios: list[Scenario] = []
    sc: Scenario | None = None
    known: set[str] = set()
    workers: set[str] = set()
    handlers: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        where = f"{file}:{lineno}"
        toks = raw.split("#", 1)[0].split()
        if not toks:
            continue
        head = toks[0]
        if head == "scenario":
            if len(toks) != 2:
                raise ScenarioError(f"{where}: expected 'scenario NAME'")
            if any(s.name == toks[1] for s in scenarios):
                raise ScenarioError(f"{where}: scenario {toks[1]} defined twice")
            sc = Scenario(toks[1], file, lineno)
            scenarios.append(sc)
            known, workers, handlers = set(), {"main"}, set()
            continue
        if sc is None:
            raise ScenarioError(f"{where}: expected 'scenario NAME' before {head!r}")
        if head == "doc":
            sc.doc.append(" ".join(toks[1:]))
            continue
        if head in ("rows", "facts"):
            getattr(sc, head).extend(toks[1:])
            continue
        if head == "only":
            if len(toks) != 2 or toks[1] not in ("pku", "nopku"):
                raise ScenarioError(f"{where}: expected 'only pku' or 'only nopku'")
            sc.only = toks[1]
            continue
        i, sel, name = 0, "", ""
        if toks[0].startswith("@"):
            sel = toks[0][1:]
            if sel not in workers:
                raise ScenarioError(f"{where}: unknown thread or process @{sel}")
            i = 1
        if i + 1 < len(toks) and toks[i + 1] == "=":
            name = toks[i]
            if not name.replace("_", "").replace(".", "").isalnum():
                raise ScenarioError(f"{where}: bad result name {name!r}")
            if name in ("end", "error"):
                raise ScenarioError(f"{where}: {name!r} is reserved")
            i += 2
        if i >= len(toks):
            raise ScenarioError(f"{where}: missing operation")
        op, args = toks[i], toks[i + 1:]
        if len(args) > MAX_TOKENS:
            raise ScenarioError(f"{where}: too many arguments")
        if op not in OPS:
            raise ScenarioError(f"{where}: unknown operation {op!r}")
        lo, hi = OPS[op]
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise ScenarioError(f"{where}: {op} takes {want} arguments, not {len(args)}")
        if op in NEED_NAME and not name:
            raise ScenarioError(f"{where}: {op} needs a name (NAME = {op})")
        if op in ("fork", "execve") and sel:
            raise ScenarioError(f"{where}: {op} runs in the main thread only")
        if op in WORD_ARG:
            if args[0] not in WORD_ARG[op]:
                raise ScenarioError(f"{where}: {op} takes one of {', '.join(WORD_ARG[op])}")
        elif op == "wait":
            if args[0] not in workers:
                raise ScenarioError(f"{where}: unknown process {args[0]}")
        elif op == "debugfs_write":
            pass
        elif op == "handler":
            hname = args[0]
            for opt in args[1:]:
                key, eq, val = opt.partition("=")
                if not eq and key in HANDLER_FLAGS:
                    continue
                if eq and key in HANDLER_VALUES and val:
                    if key == "addr":
                        if val not in known:
                            raise ScenarioError(f"{where}: addr={val}: ${val} is not defined")
                    else:
                        _check_expr(val, known, where)
                    continue
                raise ScenarioError(f"{where}: unknown handler option {opt!r}")
            handlers.add(hname)
        elif op == "sigaction":
            _check_expr(args[0], known, where)
            if args[1] not in ("SIG_DFL", "SIG_IGN") and args[1] not in handlers:
                raise ScenarioError(f"{where}: unknown handler {args[1]!r}")
            if len(args) > 2:
                _check_expr(args[2], known, where)
        else:
            for a in args:
                _check_expr(a, known, where)
        if name:
            known.add(name)
            if op in ("thread", "fork"):
                workers.add(name)
            if op == "pipe":
                known.update((f"{name}.r", f"{name}.w"))
        sc.ops.append(Op(file, lineno, sel, name, op, args))
    return scenarios


def parse_file(path: str | os.PathLike) -> list[Scenario]:
    path = Path(path)
    return parse_text(path.read_text(), path.name)


def load_scenarios(directory: str | os.PathLike = SCENARIO_DIR) -> list[Scenario]:
    """Every scenario, files sorted by name (the runner's order)."""
    out: list[Scenario] = []
    for p in sorted(Path(directory).glob("*.scn")):
        for sc in parse_file(p):
            if any(s.name == sc.name for s in out):
                raise ScenarioError(f"{p.name}:{sc.line}: scenario {sc.name} defined twice")
            out.append(sc)
    return out


# --- the model executor ------------------------------------------------------------

def _errname(err: int) -> str:
    import errno as _errno
    if err == _errno.EOPNOTSUPP:    # Python names 95 ENOTSUP, its alias; the runner says EOPNOTSUPP
        return "EOPNOTSUPP"
    return _errno.errorcode.get(err, f"E{err}")


def _end_text(end) -> str:
    if end is None:
        return "exited 0"
    if isinstance(end, Exited):
        return f"exited {end.status}"
    if isinstance(end, Killed):
        return f"killed {SIGNAL_NAMES.get(end.signo, f'SIG{end.signo}')}"
    if isinstance(end, Livelock):
        return "timeout"
    return repr(end)


def _sicode_text(signo: int, code: int) -> str:
    if code == 0x80:
        return "SI_KERNEL"
    if code == 0:
        return "SI_USER"
    if code == -6:
        return "SI_TKILL"
    return SI_CODE_NAMES.get(signo, {}).get(code, str(code))


_ENDS = (Killed, Exited, Livelock)


@dataclass
class _HandlerSpec:
    name: str
    flags: set
    values: dict
    addr_base: int = 0
    calls: int = 0


class _Stop(Exception):
    """The operation ended its process: it has no result."""


class ModelRun:
    """One scenario on a fresh :class:`System`; ``results`` in the order they were first set."""

    def __init__(self, scenario: Scenario, kernel: str, pku: bool) -> None:
        self.sc = scenario
        self.system = System(kernel=kernel, pku=pku)
        main = self.system.spawn()
        self.main_proc = main.process
        self.workers = {"main": main}
        self.vars: dict[str, int] = {}
        self.results: dict[str, str] = {}
        self.handlers: dict[str, _HandlerSpec] = {}

    # values
    def eval(self, text: str) -> int:
        acc, opch, term = 0, "", ""
        for ch in text + "\0":
            if ch in "|+\0":
                if term.startswith("$"):
                    v = self.vars[term[1:]]
                elif term[0].isdigit() or term[0] == "-":
                    v = int(term, 0)
                else:
                    v = CONSTANTS[term]
                acc = v if not opch else (acc | v if opch == "|" else acc + v)
                opch, term = ch, ""
            else:
                term += ch
        return acc

    def record(self, name: str, value: str) -> None:
        self.results[name] = value

    def out(self, o: Op, value, kind: str = "int") -> None:
        """Record an operation's result: an int (or hex), an address, a word."""
        if not o.name:
            return
        hidden = o.name.startswith("_")
        if isinstance(value, OSError):
            self.vars[o.name] = -1
            self.record(o.name, _errname(value.errno))
            return
        if kind in ("int", "hex", "addr"):
            self.vars[o.name] = value
        if hidden:
            return
        if kind == "int":
            self.record(o.name, str(value))
        elif kind == "hex":
            self.record(o.name, f"{value:#x}")
        elif kind == "addr":
            self.record(o.name, "ok")
        else:
            self.record(o.name, value)

    # the run
    def run(self) -> dict[str, str]:
        for o in self.sc.ops:
            if self.main_proc.end is not None:
                break
            t = self.workers[o.sel or "main"]
            try:
                self.step(o, t)
            except _Stop:
                pass
            except ProcessLookupError:
                if o.name:
                    self.record(o.name, "dead")
        self.record("end", _end_text(self.main_proc.end))
        return self.results

    def check_end(self, value):
        if isinstance(value, _ENDS):
            raise _Stop
        return value

    def call(self, o: Op, fn, *args, kind: str = "int"):
        try:
            v = fn(*args)
        except OSError as e:
            if isinstance(e, ProcessLookupError):
                raise
            self.out(o, e)
            return
        if kind == "zero":  # sigaction: the C call returns 0
            v, kind = 0, "int"
        self.out(o, self.check_end(v), kind)

    def step(self, o: Op, t) -> None:
        a = [self.eval(x) for x in o.args] if o.op not in WORD_ARG and o.op not in (
            "handler", "sigaction", "wait", "debugfs_write") else None
        op = o.op
        if op == "mmap":
            self.call(o, t.mmap, a[0], a[1], a[2], a[3], kind="addr")
        elif op in ("munmap", "mprotect", "pkey_mprotect", "pkey_alloc", "pkey_free", "madvise"):
            self.call(o, getattr(t, op), *a)
        elif op == "glibc_pkey_alloc":
            self.call(o, glibc.pkey_alloc, t, *a)
        elif op == "glibc_pkey_free":
            self.call(o, glibc.pkey_free, t, *a)
        elif op == "glibc_pkey_mprotect":
            self.call(o, glibc.pkey_mprotect, t, *a)
        elif op == "pkey_get":
            self.call(o, glibc.pkey_get, t, *a)
        elif op == "pkey_set":
            self.call(o, glibc.pkey_set, t, *a)
        elif op == "rdpkru":
            self.out(o, self.check_end(t.rdpkru()), "hex")
        elif op == "wrpkru":
            self.check_end(t.wrpkru(a[0]))
            self.out(o, "ok", "word")
        elif op == "touch_stack_with_pkru":
            old = self.check_end(t.rdpkru())
            self.check_end(t.wrpkru(a[0]))
            self.check_end(t.store(t.sp - 8, 0, 8))
            self.check_end(t.wrpkru(old))
            self.out(o, "ok", "word")
        elif op == "load":
            self.out(o, self.check_end(t.load(a[0], a[1] if len(a) > 1 else 1)))
        elif op == "store":
            self.check_end(t.store(a[0], a[1], a[2] if len(a) > 2 else 1))
            self.out(o, "ok", "word")
        elif op == "write_code":
            for i, b in enumerate(RET42):
                self.check_end(t.store(a[0] + i, b))
            self.out(o, "ok", "word")
        elif op == "call":
            got = bytes(self.check_end(t.execute(a[0] + i)) for i in range(len(RET42)))
            if got != RET42:
                raise AssertionError(f"{o.where}: call: the page does not hold the test function")
            self.out(o, 42)
        elif op in ("smaps_pkey", "smaps_pkey_of"):
            vmas = _smaps_vmas(t.smaps())
            if op == "smaps_pkey":
                hit = [v for v in vmas if v[0] <= a[0] < v[1]]
            elif o.args[0] == "stack":
                hit = [v for v in vmas if v[3] == "[stack]"]
            else:
                hit = [v for v in vmas if v[2][2:3] == "x" and v[3].startswith("/")]
            if not hit or hit[-1 if op == "smaps_pkey" else 0][4] is None:
                if o.name:
                    self.vars[o.name] = -1
                self.out(o, "absent" if hit else "no-vma", "word")
            else:
                self.out(o, hit[-1 if op == "smaps_pkey" else 0][4])
        elif op == "vma_count":
            vmas = _smaps_vmas(t.smaps())
            self.out(o, sum(1 for v in vmas if v[0] < a[0] + a[1] and a[0] < v[1]))
        elif op == "cpuinfo_has":
            self.out(o, "yes" if o.args[0] in self.system.cpuinfo_flags() else "no", "word")
        elif op == "cpuid":
            have = self.system.pku if o.args[0] == "pku" else self.system.ospke
            self.out(o, "yes" if have else "no", "word")
        elif op == "eq":
            self.out(o, "yes" if a[0] == a[1] else "no", "word")
        elif op == "bits":
            self.out(o, 0 if not 0 <= a[0] <= 15 else (a[1] << (2 * a[0])) & 0xFFFFFFFF, "hex")
        elif op == "getpid":
            self.out(o, t.process.pid, "addr")
        elif op == "pipe":
            try:
                r, w = t.pipe()
            except OSError as e:
                self.out(o, e)
                return
            self.vars[f"{o.name}.r"], self.vars[f"{o.name}.w"] = r, w
            self.out(o, 0, "addr")
        elif op in ("read", "write", "close", "pread", "pwrite"):
            self.call(o, getattr(t, op), *a)
        elif op == "open_proc_mem":
            self.call(o, t.open_proc_mem, *(a or [0]), kind="addr")
        elif op in ("process_vm_readv", "process_vm_writev"):
            self.call(o, getattr(t, op), a[0], [(a[1], a[3])], [(a[2], a[3])])
        elif op in ("uring_setup", "uring_submit", "uring_close"):
            self.uring_step(o, t, a)
        elif op == "handler":
            self.declare_handler(o)
        elif op == "sigaction":
            sig = self.eval(o.args[0])
            flags = self.eval(o.args[2]) if len(o.args) > 2 else 0
            if o.args[1] in ("SIG_DFL", "SIG_IGN"):
                self.call(o, t.sigaction, sig, SIG_DFL if o.args[1] == "SIG_DFL" else SIG_IGN, flags,
                          kind="zero")
            else:
                spec = self.handlers[o.args[1]]
                fn = self.handler_body(spec)
                self.call(o, lambda: t.sigaction(sig, fn, flags | SA_SIGINFO,
                                                 touches_stack="asm" not in spec.values), kind="zero")
        elif op == "sigaltstack":
            self.call(o, t.sigaltstack, *a)
        elif op == "sigaltstack_flags":
            self.out(o, t.get_sigaltstack()[2], "hex")
        elif op == "raise_with_pkru":
            # WRPKRU(v), tgkill to itself, WRPKRU(old): no memory access in between.
            old = self.check_end(t.rdpkru())
            self.check_end(t.wrpkru(a[0]))
            self.check_end(t.raise_signal(a[1]))
            self.check_end(t.wrpkru(old))
            self.out(o, 0)
        elif op == "raise":
            self.check_end(t.raise_signal(a[0]))
            self.out(o, 0)
        elif op == "thread":
            self.workers[o.name] = t.clone()
            self.out(o, "ok", "word")
        elif op == "fork":
            self.workers[o.name] = t.fork()
            self.out(o, "ok", "word")
        elif op == "wait":
            proc = self.workers[o.args[0]].process
            self.out(o, "running" if proc.end is None else _end_text(proc.end), "word")
        elif op == "execve":
            t.execve()
            for name, w in list(self.workers.items()):
                if w is not t and w.process is t.process:
                    del self.workers[name]
        elif op == "exit":
            t.exit_group(a[0])
            raise _Stop
        elif op == "debugfs_read":
            try:
                self.out(o, self.system.debugfs_read("x86/init_pkru").strip(), "word")
            except OSError as e:
                self.out(o, _errname(e.errno), "word")
        elif op == "debugfs_write":
            try:
                self.out(o, self.system.debugfs_write("x86/init_pkru", o.args[0]))
            except FileNotFoundError as e:
                self.out(o, _errname(e.errno), "word")
            except OSError as e:
                self.out(o, e)
        else:  # pragma: no cover - the parser refuses unknown operations
            raise AssertionError(op)

    def uring_step(self, o: Op, t, a: list[int]) -> None:
        """io_uring: the ring fd (reported as ``ok``); the CQE's res as a count or errno name."""
        if o.op == "uring_setup":
            self.call(o, t.io_uring_setup, *a, kind="addr")
        elif o.op == "uring_close":
            self.call(o, t.close, *a)
        else:
            try:
                res = t.io_uring_submit(*a)
            except OSError as e:
                if isinstance(e, ProcessLookupError):
                    raise
                self.out(o, e)
                return
            self.out(o, OSError(-res, "failed request") if res < 0 else res)

    def declare_handler(self, o: Op) -> None:
        flags, values = set(), {}
        for opt in o.args[1:]:
            key, eq, val = opt.partition("=")
            if eq:
                values[key] = val if key == "addr" else self.eval(val)
            else:
                flags.add(key)
        spec = _HandlerSpec(o.args[0], flags, values)
        if "addr" in values:
            spec.addr_base = self.vars[values["addr"]]
        self.handlers[spec.name] = spec

    def handler_body(self, h: _HandlerSpec):
        """What the runner's handler does, as model steps (see runner.c c_handler)."""
        def body(ctx) -> None:
            t, info = ctx.thread, ctx.info
            rec = self.record
            if "asm" in h.values:
                # The assembly entry: RDPKRU, WRPKRU, then the C body (which pushes).
                entry = t.rdpkru()
                if isinstance(entry, _ENDS) or isinstance(t.wrpkru(h.values["asm"]), _ENDS):
                    return
                if isinstance(t.store(ctx.frame - 8, 0, 8), _ENDS):
                    return
            else:
                entry = None
            h.calls += 1
            rec(f"{h.name}.calls", str(h.calls))
            if "pkru" in h.flags:
                v = entry if entry is not None else t.rdpkru()
                if isinstance(v, _ENDS):
                    return
                rec(f"{h.name}.pkru", f"{v:#x}")
            if "si_code" in h.flags:
                rec(f"{h.name}.si_code", _sicode_text(info.si_signo, info.si_code))
            if "si_pkey" in h.flags:
                rec(f"{h.name}.si_pkey", str(info.si_pkey)
                    if info.si_signo == 11 and info.si_code == 4 else "none")
            if "err" in h.flags:
                rec(f"{h.name}.err", f"{ctx.err or 0:#x}")
            if "addr" in h.values:
                off = info.si_addr - h.addr_base
                rec(f"{h.name}.si_addr",
                    f"${h.values['addr']}+{off:#x}" if 0 <= off < 1 << 20 else "other")
            if "frame_pkru" in h.flags:
                v = ctx.frame_pkru()
                if isinstance(v, _ENDS):
                    return
                rec(f"{h.name}.frame_pkru", f"{v:#x}")
            if "xstate_bv9" in h.flags:
                v = t.load(ctx.xstate_bv_address, 8)
                if isinstance(v, _ENDS):
                    return
                rec(f"{h.name}.xstate_bv9", "yes" if v >> 9 & 1 else "no")
            for key in ("frame_set", "frame_clear", "frame"):
                if key in h.values:
                    v = ctx.frame_pkru()
                    if isinstance(v, _ENDS):
                        return
                    arg = h.values[key]
                    new = v | arg if key == "frame_set" else v & ~arg if key == "frame_clear" else arg
                    if isinstance(ctx.set_frame_pkru(new & 0xFFFFFFFF), _ENDS):
                        return
            if "clear_xstate_bv9" in h.flags:
                v = t.load(ctx.xstate_bv_address, 8)
                if isinstance(v, _ENDS) or isinstance(
                        t.store(ctx.xstate_bv_address, v & ~(1 << 9), 8), _ENDS):
                    return
            if "ss_flags" in h.flags:
                rec(f"{h.name}.ss_flags", f"{t.get_sigaltstack()[2]:#x}")
            if "sigaltstack" in h.values:
                try:
                    rec(f"{h.name}.sigaltstack", str(t.sigaltstack(0, 0, h.values["sigaltstack"])))
                except OSError as e:
                    rec(f"{h.name}.sigaltstack", _errname(e.errno))
            if "wrpkru" in h.values:
                if isinstance(t.wrpkru(h.values["wrpkru"]), _ENDS):
                    return
            if "exit" in h.values:
                t.exit_group(h.values["exit"])
        return body


def _smaps_vmas(text: str) -> list[tuple]:
    """(start, end, perms, path, ProtectionKey or None) for each VMA of smaps text."""
    vmas: list[list] = []
    for line in text.splitlines():
        f = line.split()
        if f and "-" in f[0] and all(c in "0123456789abcdef-" for c in f[0]):
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            vmas.append([lo, hi, f[1], f[5] if len(f) > 5 else "", None])
        elif line.startswith("ProtectionKey:") and vmas:
            vmas[-1][4] = int(f[1])
    return [tuple(v) for v in vmas]


def run_model(scenario: Scenario, kernel: str, pku: bool = True) -> dict[str, str]:
    """The results of ``scenario`` on the model of Linux ``kernel`` (e.g. ``"6.12"``)."""
    return ModelRun(scenario, kernel, pku).run()


# --- observations and comparison ------------------------------------------------------

@dataclass
class Observation:
    path: Path
    meta: dict
    results: dict[str, dict[str, str]]  # scenario -> result -> value, in file order

    @property
    def label(self) -> str:
        return self.meta["kernel"] + ("" if self.meta["pku"] else " (no PKU)")

    @property
    def short_label(self) -> str:
        """``6.12.117``, ``7.2.13 no PKU``: the stable release the kernel was built from."""
        return self.model_kernel + ("" if self.meta["pku"] else " no PKU")

    @property
    def model_kernel(self) -> str:
        """The stable release the kernel was built from, for :class:`~pkeyspec.system.System`.

        Debian's ``uname -r`` names only the ABI (``6.1.0-57-amd64``), so the
        release comes from the package version: ``"6.1.192-2"`` -> ``"6.1.192"``,
        ``"6.12.117-1~deb12u1"`` -> ``"6.12.117"``, ``"7.2.13-1"`` -> ``"7.2.13"``.

        >>> Observation(Path("x"), {"kernel": "6.1.0-57-amd64", "package_version": "6.1.192-3"},
        ...             {}).model_kernel
        '6.1.192'
        """
        return kernel_release(self.meta["package_version"])


def kernel_release(package_version: str) -> str:
    """``"6.12.117-1~deb12u1"`` -> ``"6.12.117"``: the upstream part of a Debian kernel version.

    >>> kernel_release("6.12.117-1~deb12u1"), kernel_release("7.2.13-1")
    ('6.12.117', '7.2.13')
    """
    import re
    m = re.match(r"(\d+\.\d+(?:\.\d+)?)", package_version.split(":")[-1])
    if m is None:
        raise ValueError(f"not a Debian kernel version: {package_version!r}")
    return m.group(1)


def load_observation(path: str | os.PathLike) -> Observation:
    path = Path(path)
    lines = path.read_text().splitlines()
    meta = json.loads(lines[0])
    results: dict[str, dict[str, str]] = {}
    for line in lines[1:]:
        rec = json.loads(line)
        results.setdefault(rec["scenario"], {})[rec["result"]] = rec["value"]
    return Observation(path, meta, results)


def observation_files(directory: str | os.PathLike = OBSERVATION_DIR) -> list[Path]:
    """Committed observation files, PKU kernels by version first, then no-PKU runs."""
    def key(p: Path):
        meta = json.loads(p.read_text().splitlines()[0])
        nums = tuple(int(x) for x in meta["kernel"].replace("+", ".").replace("-", ".").split(".")
                     if x.isdigit())
        return (not meta["pku"], nums)
    return sorted(Path(directory).glob("*.jsonl"), key=key)


def label_order(label: str) -> tuple:
    """Sort key of :attr:`Observation.short_label`: PKU runs first, then by release."""
    return label.endswith("no PKU"), tuple(int(x) for x in label.split()[0].split("."))


def observed_facts(scenarios: list[Scenario], paths) -> dict[str, dict[str, list[str]]]:
    """Fact ID -> scenario -> the kernels (labels) whose observation file has its results.

    A fact is backed by an observation when a scenario that lists it ran on a real
    kernel; the offline comparison (tests/test_conformance.py) holds the model to it.
    """
    observations = [load_observation(p) for p in paths]
    out: dict[str, dict[str, list[str]]] = {}
    for sc in scenarios:
        kernels = [o.short_label for o in observations if o.results.get(sc.name)]
        kernels.sort(key=label_order)
        if not kernels:
            continue
        for fact in sc.facts:
            out.setdefault(fact, {})[sc.name] = kernels
    return out


@dataclass
class Row:
    scenario: str
    result: str
    observed: str | None
    model: str | None

    @property
    def agree(self) -> bool:
        return self.observed == self.model


@dataclass
class KernelReport:
    observation: Observation
    rows: list[Row]

    @property
    def agree(self) -> int:
        return sum(r.agree for r in self.rows)

    @property
    def disagree(self) -> int:
        return len(self.rows) - self.agree


@dataclass
class Report:
    scenarios: list[Scenario]
    kernels: list[KernelReport]


def compare(obs: Observation, scenarios: list[Scenario]) -> KernelReport:
    """Every result of every scenario the kernel ran, observed beside the model's."""
    rows = []
    for sc in scenarios:
        if not sc.runs_on(obs.meta["pku"]):
            continue
        model = run_model(sc, obs.model_kernel, obs.meta["pku"])
        observed = obs.results.get(sc.name, {})
        names = list(observed) + [n for n in model if n not in observed]
        rows += [Row(sc.name, n, observed.get(n), model.get(n)) for n in names]
    return KernelReport(obs, rows)


def compare_files(paths=None, scenarios: list[Scenario] | None = None) -> Report:
    scenarios = load_scenarios() if scenarios is None else scenarios
    paths = observation_files() if paths is None else paths
    return Report(scenarios, [compare(load_observation(p), scenarios) for p in paths])


def format_summary(report: Report) -> str:
    return "\n".join(f"{k.observation.label}: {len(k.rows)} results, {k.agree} agree, "
                     f"{k.disagree} disagree" for k in report.kernels)


def format_table(report: Report, disagreements_only: bool = False) -> str:
    """Plain text: one line per result, a column per kernel (observed, and model if different)."""
    kernels = report.kernels
    table: dict[tuple[str, str], list[str]] = {}
    for i, k in enumerate(kernels):
        for r in k.rows:
            cell = r.observed if r.agree else f"{r.observed} != model {r.model}"
            table.setdefault((r.scenario, r.result), [""] * len(kernels))[i] = cell or "-"
    lines = []
    header = ["scenario", "result"] + [k.observation.label for k in kernels]
    rows = [[s, n] + cells for (s, n), cells in table.items()
            if not disagreements_only or any("!=" in c for c in cells)]
    widths = [max(len(x[i]) for x in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m pkeyspec.conformance``: compare the committed observations with the model."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--all", action="store_true", help="show every result, not only disagreements")
    args = ap.parse_args(argv)
    report = compare_files()
    print(format_table(report, disagreements_only=not args.all))
    print(format_summary(report))
    return 0 if all(k.disagree == 0 for k in report.kernels) else 1


if __name__ == "__main__":
    raise SystemExit(main())

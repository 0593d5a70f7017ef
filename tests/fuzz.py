"""Fuzz every public function of pkeyspec: ``make fuzz`` (10**6 calls), and a smoke run in ``make test``.

The targets are found by introspection, so a new function or method is
fuzzed without being listed: every public function of every module of the
package, the public methods of :class:`System`, :class:`Process`,
:class:`Thread` and :class:`SignalContext`, and the constructors of the
classes in ``pkeyspec.__all__``. What is left out, and why, is in
:data:`EXCLUDED_MODULES` and :data:`EXCLUDED`.

The calls meet real state: a *world* (one :class:`System`) is grown by the
same random calls, with arguments drawn mostly from what exists (mapped,
keyed and touched addresses, allocated keys, open descriptors, live pids and
tids, handlers that do things), several processes and threads; sometimes an
argument is wild: any int (negative, past 2**64), None, a float, a string,
bytes, a list. A world is replaced after a few hundred calls.

Allowed outcomes of a call:

* a return (for a Thread system call annotated ``-> int``: an int >= 0);
* ``OSError`` with a Linux errno;
* a modelled end (``Killed``, ``Exited``, ``Livelock`` returned; the ended
  thread's next call is ``ProcessLookupError``);
* ``TypeError`` raised by a deliberate ``raise TypeError`` of the model,
  and only when an argument has the wrong Python type; such an argument
  must give that TypeError (a dead or stopped thread makes no call at all,
  so ESRCH or EAGAIN from it counts too);
* an exception a function documents as its contract (:data:`CONTRACTS`),
  when the contract's condition holds.

Every call must finish within 100 ms of CPU time. A call that copies memory
(read, write, pread, pwrite, process_vm_readv/writev) gets 100 ms more per
256 KiB it reports copied: that work is asked for, and the model moves
memory byte by byte. A call that copies little but works long (the old
process_vm_readv, which touched the whole remote range first) is still caught.
Anything else is a defect: the run prints it with a minimal reproducer
(found by removing calls from the world's history while the defect stays)
and exits with status 1.

Kernel-internal functions (:data:`TYPED`) are given values of the right
types only, and the preconditions their kernel callers guarantee
(:data:`PRECONDITIONS`); their types are not an interface.
"""

from __future__ import annotations

import argparse
import errno
import functools
import gc
import importlib
import inspect
import linecache
import math
import os
import pkgutil
import random
import sys
import threading
import time
import traceback
import _thread
from collections import Counter
from dataclasses import dataclass

import pkeyspec
from pkeyspec import Exited, Killed, Livelock, Process, SignalContext, Siginfo, System, Thread
from pkeyspec.cli import CliError
from pkeyspec.conformance import ScenarioError
from pkeyspec.mm import Mm, Vma
from pkeyspec.hardware import Pte
from pkeyspec.signals import SA_NODEFER, SA_ONSTACK, SA_RESETHAND, SA_SIGINFO, SIG_DFL, SIG_IGN, Sigaction

PAGE = 4096
U64 = (1 << 64) - 1
#: CPU seconds a call may take.
LIMIT = 0.100
#: A call that reports copying bytes may take LIMIT more per this many bytes: the model keeps
#: memory byte by byte and moves about 4 MB per second of CPU.
COPY_ALLOWANCE = 256 << 10
#: Wall seconds after which a call counts as hung and is interrupted.
HANG = 5.0
#: Calls in one world before it is replaced.
WORLD_CALLS = 300

# --- what is not fuzzed, and why ------------------------------------------------------------

#: Whole modules that are not model API.
EXCLUDED_MODULES = {
    "pkeyspec.sphinxext": "Sphinx extensions: every function needs a Sphinx application",
    "pkeyspec.__main__": "runs the command line",
    "pkeyspec.races": "the race catalogue: Steps and Races wrap callables, and each race "
                      "runs the explorer (tests/test_races.py judges them)",
}

#: Single names that are not model API, or need what a fuzzer cannot give.
EXCLUDED = {
    # The command line: argparse plumbing and commands that print to streams.
    "pkeyspec.cli.main": "the command line's entry point",
    # Kernel internals that take the model's own objects (rings, saved stacks), reached
    # through Thread's system calls, which the fuzzer calls.
    "pkeyspec.io_uring.executor_pkru": "io_uring/io-wq.c: takes a ring object",
    "pkeyspec.io_uring.put_ring": "io_uring/io_uring.c: takes a ring object",
    "pkeyspec.io_uring.exec_cleanup": "fs/exec.c: called by execve",
    "pkeyspec.io_uring.submit_and_wait": "reached through Thread.io_uring_submit",
    "pkeyspec.io_uring.sys_io_uring_setup": "reached through Thread.io_uring_setup",
    "pkeyspec.signals.force_sigsegv": "kernel/signal.c: called while a signal is delivered",
    "pkeyspec.signals.deliver_forced": "kernel/signal.c: called while a signal is delivered",
    "pkeyspec.signals.restore_altstack": "kernel/signal.c: takes the stack saved in a frame",
    "Thread.do_sigaltstack": "do_sigaltstack returns -errno; reached through Thread.sigaltstack",
    # Labels and versions of observation files (strings the harness writes).
    "pkeyspec.conformance.label_order": "sorts Observation.short_label strings",
    "pkeyspec.conformance.kernel_release": "parses a Debian package version from a file",
    "pkeyspec.cli.build_parser": "argparse plumbing",
    "pkeyspec.cli.cmd_races_list": "a subcommand: an argparse Namespace and output streams",
    "pkeyspec.cli.cmd_races_check": "a subcommand",
    "pkeyspec.cli.cmd_races_show": "a subcommand",
    "pkeyspec.cli.cmd_races_explore": "a subcommand",
    "pkeyspec.cli.cmd_pkru_decode": "a subcommand",
    "pkeyspec.cli.cmd_fault_decode": "a subcommand",
    "pkeyspec.cli.load_races": "reads and runs a Python file",
    # The explorer's internals: they take a Program or a Race, i.e. callables, and explore.
    "pkeyspec.cli.run_race": "runs the explorer on a Race",
    "pkeyspec.cli.parse_schedule": "takes a Race",
    "pkeyspec.cli.replay": "takes a Race",
    "pkeyspec.cli.schedule_text": "takes a Race",
    "pkeyspec.cli.threads_side_by_side": "takes a Race",
    "pkeyspec.cli.format_race": "takes an explorer Result",
    "pkeyspec.cli.format_replay": "takes a Race",
    "pkeyspec.explore.explore": "the explorer: takes a Program of callables",
    "pkeyspec.explore.explore_stateful": "the explorer: takes a Program of callables",
    "pkeyspec.explore.point_of_no_return": "the explorer: takes a Program of callables",
    # The offline comparison with real kernels: files and parsed scenarios
    # (tests/test_conformance.py runs every committed scenario and observation).
    "pkeyspec.conformance.main": "the comparison's command line",
    "pkeyspec.conformance.load_scenarios": "reads files",
    "pkeyspec.conformance.parse_file": "reads a file",
    "pkeyspec.conformance.load_observation": "reads a file",
    "pkeyspec.conformance.observation_files": "lists files",
    "pkeyspec.conformance.compare_files": "reads files",
    "pkeyspec.conformance.run_model": "runs a whole parsed Scenario",
    "pkeyspec.conformance.compare": "takes an Observation and Scenarios",
    "pkeyspec.conformance.observed_facts": "takes Scenarios and files",
    "pkeyspec.conformance.format_summary": "takes a Report",
    "pkeyspec.conformance.format_table": "takes a Report",
    # Drawings of data the model produced (explorer schedules, signal traces, mms):
    # the site draws only model output with them.
    "pkeyspec.pictures.timeline_svg": "draws an explorer schedule",
    "pkeyspec.pictures.signal_phases_svg": "draws a trace the model recorded",
    "pkeyspec.pictures.signal_delivery_svg": "draws traces the model recorded",
    # A reference count: it drops one its caller holds, so alone it would drop one nobody held.
    "pkeyspec.uaccess.close_file": "drops a reference its caller (close, exit) holds",
    # Constructors of classes exported for isinstance and annotations: a Process or a
    # Thread comes from System.spawn, Thread.clone or Thread.fork, never from user code.
    "pkeyspec.tasks.Process": "made by System.spawn and Thread.fork only",
    "pkeyspec.tasks.Thread": "made by System.spawn, Thread.clone and Thread.fork only",
}

#: Kernel-internal code: called with values of the right types (and PRECONDITIONS) only.
#: A module name covers its functions; a qualified name, one function or method.
TYPED = {
    "pkeyspec.access": "the kernel's fault handling and the CPU's accesses",
    "pkeyspec.execute_only": "the kernel's execute-only key",
    "pkeyspec.keys": "the kernel's key management; its sys_* are reached through Thread",
    "pkeyspec.mm": "the kernel's mm; its sys_* are reached through Thread",
    "pkeyspec.uaccess": "the kernel's user copies; its sys_* are reached through Thread",
    "pkeyspec.tasks.sigaltstack_size_valid": "arch/x86/kernel/signal.c",
    "pkeyspec.signals.sig_ignored": "kernel/signal.c",
    "pkeyspec.signals.sig_fatal": "kernel/signal.c",
    "pkeyspec.signals.prepare_signal": "kernel/signal.c",
    "pkeyspec.signals.queue_signal": "kernel/signal.c",
    "pkeyspec.signals.next_signal": "kernel/signal.c",
    "pkeyspec.signals.deliver_pending": "kernel/signal.c",
    "pkeyspec.signals.force_sig_fault": "kernel/signal.c",
    "pkeyspec.signals.send_signal": "kernel/signal.c",
    "pkeyspec.signals.deliver": "kernel/signal.c",
    "pkeyspec.signals.rseq_signal_deliver": "kernel/rseq.c",
    "pkeyspec.signals.sigreturn": "arch/x86/kernel/signal.c",
    "pkeyspec.signals.sys_tgkill": "reached through Thread.tgkill",
    "pkeyspec.signals.sys_kill": "reached through Thread.kill",
    "pkeyspec.system.initial_sp": "exec's stack pointer, of a fresh mm",
    "pkeyspec.pictures.address_space_svg": "draws an mm",
    "System.new_thread": "copy_process, for Thread.clone",
    "System.fork": "for Thread.fork",
    "System.execve": "for Thread.execve",
    "System.note": "the delivery trace the pictures draw",
    "System.new_shmem": "shared memory objects, for mmap",
    "Process.alloc_fd": "the descriptor table, for pipe and open",
    "Process.terminate": "do_group_exit, for the ways a process ends",
}


def _key_ok(k) -> bool:
    return isinstance(k, int) and 0 <= k <= 15


def _rights_ok(r) -> bool:
    return isinstance(r, int) and 0 <= r <= 3


def _version_ok(v) -> bool:
    parts = v.split(".") if isinstance(v, str) else list(v) if isinstance(v, tuple) else None
    if parts is None or len(parts) < 2:
        return False
    try:
        int(parts[0]), int(parts[1])
        return True
    except (TypeError, ValueError):
        return False


#: Exceptions a function documents, and when: qualified name -> [(exception, condition on the
#: arguments by name), ...]. The documentation is the function's docstring or its page.
def _size_bad(a) -> bool:
    return a.get("size", 1) not in (1, 2, 4, 8)


CONTRACTS = {
    "pkeyspec.hardware.pkru_rights": [(ValueError, lambda a: not _key_ok(a["pkey"]))],
    "pkeyspec.hardware.pkru_allows_read": [(ValueError, lambda a: not _key_ok(a["pkey"]))],
    "pkeyspec.hardware.pkru_allows_write": [(ValueError, lambda a: not _key_ok(a["pkey"]))],
    "pkeyspec.hardware.pkru_allows": [(ValueError, lambda a: not _key_ok(a["pkey"]))],
    "pkeyspec.hardware.pkru_with_rights": [
        (ValueError, lambda a: not _key_ok(a["pkey"]) or not _rights_ok(a["rights"]))],
    "pkeyspec.hardware.pte_with_pkey": [(ValueError, lambda a: not _key_ok(a["pkey"]))],
    "pkeyspec.hardware.checked_pkey": [(ValueError, lambda a: not _key_ok(a["pkey"]))],
    "pkeyspec.hardware.checked_rights": [(ValueError, lambda a: not _rights_ok(a["rights"]))],
    "pkeyspec.signals.default_action": [(ValueError, lambda a: not 1 <= a["signo"] <= 64)],
    "pkeyspec.system.parse_kernel": [(ValueError, lambda a: not _version_ok(a["version"]))],
    "pkeyspec.system.System": [
        (ValueError, lambda a: not _version_ok(a.get("kernel", "7.2"))
         or a.get("cpu_vendor", "intel") not in ("intel", "amd"))],
    # io_uring: requests and flags the model does not implement say so (io_uring.py).
    "Thread.io_uring_setup": [(NotImplementedError, lambda a: True)],
    "Thread.io_uring_submit": [(NotImplementedError, lambda a: True)],
    "Thread.load": [(ValueError, _size_bad)],
    "Thread.store": [(ValueError, _size_bad)],
    "pkeyspec.access.load": [(ValueError, _size_bad)],
    "pkeyspec.access.store": [(ValueError, _size_bad)],
    "pkeyspec.cli.parse_int": [
        (CliError, lambda a: True),
        (ValueError, lambda a: a.get("bits") is not None and a["bits"] < 1)],
    "pkeyspec.cli.find_race": [(CliError, lambda a: True)],
    "pkeyspec.conformance.parse_text": [(ScenarioError, lambda a: True)],
}


# --- handlers: what the fuzzed processes run on a signal ------------------------------------

def _quiet(call):
    """A handler's own calls: C code that ignores what they return."""
    try:
        return call()
    except OSError:
        return None


def h_nothing(ctx):
    pass


def h_wrpkru0(ctx):
    _quiet(lambda: ctx.thread.wrpkru(0))


def h_open_frame(ctx):
    _quiet(lambda: ctx.set_frame_pkru(0))


def h_repair(ctx):
    """Clear the faulting key's bits in the saved PKRU (the way a SIGSEGV handler repairs)."""
    saved = _quiet(ctx.frame_pkru)
    if isinstance(saved, int):
        _quiet(lambda: ctx.set_frame_pkru(saved & ~(3 << (2 * ctx.info.si_pkey))))


def h_clear_bv(ctx):
    _quiet(lambda: ctx.thread.store(ctx.xstate_bv_address, 0, 8))


def h_exit(ctx):
    _quiet(lambda: ctx.thread.exit_group(3))


def h_raise_usr2(ctx):
    _quiet(lambda: ctx.thread.raise_signal(12))


def h_raise_stop(ctx):
    _quiet(lambda: ctx.thread.raise_signal(19))


def h_fork(ctx):
    _quiet(ctx.thread.fork)


def h_execve(ctx):
    _quiet(ctx.thread.execve)


def h_mmap(ctx):
    _quiet(lambda: ctx.thread.mmap(0, PAGE, 3, 0x22))


HANDLERS = [h_nothing, h_wrpkru0, h_open_frame, h_repair, h_clear_bv, h_exit, h_raise_usr2,
            h_raise_stop, h_fork, h_execve, h_mmap]


# --- targets ----------------------------------------------------------------------------------

@dataclass
class Target:
    name: str                           # qualified: "pkeyspec.mm.page_align", "Thread.mmap"
    func: object
    owner: type | None                  # the class whose instances the method is called on
    params: list[inspect.Parameter]
    typed: bool
    weight: float

    @functools.cached_property
    def system_call(self) -> bool:
        """A Thread method that returns what a C system call returns (annotated ``-> int``).

        ``io_uring_submit`` returns a CQE's ``res``, which is a negative errno for a failed
        request, as the kernel writes it: not a system call's return.
        """
        return (self.owner is Thread and self.name != "Thread.io_uring_submit"
                and inspect.signature(self.func).return_annotation == "int")


def _annotation(p: inspect.Parameter) -> str:
    ann = p.annotation
    if ann is inspect.Parameter.empty:
        return ""
    return ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))


def _excluded_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in EXCLUDED_MODULES)


def _is_typed(name: str, module: str) -> bool:
    return name in TYPED or module in TYPED


METHOD_OWNERS = (System, Process, Thread, SignalContext)


def targets() -> list[Target]:
    """Every function, method and constructor the fuzzer calls (found, not listed)."""
    found: dict[str, Target] = {}

    def add(name, func, owner, module, weight):
        sig = inspect.signature(func)
        params = [p for p in sig.parameters.values() if p.name != "self"
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        found[name] = Target(name, func, owner, params, _is_typed(name, module), weight)

    for info in pkgutil.walk_packages(pkeyspec.__path__, "pkeyspec."):
        if _excluded_module(info.name):
            continue
        module = importlib.import_module(info.name)
        for attr, obj in vars(module).items():
            qual = f"{info.name}.{attr}"
            if attr.startswith("_") or getattr(obj, "__module__", None) != info.name or qual in EXCLUDED:
                continue
            if inspect.isfunction(obj):
                add(qual, obj, None, info.name, 1.0)
            elif inspect.isclass(obj) and attr in pkeyspec.__all__:
                add(qual, obj, None, info.name, 0.5)
    for cls in METHOD_OWNERS:
        for attr, member in vars(cls).items():
            if attr.startswith("_") or not inspect.isfunction(member):
                continue
            name = f"{cls.__name__}.{attr}"
            if name in EXCLUDED:
                continue
            add(name, member, cls, cls.__module__, 4.0 if cls is Thread else 1.0)
    # Calls that end a process: enough of them to meet ended processes, not so many that
    # nothing lives long.
    for name in ("Thread.exit_group", "Thread.execve"):
        if name in found:
            found[name].weight = 0.5
    return sorted(found.values(), key=lambda t: t.name)


# --- values -------------------------------------------------------------------------------

WRONG = [None, 1.5, float("nan"), "7", b"\x07", [1, 2], (3,), {}, 1j, object()]
BOUNDARY_INTS = [0, 1, -1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 63, 64, 65, 255, 256, PAGE - 1,
                 PAGE, PAGE + 1, 0x10000, 2**31 - 1, 2**31, -(2**31), 2**32 - 1, 2**32,
                 2**32 + 1, 2**47, 0x7FFFFFFFF000, 0x800000000000, 0xFFFF800000000000,
                 2**63 - 1, 2**63, -(2**63), U64 - PAGE + 1, U64, 2**64, 2**64 + 1, -(2**64),
                 2**65, 2**100, -(2**100), 10**40]
PKRUS = [0x55555554, 0, 0x55555550, 0x55555558, 0xFFFFFFFC, 0xFFFFFFFF, 0x55555556, 0x55555555,
         0x15555554, 0xAAAAAAA8, 0xFFFF0000]
SIGNALS = [10, 12, 11, 4, 9, 15, 17, 18, 19, 20, 21, 22, 23, 28, 3, 13, 14, 34, 40, 64, 0, 65, -1]
STRINGS = ["", "0", "0x55555550", "0x55555555", "0x15555554\n", "+0x10", "0777", "0x", "12\n\n",
           "hello", "6.12", "6.1", "7.2", "6.12.4", "4.8", "x86/init_pkru", "x86/other", "\0",
           "0x55555554\0junk", "1" * 5000, "é", "0x" + "0" * 40 + "4", "-1", " 5 "]


def _literal(v) -> str:
    """Python source for a literal value (big ints in hex: Python refuses 4300+ digit literals)."""
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int):
        return repr(v) if abs(v) < 2**64 else (f"-{-v:#x}" if v < 0 else f"{v:#x}")
    if isinstance(v, float):
        return f"float({repr(v)!r})" if math.isnan(v) or math.isinf(v) else repr(v)
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_literal(x) for x in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
    if type(v) is object:
        return "object()"
    if isinstance(v, str) and len(v) > 60 and len(set(v)) == 1:
        return f"{v[0]!r} * {len(v)}"
    return repr(v)


@dataclass
class Arg:
    expr: str
    value: object
    wrong: bool = False


class World:
    """One System and everything that exists in it, with the Python source that made it."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        kernel = rng.choice(["7.2", "7.2", "6.12", "6.1", "6.12.4", "6.9", "4.8"])
        pku = rng.random() < 0.9
        vendor = rng.choice(["intel", "intel", "amd"])
        init = rng.choice([None, None, None, 0x15555554, "0x55555550"])
        kwargs = {"kernel": kernel, "pku": pku, "cpu_vendor": vendor}
        if init is not None:
            kwargs["init_pkru"] = init
        self.system = System(**kwargs)
        self.lines = [f"s = System({', '.join(f'{k}={_literal(v)}' for k, v in kwargs.items())})"]
        self.threads: list[Thread] = []
        self.names: dict[int, str] = {}

    def name(self, t: Thread) -> str:
        return self.names[id(t)]

    def adopt(self, value) -> str | None:
        """Give a thread a call returned its name (t0, t1, ...)."""
        if isinstance(value, Thread) and id(value) not in self.names:
            self.names[id(value)] = f"t{len(self.threads)}"
            self.threads.append(value)
            return self.names[id(value)]
        return None

    def live(self) -> list[Thread]:
        return [t for t in self.threads if t.alive and not t.process.stopped]


class Gen:
    """Arguments for one call: mostly from the world, sometimes wild."""

    def __init__(self, world: World, rng: random.Random, typed: bool) -> None:
        self.w, self.r, self.typed = world, rng, typed
        self.thread: Thread | None = None

    # --- objects of the world ---
    def a_thread(self, live_bias: float = 0.92) -> Arg:
        live = self.w.live()
        pool = live if live and self.r.random() < live_bias else self.w.threads
        t = self.r.choice(pool)
        if self.thread is None:
            self.thread = t
        return Arg(self.w.name(t), t)

    def me(self) -> Thread:
        if self.thread is None:
            self.a_thread()
        return self.thread

    def mm(self) -> Arg:
        t = self.me()
        return Arg(f"{self.w.name(t)}.process.mm", t.process.mm)

    def vma(self) -> Arg | None:
        t = self.me()
        vmas = t.process.mm.vmas
        if not vmas:
            return None
        i = self.r.randrange(len(vmas))
        return Arg(f"{self.w.name(t)}.process.mm.vmas[{i}]", vmas[i])

    # --- numbers ---
    def wild_int(self) -> int:
        r = self.r.random()
        if r < 0.5:
            return self.r.choice(BOUNDARY_INTS)
        if r < 0.75:
            return self.r.randrange(-(2**70), 2**70)
        return self.r.getrandbits(self.r.choice([8, 16, 32, 48, 64]))

    def address(self, t: Thread | None = None, prot: int = 0) -> int:
        """An address in a VMA of ``t`` (one that allows ``prot``, most of the time), else wild."""
        t = t or self.me()
        vmas = t.process.mm.vmas
        if vmas and self.r.random() < 0.85:
            fit = [v for v in vmas if v.flags & prot == prot]
            v = self.r.choice(fit if fit and self.r.random() < 0.8 else vmas)
            span = min(v.end - v.start, 16 * PAGE)
            base = v.start if self.r.random() < 0.8 else v.end - span
            off = self.r.randrange(span)
            if self.r.random() < 0.75:
                off &= ~(PAGE - 1)
            return base + off
        return self.r.choice([0, 0x400000, 0x7FFFFFFFF000 - 8, 0xFFFF800000000000,
                              self.wild_int()])

    def size(self) -> int:
        if self.r.random() < 0.85:
            return self.r.choice([0, 1, 2, 8, 16, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 3 * PAGE,
                                  4 * PAGE, 16 * PAGE, 64 * PAGE])
        return self.wild_int()

    def key(self) -> int:
        mm = self.me().process.mm
        allocated = [k for k in range(16) if mm.pkey_allocation_map >> k & 1]
        if allocated and self.r.random() < 0.6:
            return self.r.choice(allocated + [-1])
        return self.r.choice([-1, 0, 1, 2, 15, 16, -2, 2**32 + 1, 2**32 - 1, self.wild_int()])

    def signo(self) -> int:
        caught = [s for s, a in self.me().process.sigactions.items() if a.handler != SIG_DFL]
        if caught and self.r.random() < 0.5:
            return self.r.choice(caught)
        return self.r.choice(SIGNALS) if self.r.random() < 0.9 else self.wild_int()

    def pid(self) -> int:
        pids = list(self.w.system.processes)
        return self.r.choice(pids + [0, -1, 99999, -pids[0], self.wild_int()]) if pids else 0

    def tid(self) -> int:
        t = self.me()
        tids = [u.tid for u in t.process.threads] or [t.tid]
        return self.r.choice(tids + tids + [0, -1, 99999, 2**32 + tids[0], self.wild_int()])

    def fd(self) -> int:
        fds = list(self.me().process.fds)
        if fds and self.r.random() < 0.85:
            return self.r.choice(fds)
        return self.r.choice([3, 4, -1, 0, 99, self.wild_int()])

    def iovecs(self, t: Thread | None) -> list:
        n = self.r.choice([0, 1, 1, 1, 2, 3])
        out = []
        for _ in range(n):
            base = self.address(t) if t is not None else self.wild_int()
            length = self.r.choice([8, 1, PAGE, 2 * PAGE, 0, 3 * PAGE, 256 << 20]) \
                if self.r.random() < 0.9 else self.wild_int()
            out.append((base, length))
        return out

    def remote_thread(self) -> Thread | None:
        live = self.w.live()
        return self.r.choice(live) if live else None

    # --- one parameter ---
    def value(self, target: Target, p: inspect.Parameter) -> Arg | None:
        """None means: use the default (an optional parameter left out)."""
        if p.default is not p.empty and self.r.random() < 0.3:
            return None
        kind, none_ok = spec(p)
        if not self.typed and self.r.random() < 0.04:
            wrong = [v for v in WRONG_FOR.get(kind, ()) if not (v is None and none_ok)]
            if wrong:
                v = self.r.choice(wrong)
                return Arg(_literal(v), v, wrong=True)
        return make(self, target, p.name, _annotation(p))


#: Values of the wrong Python type, per kind of parameter (see ``spec``).
WRONG_FOR = {
    "int": [None, 1.5, float("nan"), "7", b"\x07", [1, 2], (3,), {}, 1j, object()],
    "str": [None, 7, 1.5, b"0x0", ["x"]],
    "bytes": [None, 7, 1.5, "x", [1]],
    "strbytes": [None, 7, 1.5, [1], ("0",)],
    "version": [None, 7, 6.12, b"6.1", [6, 12], ("6", "12"), (6.0, 12)],
    "intstr": [None, 1.5, b"0x0", [1]],
    "strictbool": [None, 1, "no", 1.5],
    "boolint": [None, "no", 1.5, []],
    "obj": [None, 7, "t", 1.5],
    "handler": [None, 5, 1.5, "h", 0.0],
    "iov": [None, 5, "7", [(1,)], [(1, 2, 3)], [("a", 1)], [None], [(1.5, 8)]],
}


def spec(p: inspect.Parameter) -> tuple[str, bool]:
    """The kind of Python value a parameter takes, and whether None is one of its values."""
    ann, name = _annotation(p), p.name
    none_ok = "None" in ann
    if name == "handler":
        return "handler", False
    if name in ("local_iov", "remote_iov", "iov"):
        return "iov", False
    if name in ("kernel", "version") and "str" in ann:
        return "version", False
    if name == "init_pkru":
        return "intstr", False
    if name == "data" and ann == "str":
        return "strbytes", False
    if name == "touches_stack":
        return "strictbool", False
    if name == "pku":
        return "boolint", False
    if ann.startswith(("Thread", "Mm", "Vma", "System", "Siginfo", "Sigaction", "Process", "Pte",
                       "mm_.Mm")):
        return "obj", none_ok
    if ann.startswith("int") or (ann == "" and name in ("value", "signo")):
        return "int", none_ok
    if ann.startswith("str"):
        return "str", none_ok
    if ann.startswith("bytes"):
        return "bytes", none_ok
    return "any", True


def make(g: Gen, target: Target, name: str, ann: str) -> Arg:
    """A well-typed value for a parameter, from its name and annotation."""
    r, w = g.r, g.w
    if ann == "Thread" or name in ("thread", "parent"):
        return g.a_thread()
    if name == "current":
        if r.random() < 0.5:
            return Arg("None", None)
        return g.a_thread()
    if ann == "System" or name == "system":
        return Arg("s", w.system)
    if name in ("proc", "process"):
        t = g.me()
        return Arg(f"{w.name(t)}.process", t.process)
    if name == "mm":
        return g.mm()
    if name == "vma":
        return g.vma()
    if name in ("info", "siginfo"):
        if name == "siginfo" and "None" in ann and r.random() < 0.3:
            return Arg("None", None)
        signo = r.choice([11, 4, 10, 12, 17, 19, 18, 64, 34])
        code = r.choice([0, -6, 1, 2, 4, 0x80, 2])
        addr, key = g.address(), r.randrange(16)
        return Arg(f"Siginfo({signo}, {code}, {addr:#x}, {key})", Siginfo(signo, code, addr, key))
    if name == "action":
        h = r.choice(HANDLERS + [SIG_DFL, SIG_IGN])
        flags = r.choice([0, SA_NODEFER, SA_RESETHAND, SA_ONSTACK])
        expr = h.__name__ if callable(h) else str(h)
        return Arg(f"Sigaction({expr}, {flags:#x}, {r.random() < 0.7})",
                   Sigaction(h, flags, r.random() < 0.7))
    if name == "pte" and "Pte" in ann:
        mm = g.me().process.mm
        if mm.ptes and r.random() < 0.8:
            vpn = r.choice(list(mm.ptes))
            return Arg(f"{w.name(g.me())}.process.mm.ptes[{vpn:#x}]", mm.ptes[vpn])
        return Arg("None", None)
    if name == "handler":
        h = r.choice(HANDLERS + [SIG_DFL, SIG_IGN, SIG_DFL])
        return Arg(h.__name__ if callable(h) else str(h), h)
    if name in ("local_iov", "remote_iov", "iov", "segs"):
        t = g.me() if name != "remote_iov" else g.remote_thread()
        v = g.iovecs(t)
        return Arg(_literal(v), v)
    if name == "saved":
        t = g.me()
        return Arg(f"({w.name(t)}.sp, set({w.name(t)}.blocked), {w.name(t)}.altstack, "
                   f"{w.name(t)}.altstack_flags)",
                   (t.sp, set(t.blocked), t.altstack, t.altstack_flags))
    if name == "end":
        v = r.choice([Exited(r.randrange(256)), Killed(r.choice([9, 10, 11, 15]))])
        return Arg(repr(v) if isinstance(v, Exited) else f"Killed({v.signo})", v)
    if name == "f":
        from pkeyspec.uaccess import ProcMem
        pid = g.me().process.pid
        return Arg(f"pkeyspec.uaccess.ProcMem({pid}, {g.me().process.execs})",
                   ProcMem(pid, g.me().process.execs))
    # bools
    if ann == "bool" or name in ("touches_stack", "pku"):
        v = r.random() < 0.5
        return Arg(repr(v), v)
    # strings and bytes
    if name in ("kernel", "version"):
        v = r.choice(["7.2", "6.12", "6.1", "6.12.4", "6.9", "4.8", (6, 12), (7, 2, 1), "6", "x.y",
                      (6,), (), "6.12.x", "٦.١٢"])
        return Arg(_literal(v), v)
    if name == "init_pkru":
        v = r.choice(PKRUS + ["0x15555554", "hello", "0x100000000", "1" * 5000, -1, 2**40])
        return Arg(_literal(v), v)
    if name == "cpu_vendor":
        v = r.choice(["intel", "amd", "arm", ""])
        return Arg(repr(v), v)
    if name == "path":
        v = r.choice(["x86/init_pkru", "x86/init_pkru", "x86/other", "", "/x86/init_pkru"])
        return Arg(repr(v), v)
    if name == "data" and ("bytes" in ann or "str" in ann):
        if "str" in ann:
            v = r.choice(STRINGS)
            if r.random() < 0.3:
                v = v.encode()
        else:
            v = bytes(r.getrandbits(8) for _ in range(r.choice([0, 1, 8, 16])))
        return Arg(_literal(v), v)
    if ann == "str" or name in ("text", "what", "title", "event", "file", "name"):
        v = r.choice(STRINGS + ["MP+allocprotect+staleload", "mp+allocprotect+staleload",
                                "scenario s\nx = pkey_alloc 0 0\n", "scenario\n"])
        return Arg(_literal(v), v)
    # ints by meaning
    if True:
        if "None" in ann and r.random() < 0.2:
            return Arg("None", None)
        if r.random() < 0.12:
            v = g.wild_int()
        elif name in ("addr", "start", "buf", "base", "ss_sp", "frame", "fpstate", "si_addr"):
            last = target.name.rsplit(".", 1)[-1]
            v = g.address(prot={"store": 2, "load": 1, "execute": 4, "read": 2, "pread": 2,
                                "write": 1, "pwrite": 1}.get(last, 0))
        elif name == "stack":
            if r.random() < 0.6:
                return Arg("None", None)
            v = g.address() + r.choice([0, PAGE, 2**70])
        elif name == "offset":
            v = g.address() if target.name.endswith(("pread", "pwrite")) else r.choice([0, 0, PAGE, 1])
        elif name in ("length", "len", "count", "size", "n", "ss_size"):
            v = g.size() if name != "size" or not target.name.endswith(("load", "store")) else \
                r.choice([1, 2, 4, 8] * 4 + [3, 0, 16])
        elif name == "prot":
            v = r.choice([0, 1, 3, 3, 3, 4, 4, 5, 7, 0x1000001, 0x2000001, 0x3000001, 8, 0x10])
        elif name == "flags":
            if target.name.endswith("mmap"):
                v = r.choice([0x22, 0x22, 0x22, 0x21, 0x32, 0x100022, 0x02, 0x23, 0x2A])
            elif target.name.endswith("sigaction"):
                v = r.choice([0, SA_SIGINFO, SA_NODEFER, SA_RESETHAND, SA_ONSTACK])
            else:
                v = r.choice([0, 0, 0, 0, 1])
        elif name == "advice":
            v = r.choice([0, 4, 4, 3, 9])
        elif name in ("pkey", "key", "execute_only"):
            v = g.key()
        elif name in ("rights", "access_rights", "init_val"):
            v = r.choice([0, 1, 2, 3, 3, 4, -1])
        elif name == "fd":
            v = g.fd()
        elif name == "pid":
            v = g.pid()
        elif name == "tid":
            v = g.tid()
        elif name in ("signum", "signo", "si_signo"):
            v = g.signo()
        elif name in ("code", "si_code"):
            v = r.choice([0, -6, 1, 2, 4, 0x80, 99])
        elif name == "request":
            v = r.choice([2, 5, 5, 2, 0, 99])
        elif name in ("eax", "pkru", "mm_map", "value"):
            v = r.choice(PKRUS) if r.random() < 0.7 else r.getrandbits(32)
        elif name in ("ecx", "edx"):
            v = r.choice([0] * 15 + [1, 2**32])
        elif name == "err":
            v = r.choice([0x4, 0x5, 0x6, 0x7, 0x14, 0x15, 0x24, 0x25, 0x27, 0x35, 0x8, 0x3F])
        elif name in ("ss_flags",):
            v = r.choice([0, 1, 2, 1 << 31, 3])
        elif name == "status":
            v = r.choice([0, 1, 17, 255, 256, -1])
        elif name in ("major", "minor", "patch"):
            v = r.choice([6, 12, 1, 4, 7, 2, 0, 13])
        elif name == "newflags":
            v = r.choice([0x73, 0x71, 0x70, 0x75, 0x77])
        elif name in ("si_pkey", "bits"):
            v = r.randrange(16)
        else:
            v = r.choice(BOUNDARY_INTS[:20]) if r.random() < 0.7 else g.wild_int()
        return Arg(_literal(v), v)


# --- preconditions of kernel-internal functions ------------------------------------------------

def _pre_alive(g: Gen, args: dict) -> bool:
    """The kernel runs only live threads: an internal function taking a thread gets a live one."""
    t = args.get("thread") or args.get("parent")
    if t is None:
        return True
    return t.value.alive and not t.value.process.stopped


def _vma_of(g: Gen, args: dict) -> bool:
    """``vma`` belongs to ``mm`` (or to the thread's mm), and ``addr`` lies inside it."""
    mm = args["mm"].value if "mm" in args else g.me().process.mm
    vma = args.get("vma")
    if vma is None or vma.value not in mm.vmas:
        return False
    if "addr" in args:
        v = vma.value
        a = v.start + g.r.randrange(v.end - v.start) // PAGE * PAGE
        args["addr"] = Arg(hex(a), a)
    return True


def _page_bytes(g: Gen, args: dict, written: bool = False) -> bool:
    """read_bytes/write_bytes/set_byte/byte_at work within one page of a VMA, whose page a
    fault has filled in; a write, in a page of its own (a write fault or FOLL_WRITE gave it
    one: never the shared zero page)."""
    mm = args["mm"].value
    pages = [vpn for vpn, pte in mm.ptes.items() if not (written and pte.zero_page)]
    if not pages:
        return False
    vpn = g.r.choice(pages)
    if mm.find_vma(vpn * PAGE) is None:
        return False
    a = vpn * PAGE + g.r.randrange(PAGE)
    args["addr"] = Arg(hex(a), a)
    room = PAGE - a % PAGE
    if "n" in args:
        n = g.r.randrange(room + 1)
        args["n"] = Arg(str(n), n)
    if "data" in args:
        d = bytes(g.r.getrandbits(8) for _ in range(g.r.randrange(min(room, 64) + 1)))
        args["data"] = Arg(repr(d), d)
    if "value" in args:
        v = g.r.randrange(256)
        args["value"] = Arg(str(v), v)
    return True


def _signo_valid(g: Gen, args: dict) -> bool:
    """Callers pass a signal the syscall has checked (1 to 64)."""
    for key in ("signo",):
        if key in args and not (isinstance(args[key].value, int) and 1 <= args[key].value <= 64):
            v = g.r.choice([10, 12, 11, 17, 18, 19, 20, 9, 15, 34, 64])
            args[key] = Arg(str(v), v)
    return _pre_alive(g, args)


def _small_copy(g: Gen, args: dict) -> bool:
    """A kernel copy is as long as the kernel buffer its caller has: at most 64 KiB."""
    for key in ("length",):
        if key in args and not 0 <= args[key].value <= 65536:
            v = g.r.choice([0, 1, 8, PAGE, 3 * PAGE])
            args[key] = Arg(str(v), v)
    return _pre_alive(g, args)


def _remote_chunk(g: Gen, args: dict) -> bool:
    """access_remote_vm is given one kernel page at most (mem_rw, ptrace), with the data to
    write when writing."""
    n = g.r.choice([1, 8, 100, PAGE])
    args["length"] = Arg(str(n), n)
    if args.get("write") and args["write"].value:
        d = bytes(g.r.getrandbits(8) for _ in range(n))
        args["data"] = Arg(f"bytes.fromhex({d.hex()!r})", d)
    return True


def _fixup(g: Gen, args: dict) -> bool:
    """mprotect_fixup is given a page-aligned part of one VMA of the mm, VMA flags and a key."""
    if not _vma_of(g, args):
        return False
    v = args["vma"].value
    pages = (v.end - v.start) // PAGE
    lo = g.r.randrange(pages)
    hi = g.r.randrange(lo + 1, pages + 1)
    start, end = v.start + lo * PAGE, v.start + hi * PAGE
    flags = (v.flags & ~0x7) | g.r.choice([0, 1, 3, 4, 5]) & (v.flags >> 4)
    key = g.r.randrange(16)
    for k, val in (("start", start), ("end", end), ("newflags", flags), ("pkey", key)):
        args[k] = Arg(hex(val), val)
    return True


def _fresh_stack(g: Gen, args: dict) -> bool:
    """initial_sp is computed for the mm exec has just made: it has a [stack]."""
    return any(v.name == "[stack]" for v in args["mm"].value.vmas)


def _kernel_tuple(g: Gen, args: dict) -> bool:
    v = g.r.choice([(6, 1), (6, 12), (7, 2), (6, 9), (4, 8)])
    args["kernel"] = Arg(repr(v), v)
    return True


def _key_in_range(g: Gen, args: dict) -> bool:
    """Callers free or set a key the allocator gave them: 0 to 15 (and a thread that runs)."""
    v = g.r.randrange(16)
    args["pkey"] = Arg(str(v), v)
    return _pre_alive(g, args)


def _nonnegative_key(g: Gen, args: dict) -> bool:
    """arch_set_user_pkey_access is given a key its caller got from the allocator or checked."""
    if args["pkey"].value < 0:
        v = g.r.randrange(20)
        args["pkey"] = Arg(str(v), v)
    return _pre_alive(g, args)


def _live_process(g: Gen, args: dict) -> bool:
    """copy_process adds a thread to a running process, with a 32-bit PKRU."""
    proc = args["proc"].value
    pkru = g.r.choice(PKRUS)
    args["pkru"] = Arg(hex(pkru), pkru)
    if "sp" in args:
        sp = g.address() & U64                  # a 64-bit register
        args["sp"] = Arg(hex(sp), sp)
    return proc.end is None and not proc.stopped


def _one_access(g: Gen, args: dict) -> bool:
    """An access is a read, a write or an instruction fetch, never a fetch that writes."""
    if args.get("write") and args.get("fetch") and args["write"].value and args["fetch"].value:
        args["fetch"] = Arg("False", False)
    return _pre_alive(g, args)


def _running(g: Gen, args: dict) -> bool:
    """Process methods of the kernel act on a process that runs."""
    return g.me().alive


PRECONDITIONS = {
    "pkeyspec.access.fault_in": _vma_of,
    "pkeyspec.access.page_access": _one_access,
    "pkeyspec.access.user_access": _one_access,
    "pkeyspec.access.read_bytes": _page_bytes,
    "pkeyspec.access.write_bytes": lambda g, a: _page_bytes(g, a, written=True),
    "pkeyspec.access.byte_at": _page_bytes,
    "pkeyspec.access.set_byte": lambda g, a: _page_bytes(g, a, written=True),
    "pkeyspec.access.arch_vma_access_permitted": _vma_of,
    "pkeyspec.access.access_error": _vma_of,
    "pkeyspec.execute_only.arch_override_mprotect_pkey": lambda g, a: _vma_of(g, a) and _pre_alive(g, a),
    "pkeyspec.keys.mm_set_pkey_free": _key_in_range,
    "pkeyspec.keys.arch_set_user_pkey_access": _nonnegative_key,
    "pkeyspec.mm.mprotect_fixup": _fixup,
    "pkeyspec.mm.initial_vmas": _kernel_tuple,
    "pkeyspec.signals.queue_signal": _signo_valid,
    "pkeyspec.signals.send_signal": _signo_valid,
    "pkeyspec.signals.sig_ignored": _signo_valid,
    "pkeyspec.signals.sig_fatal": _signo_valid,
    "pkeyspec.signals.prepare_signal": _signo_valid,
    "pkeyspec.uaccess.copy_from_user": _small_copy,
    "pkeyspec.uaccess.copy_from_user_with_pkru": _small_copy,
    "pkeyspec.uaccess.access_remote_vm": _remote_chunk,
    "pkeyspec.system.initial_sp": _fresh_stack,
    "System.new_thread": _live_process,
    "Process.alloc_fd": _running,
    "Process.terminate": _running,
}


# --- running calls --------------------------------------------------------------------------

@dataclass
class Call:
    target: Target
    line: str                           # Python source of the call
    args: dict                          # name -> Arg
    wrong: bool                         # some argument has the wrong Python type
    obj: object = None                  # the instance a method is called on


@dataclass
class Defect:
    kind: str
    target: str
    detail: str
    lines: list[str]                    # the world's history, the failing call last


def _deliberate_type_error(exc: BaseException) -> bool:
    """Raised by a ``raise TypeError(...)`` line of pkeyspec itself."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    code = last.tb_frame.f_code
    if os.sep + "pkeyspec" + os.sep not in code.co_filename:
        return False
    line = linecache.getline(code.co_filename, last.tb_lineno).strip()
    return line.startswith("raise TypeError")


def _thread_cannot_run(exc: BaseException) -> bool:
    """A dead or stopped thread makes no call (the model's ESRCH or EAGAIN from ``_enter``)."""
    return isinstance(exc, OSError) and (
        (exc.errno == errno.ESRCH and "has ended" in str(exc))
        or (exc.errno == errno.EAGAIN and "is stopped" in str(exc)))


def classify(call: Call, outcome, exc: BaseException | None) -> tuple[str, str | None]:
    """(outcome name, None) for an allowed outcome; (kind, detail) for a defect."""
    t = call.target
    if exc is None:
        if call.wrong and not t.typed:
            return "wrong type accepted", f"returned {outcome!r:.100}"
        if isinstance(outcome, (Killed, Exited, Livelock)):
            return f"end {type(outcome).__name__}", None
        if t.system_call:
            if not (type(outcome) is int and outcome >= 0):
                return "bad return", f"a system call returned {outcome!r:.100}"
        return "return", None
    if isinstance(exc, TypeError):
        if not call.wrong:
            return "TypeError with well-typed arguments", _tb(exc)
        if not _deliberate_type_error(exc):
            return "TypeError not raised by the model itself", _tb(exc)
        return "TypeError", None
    if call.wrong and not t.typed and not _thread_cannot_run(exc):
        return "wrong type not refused", f"{type(exc).__name__}: {exc}"[:200]
    values = {k: a.value for k, a in call.args.items()}
    for exc_type, condition in CONTRACTS.get(t.name, ()):
        if type(exc) is exc_type:
            try:
                holds = condition(values)
            except Exception:   # noqa: BLE001 - a condition that cannot be evaluated does not hold
                holds = False
            if holds:
                return f"contract {type(exc).__name__}", None
    if isinstance(exc, OSError):
        if isinstance(exc.errno, int) and exc.errno in errno.errorcode:
            return f"OSError {errno.errorcode[exc.errno]}", None
        return "OSError without a Linux errno", repr(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "hang", f"interrupted after {HANG} s"
    return f"{type(exc).__name__}", _tb(exc)


def _tb(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)[-2:]
    where = "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.line}" for f in frames)
    return f"{type(exc).__name__}: {str(exc)[:160]} [{where}]"



class Watchdog:
    """Interrupts the main thread when one call runs longer than HANG seconds (wall)."""

    def __init__(self) -> None:
        self.started = None
        self.stop = False
        self.fired = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop:
            time.sleep(0.5)
            s = self.started
            if s is not None and time.monotonic() - s > HANG and not self.fired:
                self.fired = True
                _thread.interrupt_main()


class Fuzzer:
    def __init__(self, seed: int, *, targets_: list[Target] | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.targets = targets_ if targets_ is not None else targets()
        self.weights = [t.weight for t in self.targets]
        self.outcomes: Counter = Counter()
        self.defects: dict[tuple[str, str], list[Defect]] = {}
        self.calls = 0
        self.slowest = (0.0, "")
        self.watchdog = Watchdog()

    # --- one world ---
    def new_world(self) -> World:
        w = World(self.rng)
        self.world_calls = 0
        self.do(w, self.by_name("System.spawn"), extra_weight=False)
        return w

    def by_name(self, name: str) -> Target:
        return next(t for t in self.targets if t.name == name)

    def build(self, w: World, target: Target) -> Call | None:
        g = Gen(w, self.rng, target.typed)
        args: dict[str, Arg] = {}
        selfexpr, obj = None, None
        if target.owner is Thread:
            a = g.a_thread()
            selfexpr, obj = a.expr, a.value
        elif target.owner is System:
            selfexpr, obj = "s", w.system
        elif target.owner is Process:
            a = g.a_thread()
            selfexpr, obj = f"{a.expr}.process", a.value.process
            if target.typed and not a.value.alive:
                return None
        elif target.owner is SignalContext:
            a = g.a_thread()
            fp = g.address()
            obj = SignalContext(a.value, Siginfo(11, 4, fp, 1), fp - 512, fp, None)
            selfexpr = f"SignalContext({a.expr}, Siginfo(11, 4, {fp:#x}, 1), {fp - 512:#x}, {fp:#x}, None)"
        for p in target.params:
            a = g.value(target, p)
            if a is None:
                if p.default is p.empty:
                    return None
                continue
            args[p.name] = a
        pre = PRECONDITIONS.get(target.name)
        if target.typed and (not _pre_alive(g, args) or (pre is not None and not pre(g, args))):
            return None
        pos = [p for p in target.params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        parts = []
        for p in target.params:
            if p.name in args:
                parts.append(args[p.name].expr if p in pos and all(q.name in args for q in pos[:pos.index(p)])
                             else f"{p.name}={args[p.name].expr}")
        callee = f"{selfexpr}.{target.func.__name__}" if selfexpr else target.name
        line = f"{callee}({', '.join(parts)})"
        return Call(target, line, args, any(a.wrong for a in args.values()), obj)

    def invoke(self, call: Call):
        t = call.target
        values = {k: a.value for k, a in call.args.items()}
        pos = [p.name for p in t.params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        posargs, kwargs = [], {}
        for p in t.params:
            if p.name not in values:
                continue
            if p.name in pos and len(posargs) == pos.index(p.name):
                posargs.append(values[p.name])
            else:
                kwargs[p.name] = values[p.name]
        fn = getattr(call.obj, t.func.__name__) if t.owner is not None else t.func
        ret = fn(*posargs, **kwargs)
        if inspect.isgenerator(ret):
            for _ in range(100):
                try:
                    next(ret)
                except StopIteration as done:
                    return done.value
        return ret

    def do(self, w: World, target: Target, extra_weight: bool = True) -> None:
        call = self.build(w, target)
        if call is None:
            return
        self.calls += 1
        self.world_calls += 1
        exc, ret = None, None
        self.watchdog.started = time.monotonic()
        c0 = time.process_time()
        try:
            ret = self.invoke(call)
        except BaseException as e:  # noqa: BLE001 - every outcome is classified
            exc = e
        cpu = time.process_time() - c0
        self.watchdog.started = None
        if self.watchdog.fired and isinstance(exc, KeyboardInterrupt):
            self.watchdog.fired = False
        elif isinstance(exc, KeyboardInterrupt):
            raise exc
        name = w.adopt(ret)
        line = f"{name} = {call.line}" if name else call.line
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            line = f"_(lambda: {call.line})"
        kind, detail = classify(call, ret, exc)
        budget = LIMIT
        if exc is None and type(ret) is int and ret > 0 and target.name.split(".")[-1] in (
                "read", "write", "pread", "pwrite", "process_vm_readv", "process_vm_writev"):
            budget += LIMIT * ret / COPY_ALLOWANCE
        if cpu > self.slowest[0]:
            self.slowest = (cpu, call.line[:100])
        w.lines.append(line)
        if detail is None and cpu > budget:
            kind, detail = "slow", f"{cpu * 1000:.0f} ms of CPU"
        if detail is not None:
            if self.report(w, call, kind, detail):
                self.outcomes["DISALLOWED " + kind] += 1
                # the world may be broken now: start a new one
                self.world_calls = WORLD_CALLS
            return
        self.outcomes[kind] += 1

    def check_world(self, w: World) -> None:
        """System.copy() and System.state() after the world's last call, and its invariants."""
        for what in ("copy", "state"):
            try:
                c0 = time.process_time()
                getattr(w.system, what)()
                cpu = time.process_time() - c0
            except Exception as e:  # noqa: BLE001
                call = Call(self.by_name(f"System.{what}"), f"s.{what}()", {}, False)
                self.report(w, call, f"System.{what} fails", _tb(e), f"s.{what}()")
                return
            if cpu > LIMIT:
                self.report(w, Call(self.by_name(f"System.{what}"), f"s.{what}()", {}, False),
                            "slow", f"System.{what}: {cpu * 1000:.0f} ms", f"s.{what}()")
        problem = invariant_problem(w.system)
        if problem:
            self.report(w, Call(self.by_name("System.state"), "s.state()", {}, False),
                        "broken state", problem)

    def report(self, w: World, call: Call, kind: str, detail: str, extra: str | None = None) -> bool:
        """Record a defect; False for a slow call that is not slow again when replayed (a
        garbage collection or the machine's load, not the model)."""
        lines = list(w.lines) + ([extra] if extra else [])
        defect = Defect(kind, call.target.name, detail, lines)
        key = (kind, call.target.name)
        if kind == "slow" and key not in self.defects and \
                not any(same_defect(defect, lines) for _ in range(2)):
            self.outcomes["slow once, not on replay"] += 1
            return False
        found = self.defects.setdefault(key, [])
        if len(found) < 3:
            found.append(defect)
        return True

    def run(self, calls: int, *, progress: bool = False) -> None:
        # What exists now is never garbage: keep the collector from scanning it during a
        # timed call (a full collection of a large test process takes tens of ms).
        gc.collect()
        gc.freeze()
        self.started = time.monotonic()
        w = self.new_world()
        next_print = self.started + 10
        while self.calls < calls:
            if self.world_calls >= WORLD_CALLS:
                self.check_world(w)
                w = self.new_world()
                continue
            if not w.live():                # every process has ended: start another program
                self.do(w, self.by_name("System.spawn"))
                continue
            target = self.rng.choices(self.targets, self.weights)[0]
            self.do(w, target)
            if self.world_calls % 25 == 0:
                problem = invariant_problem(w.system)
                if problem:
                    self.report(w, Call(self.by_name("System.state"), "s.state()", {}, False),
                                "broken state", problem)
                    self.world_calls = WORLD_CALLS
            if progress and time.monotonic() > next_print:
                next_print += 10
                rate = self.calls / (time.monotonic() - self.started)
                print(f"  {self.calls:>9} calls, {rate:,.0f}/s", file=sys.stderr, flush=True)
        self.check_world(w)
        self.elapsed = time.monotonic() - self.started
        self.watchdog.stop = True


def invariant_problem(system: System) -> str | None:
    """What Linux would never have, in any process: None when all is well."""
    for pid, proc in system.processes.items():
        mm = proc.mm
        prev = 0
        for v in mm.vmas:
            if v.start % PAGE or v.end % PAGE or v.start >= v.end or v.start < prev \
                    or v.end > 0x7FFFFFFFF000 or not 0 <= v.pkey <= 15:
                return f"process {pid}: bad VMA {v!r} after {prev:#x}"
            prev = v.end
        for vpn in mm.ptes:
            if mm.find_vma(vpn * PAGE) is None:
                return f"process {pid}: a PTE at {vpn * PAGE:#x} outside every VMA"
        for a, b in mm.memory.items():
            if not 1 <= b <= 255 or mm.find_vma(a) is None:
                return f"process {pid}: byte {b!r} at {a:#x}"
            pte = mm.ptes.get(a >> 12)
            if pte is None or pte.zero_page:       # a private byte needs a page of its own
                return f"process {pid}: byte at {a:#x} on {'no page' if pte is None else 'the zero page'}"
        if not isinstance(mm.pkey_allocation_map, int) or mm.pkey_allocation_map >> 16:
            return f"process {pid}: allocation map {mm.pkey_allocation_map!r}"
        for t in proc.threads:
            if type(t.pkru) is not int or not 0 <= t.pkru <= 0xFFFFFFFF:
                return f"thread {t.tid}: PKRU {t.pkru!r}"
            if type(t.sp) is not int or not 0 <= t.sp <= U64:
                return f"thread {t.tid}: sp {t.sp!r}"
            for item in t.pending:
                if not (isinstance(item, tuple) and 1 <= item[0] <= 64):
                    return f"thread {t.tid}: pending {item!r}"
        if proc.stopped not in (0, 19, 20, 21, 22):
            return f"process {pid}: stopped by {proc.stopped!r}"
        for pipe_end in proc.fds.values():
            p = getattr(pipe_end, "pipe", None)
            if p is not None and (p.readers < 0 or p.writers < 0):
                return f"process {pid}: pipe with {p.readers} readers, {p.writers} writers"
    return None


# --- reproducers --------------------------------------------------------------------------

PRELUDE = ("import pkeyspec, pkeyspec.access, pkeyspec.cabi, pkeyspec.cli, pkeyspec.conformance, "
           "pkeyspec.execute_only, pkeyspec.explore, pkeyspec.glibc, pkeyspec.hardware, "
           "pkeyspec.keys, pkeyspec.mm, pkeyspec.pictures, pkeyspec.rfc, pkeyspec.signals, "
           "pkeyspec.system, pkeyspec.tasks, pkeyspec.uaccess\n"
           "from pkeyspec import *\n"
           "from pkeyspec.signals import Sigaction\n"
           "from tests.fuzz import *   # the handlers h_*\n"
           "from tests.fuzz import _   # _(lambda: call): a call whose failure is not the point\n")


def _(call):
    """In a reproducer: make a call whose failure is not the point."""
    try:
        return call()
    except Exception as e:  # noqa: BLE001
        return e


def replay(lines: list[str]):
    """Run a reproducer's lines; the last one's (exception, cpu seconds, namespace)."""
    ns: dict = {}
    exec(PRELUDE, ns)
    for line in lines[:-1]:
        exec(line, ns)
    last = lines[-1]
    if last.startswith("_(lambda: "):
        last = last[len("_(lambda: "):-1]
    c0 = time.process_time()
    try:
        exec(last, ns)
        return None, time.process_time() - c0, ns
    except Exception as e:  # noqa: BLE001
        return e, time.process_time() - c0, ns


def same_defect(defect: Defect, lines: list[str]) -> bool:
    """Does ``lines`` end with the same kind of defect as ``defect``?"""
    if defect.kind == "broken state":
        ns: dict = {}
        try:
            exec(PRELUDE, ns)
            for line in lines:
                exec(line, ns)
        except Exception:  # noqa: BLE001 - a reduced history that no longer runs
            return False
        return invariant_problem(ns["s"]) is not None
    try:
        exc, cpu, ns = replay(lines)
    except Exception:  # noqa: BLE001 - a reduced history that no longer runs
        return False
    kind = defect.kind
    if kind == "slow":
        return cpu > LIMIT
    if kind.startswith("System.") and kind.endswith("fails"):
        return exc is not None
    if kind in ("wrong type accepted",):
        return exc is None
    if kind == "bad return":
        return exc is None
    if exc is None:
        return False
    if kind == "TypeError with well-typed arguments" or kind == "TypeError not raised by the model itself":
        return isinstance(exc, TypeError)
    if kind == "wrong type not refused":
        return not isinstance(exc, TypeError)
    return type(exc).__name__ == kind


def minimize(defect: Defect, budget: float = 20.0) -> list[str]:
    """Remove calls from the history while the defect stays (ddmin, bounded in time)."""
    lines = defect.lines
    if defect.kind == "hang":
        return lines
    if not same_defect(defect, lines):
        return lines
    head, body, last = lines[:1], lines[1:-1], lines[-1:]
    if defect.kind == "broken state":           # the call that broke it may be any of them
        body, last = lines[1:], []
    deadline = time.monotonic() + budget
    n = 2
    while len(body) >= 1 and time.monotonic() < deadline:
        chunk = max(1, len(body) // n)
        reduced = False
        for i in range(0, len(body), chunk):
            candidate = body[:i] + body[i + chunk:]
            if same_defect(defect, head + candidate + last):
                body, n, reduced = candidate, max(n - 1, 2), True
                break
            if time.monotonic() > deadline:
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(body), n * 2)
    return head + body + last


# --- the command line ------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    return report(run(args.calls, seed, progress=not args.quiet))


def run(calls: int, seed: int, progress: bool = False) -> Fuzzer:
    fuzzer = Fuzzer(seed)
    if progress:
        print(f"fuzzing {len(fuzzer.targets)} functions, methods and constructors; "
              f"seed {seed}", file=sys.stderr)
    fuzzer.run(calls, progress=progress)
    return fuzzer


def report(f: Fuzzer, out=sys.stdout) -> int:
    print(f"seed {f.seed}: {f.calls} calls of {len(f.targets)} targets in {f.elapsed:.1f} s "
          f"({f.calls / max(f.elapsed, 1e-9):,.0f}/s); slowest call {f.slowest[0] * 1000:.1f} ms "
          f"of CPU: {f.slowest[1]}", file=out)
    for kind, n in sorted(f.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>9}  {kind}", file=out)
    if not f.defects:
        print("no disallowed outcome", file=out)
        return 0
    print(f"{len(f.defects)} kinds of disallowed outcome:", file=out)
    for (kind, target), found in sorted(f.defects.items()):
        d = found[0]
        print(f"\n* {kind} in {target}: {d.detail}", file=out)
        print("  reproducer (python, from the repository root):", file=out)
        lines = minimize(d)
        if lines[-1].startswith("_(lambda: "):
            lines[-1] = lines[-1][len("_(lambda: "):-1]
        for line in [PRELUDE.splitlines()[1], *lines]:
            print(f"    {line}", file=out)
    return 1


if __name__ == "__main__":
    # Run as a script (make fuzz): the reproducers import tests.fuzz from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())

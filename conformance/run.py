#!/usr/bin/env python3
"""Run the conformance scenarios on real Debian kernels under QEMU (``make conformance``).

Steps, each printed as it happens:

1. tools: ``qemu-system-x86_64``, a static busybox, ``cpio`` and ``gcc``
   (installed with ``apt-get install`` when missing);
2. kernels: the newest Debian package of each series, found with
   ``apt-cache`` and fetched with ``apt-get download`` into the cache
   (``~/.cache/pkeyspec-conformance``, or ``$PKEYSPEC_CONFORMANCE_CACHE``);
   6.1 and 6.12 from the machine's bookworm sources, 7.x from sid through a
   private APT configuration (its own sources list, state and cache
   directories) that leaves the machine's sources alone;
3. build: ``conformance/runner.c`` (``gcc -static``) and an initramfs with
   busybox, the runner and ``conformance/scenarios/*.scn``;
4. boots: every kernel with ``-cpu max`` (PKU) and again with ``-cpu qemu64``
   (no PKU), and the kernels pinned in :data:`PINNED` with ``-cpu qemu64``
   only, two at a time;
5. observations: ``conformance/observations/<uname -r>[-nopku].jsonl``,
   one line of metadata then one line per result, in the runner's
   deterministic order;
6. comparison with the model (:mod:`pkeyspec.conformance`): a table and a
   summary line per kernel.

Usage: ``python conformance/run.py [--no-compare] [--only SERIES...] [--scenario NAME]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "conformance"
SCENARIOS = HERE / "scenarios"
OBSERVATIONS = HERE / "observations"
BUILD = ROOT / "_build" / "conformance"
CACHE = Path(os.environ.get("PKEYSPEC_CONFORMANCE_CACHE",
                            Path.home() / ".cache" / "pkeyspec-conformance"))
MARK = "@@PKS "
SID_SOURCES = ("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
               "http://deb.debian.org/debian sid main\n")

#: The kernel series: the package-name pattern (newest match wins) and where apt finds it.
SERIES = [
    {"series": "6.1", "apt": "system",
     "pattern": r"^linux-image-6\.1\.0-(\d+)-amd64-unsigned$"},
    {"series": "6.12", "apt": "system",
     "pattern": r"^linux-image-6\.12\.(\d+)\+deb\d+-amd64-unsigned$"},
    {"series": "7", "apt": "sid",
     "pattern": r"^linux-binary-7\.(\d+)\.(\d+)\+deb\d+-amd64$"},
]

#: Older kernels booted without PKU only, pinned by package name: the newest Debian kernel of
#: each stable series from before "x86/pkeys: Fix pkey_alloc() return value when pkeys are not
#: supported" (mainline 7.3-rc1; backported to 6.1.188 and 6.12.110). On them the first
#: pkey_alloc of a process without PKU fails with EINVAL and leaves key 0 marked in its map.
PINNED = [
    {"series": "6.1", "apt": "system", "package": "linux-image-6.1.0-53-amd64-unsigned",
     "why": "6.1.187, the last 6.1 before the pkey_alloc fix (6.1.188)"},
    {"series": "6.12", "apt": "system", "package": "linux-image-6.12.107+deb12-amd64-unsigned",
     "why": "6.12.107, the last Debian 6.12 before the pkey_alloc fix (6.12.110)"},
]

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class Failure(Exception):
    """A step that failed: ``main`` prints the message and exits 1, without a traceback."""


def run(cmd, **kw) -> subprocess.CompletedProcess:
    shown = cmd if isinstance(cmd, str) else " ".join(map(str, cmd))
    try:
        return subprocess.run(cmd, check=True, text=True, **kw)
    except FileNotFoundError as e:
        raise Failure(f"{shown}: command not found ({e})") from None
    except subprocess.CalledProcessError as e:
        err = (e.stderr or "").strip().splitlines()
        detail = f": {err[-1]}" if err else ""
        raise Failure(f"'{shown}' failed with exit status {e.returncode}{detail}") from None

#: apt-get waits this long for a lock held by another apt or dpkg before it gives up.
APT_LOCK = ["-o", "DPkg::Lock::Timeout=300"]


# --- tools ---------------------------------------------------------------------------

def ensure_tools() -> None:
    missing = []
    if not shutil.which("qemu-system-x86_64"):
        missing.append("qemu-system-x86")
    if not Path("/bin/busybox").exists() or "statically" not in run(
            ["file", "-L", "/bin/busybox"], capture_output=True).stdout:
        missing.append("busybox-static")
    if not shutil.which("cpio"):
        missing.append("cpio")
    if not shutil.which("gcc"):
        missing.append("gcc")
    if missing:
        say(f"installing {' '.join(missing)} with apt-get")
        run(["apt-get", *APT_LOCK, "update", "-q"], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        run(["apt-get", *APT_LOCK, "install", "-y", "-q", *missing], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
    say("tools: qemu-system-x86_64, busybox (static), cpio, gcc")


# --- apt -------------------------------------------------------------------------------

def sid_env() -> dict:
    """The private APT configuration for sid; created and updated (once a day) on demand."""
    d = CACHE / "apt-sid"
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d",
                "etc/preferences.d"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "etc/sources.list").write_text(SID_SOURCES)
    (d / "state/status").touch()
    conf = d / "apt.conf"
    conf.write_text("".join(f'{k} "{v}";\n' for k, v in [
        ("Dir::State", d / "state"), ("Dir::State::status", d / "state/status"),
        ("Dir::Cache", d / "cache"), ("Dir::Etc::SourceList", d / "etc/sources.list"),
        ("Dir::Etc::SourceParts", d / "etc/sources.list.d"),
        ("Dir::Etc::Preferences", d / "etc/preferences"),
        ("Dir::Etc::PreferencesParts", d / "etc/preferences.d"),
        ("APT::Architecture", "amd64"), ("Acquire::Languages", "none"),
        ("APT::Sandbox::User", "root")]))
    env = dict(os.environ, APT_CONFIG=str(conf))
    lists = list((d / "state/lists").glob("*_Packages*"))
    if not lists or time.time() - max(p.stat().st_mtime for p in lists) > 86400:
        say("apt-get update (private sid configuration)")
        run(["apt-get", *APT_LOCK, "update", "-q"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
    return env


def newest_package(spec: dict, env: dict | None) -> tuple[str, str]:
    """(package name, version) of the newest package matching the series pattern."""
    names = run(["apt-cache", "search", "--names-only", spec["pattern"].replace(r"\d", "[0-9]")],
                capture_output=True, env=env).stdout
    found = []
    for line in names.splitlines():
        name = line.split(" - ")[0].strip()
        m = re.match(spec["pattern"], name)
        if m:
            found.append((tuple(int(g) for g in m.groups()), name))
    if not found:
        raise Failure(f"no package for Linux {spec['series']} (pattern {spec['pattern']}); "
                      "is 'apt-get update' needed?")
    name = max(found)[1]
    return name, package_version(name, env)


def package_version(name: str, env: dict | None) -> str:
    show = run(["apt-cache", "show", "--no-all-versions", name], capture_output=True,
               env=env).stdout
    m = re.search(r"^Version: (.+)$", show, re.M)
    if m is None:
        raise Failure(f"apt-cache knows no package {name}; is 'apt-get update' needed?")
    return m.group(1)


def fetch_kernel(spec: dict) -> dict:
    env = sid_env() if spec["apt"] == "sid" else None
    if "package" in spec:
        name = spec["package"]
        version = package_version(name, env)
    else:
        name, version = newest_package(spec, env)
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = next(iter(sorted(debs.glob(f"{name}_*.deb"))), None)
    if deb is None or version.replace(":", "%3a") not in deb.name:
        say(f"download {name} {version}")
        t = time.monotonic()
        run(["apt-get", *APT_LOCK, "download", "-q", name], cwd=debs, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deb = next(iter(sorted(debs.glob(f"{name}_*.deb"))))
        say(f"  {deb.stat().st_size / 1e6:.0f} MB in {time.monotonic() - t:.1f}s")
    else:
        say(f"cached {deb.name}")
    out = CACHE / "kernels" / deb.stem
    # Only the kernel image is needed (like dpkg -x, restricted to it): /boot/vmlinuz-*
    # up to 6.x, /usr/lib/modules/<abi>/vmlinuz in the split 7.x packages.
    def images():
        return sorted(p for p in out.rglob("vmlinuz*") if p.is_file())
    if not images():
        out.mkdir(parents=True, exist_ok=True)
        run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{out}' --wildcards '*vmlinuz*'",
            shell=True, stderr=subprocess.PIPE)
    vmlinuz = images()
    if not vmlinuz:
        raise Failure(f"{deb.name} has no vmlinuz")
    return {"series": spec["series"], "package": name, "package_version": version,
            "vmlinuz": vmlinuz[0], "pinned": "package" in spec}


# --- build -------------------------------------------------------------------------------

INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
/runner $RUNNER_ARGS
poweroff -f
"""


def build(scenario: str | None) -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    runner = BUILD / "runner"
    say("build runner (gcc -static -pthread)")
    run(["gcc", "-static", "-O2", "-pthread", "-mno-red-zone", "-Wall", "-o", str(runner),
         str(HERE / "runner.c")], stderr=subprocess.PIPE)
    root = BUILD / "initramfs"
    shutil.rmtree(root, ignore_errors=True)
    for d in ("bin", "proc", "sys", "tmp", "dev", "scenarios"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "mount", "poweroff", "cat"):
        (root / "bin" / applet).symlink_to("busybox")
    shutil.copy(runner, root / "runner")
    for scn in sorted(SCENARIOS.glob("*.scn")):
        shutil.copy(scn, root / "scenarios" / scn.name)
    init = root / "init"
    init.write_text(INIT.replace("$RUNNER_ARGS", scenario or ""))
    init.chmod(0o755)
    image = BUILD / "initrd.gz"
    listing = run(["find", ".", "-print0"], cwd=root, capture_output=True).stdout
    cpio = subprocess.run(["cpio", "--null", "-o", "-H", "newc", "--quiet"], cwd=root,
                          input=listing.encode(), capture_output=True, check=True).stdout
    image.write_bytes(gzip.compress(cpio, mtime=0))
    say(f"initramfs: {len(list(SCENARIOS.glob('*.scn')))} scenario files, "
        f"{image.stat().st_size / 1e6:.1f} MB")
    return image


# --- boot ----------------------------------------------------------------------------------

def boot(kernel: dict, initrd: Path, cpu: str, timeout: int = 600) -> dict:
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", cpu, "-m", "512", "-smp", "1",
           "-nographic", "-no-reboot", "-kernel", str(kernel["vmlinuz"]), "-initrd", str(initrd),
           "-append", "console=ttyS0 quiet panic=-1"]
    t = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure(f"boot of {kernel['package']} (-cpu {cpu}) took more than {timeout}s") from None
    took = time.monotonic() - t
    out = proc.stdout.decode(errors="replace")
    meta, results, errors = {}, [], []
    for line in out.splitlines():
        i = line.find(MARK)
        if i < 0:
            continue
        try:
            rec = json.loads(line[i + len(MARK):].strip())
        except json.JSONDecodeError:
            errors.append(line)
            continue
        if "meta" in rec:
            meta[rec["meta"]] = rec["value"]
        elif "error" in rec:
            errors.append(rec["error"])
        else:
            results.append(rec)
    log = BUILD / f"boot-{kernel['package']}-{cpu}.log"
    log.write_text(out)
    if meta.get("done") != "yes":
        raise Failure(f"boot of {kernel['package']} ({cpu}) did not finish; see {log}")
    if errors:
        raise Failure(f"runner errors on {kernel['package']}: {errors[:5]}")
    return {"kernel": kernel, "cpu": cpu, "meta": meta, "results": results, "seconds": took}


def write_observations(b: dict) -> Path:
    k, meta = b["kernel"], b["meta"]
    pku = b["cpu"] != "qemu64"
    name = meta["uname_r"] + ("" if pku else "-nopku")
    path = OBSERVATIONS / f"{name}.jsonl"
    OBSERVATIONS.mkdir(parents=True, exist_ok=True)
    head = {"kernel": meta["uname_r"], "uname_v": meta["uname_v"], "series": k["series"],
            "package": k["package"], "package_version": k["package_version"],
            "qemu_cpu": b["cpu"], "pku": pku, "cpu_pku": meta["cpu_pku"] == "yes",
            "scenarios": int(meta["scenarios"]), "pinned": k["pinned"]}
    lines = [json.dumps(head, sort_keys=True)]
    lines += [json.dumps({"scenario": r["scenario"], "result": r["result"], "value": r["value"]})
              for r in b["results"]]
    path.write_text("\n".join(lines) + "\n")
    return path


def superseded(paths: list[Path]) -> list[Path]:
    """Observation files of an earlier run of the same series and CPU that this run replaced."""
    fresh = {}
    for p in paths:
        head = json.loads(p.read_text().splitlines()[0])
        fresh[p] = (head["series"], head["qemu_cpu"], head.get("pinned", False))
    old = []
    for p in sorted(OBSERVATIONS.glob("*.jsonl")):
        if p in fresh:
            continue
        head = json.loads(p.read_text().splitlines()[0])
        key = (head.get("series"), head.get("qemu_cpu"), head.get("pinned", False))
        if key in fresh.values():
            old.append(p)
    return old


def main(argv=None) -> int:
    try:
        return _main(argv)
    except Failure as e:
        print(f"make conformance: {e}", file=sys.stderr)
        return 1
    except (OSError, subprocess.SubprocessError) as e:
        print(f"make conformance: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make conformance: interrupted", file=sys.stderr)
        return 130


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="kernel series to boot (6.1 6.12 7)")
    ap.add_argument("--scenario", help="run this scenario only (observations are not written)")
    ap.add_argument("--no-nopku", action="store_true",
                    help="skip the no-PKU boots (the controls and the pinned kernels)")
    ap.add_argument("--no-compare", action="store_true", help="do not compare with the model")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="boots in parallel (default 2)")
    args = ap.parse_args(argv)

    ensure_tools()
    series = [s for s in SERIES if not args.only or s["series"] in args.only]
    pinned = [] if args.no_nopku else [s for s in PINNED if not args.only or s["series"] in args.only]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(series) + len(pinned)) as pool:
        kernels = list(pool.map(fetch_kernel, series))
        old_kernels = list(pool.map(fetch_kernel, pinned))
    for k in kernels:
        say(f"kernel {k['series']}: {k['package']} {k['package_version']} ({k['vmlinuz'].name})")
    for k, spec in zip(old_kernels, pinned):
        say(f"kernel {k['series']} (pinned, no PKU only: {spec['why']}): {k['package']} "
            f"{k['package_version']}")
    initrd = build(args.scenario)
    jobs = [(k, "max") for k in kernels]
    if not args.no_nopku:
        jobs += [(k, "qemu64") for k in kernels + old_kernels]
    boots = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(boot, k, initrd, cpu): (k, cpu) for k, cpu in jobs}
        for f in concurrent.futures.as_completed(futures):
            b = f.result()
            boots.append(b)
            say(f"boot {b['meta']['uname_r']} -cpu {b['cpu']}: {b['meta']['scenarios']} scenarios, "
                f"{len(b['results'])} results in {b['seconds']:.1f}s")
    boots.sort(key=lambda b: jobs.index((b["kernel"], b["cpu"])))
    if args.scenario:
        for b in boots:
            for r in b["results"]:
                print(f"{b['meta']['uname_r']:24} {b['cpu']:7} {r['result']:28} {r['value']}")
        return 0
    paths = [write_observations(b) for b in boots]
    for p in paths:
        say(f"wrote {p.relative_to(ROOT)}")
    for p in superseded(paths):
        say(f"superseded by this run (remove it with git rm): {p.relative_to(ROOT)}")
    if args.no_compare:
        return 0
    sys.path.insert(0, str(ROOT))
    from pkeyspec import conformance
    report = conformance.compare_files(paths)
    print(conformance.format_table(report, disagreements_only=False))
    print(conformance.format_summary(report))
    return 0 if all(k.disagree == 0 for k in report.kernels) else 1


if __name__ == "__main__":
    sys.exit(main())

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
4. boots: every kernel with ``-cpu max`` (PKU), and the newest one with
   ``-cpu qemu64`` (no PKU), two at a time;
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

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, **kw)


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
        run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
        run(["apt-get", "install", "-y", "-q", *missing], stdout=subprocess.DEVNULL)
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
        run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
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
        raise SystemExit(f"no package for Linux {spec['series']} (pattern {spec['pattern']})")
    name = max(found)[1]
    show = run(["apt-cache", "show", "--no-all-versions", name], capture_output=True,
               env=env).stdout
    version = re.search(r"^Version: (.+)$", show, re.M).group(1)
    return name, version


def fetch_kernel(spec: dict) -> dict:
    env = sid_env() if spec["apt"] == "sid" else None
    name, version = newest_package(spec, env)
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = next(iter(sorted(debs.glob(f"{name}_*.deb"))), None)
    if deb is None or version.replace(":", "%3a") not in deb.name:
        say(f"download {name} {version}")
        t = time.monotonic()
        run(["apt-get", "download", "-q", name], cwd=debs, env=env, stdout=subprocess.DEVNULL)
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
        subprocess.run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{out}' --wildcards '*vmlinuz*'",
                       shell=True, check=True)
    vmlinuz = images()
    return {"series": spec["series"], "package": name, "package_version": version,
            "vmlinuz": vmlinuz[0]}


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
         str(HERE / "runner.c")])
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
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
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
    log = BUILD / f"boot-{kernel['series']}-{cpu}.log"
    log.write_text(out)
    if meta.get("done") != "yes":
        raise SystemExit(f"boot of {kernel['package']} ({cpu}) did not finish; see {log}")
    if errors:
        raise SystemExit(f"runner errors on {kernel['package']}: {errors[:5]}")
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
            "scenarios": int(meta["scenarios"])}
    lines = [json.dumps(head, sort_keys=True)]
    lines += [json.dumps({"scenario": r["scenario"], "result": r["result"], "value": r["value"]})
              for r in b["results"]]
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="kernel series to boot (6.1 6.12 7)")
    ap.add_argument("--scenario", help="run this scenario only (observations are not written)")
    ap.add_argument("--no-nopku", action="store_true", help="skip the no-PKU control boot")
    ap.add_argument("--no-compare", action="store_true", help="do not compare with the model")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="boots in parallel (default 2)")
    args = ap.parse_args(argv)

    ensure_tools()
    series = [s for s in SERIES if not args.only or s["series"] in args.only]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(series)) as pool:
        kernels = list(pool.map(fetch_kernel, series))
    for k in kernels:
        say(f"kernel {k['series']}: {k['package']} {k['package_version']} ({k['vmlinuz'].name})")
    initrd = build(args.scenario)
    jobs = [(k, "max") for k in kernels]
    if not args.no_nopku and (not args.only or "7" in args.only):
        jobs.append((kernels[-1], "qemu64"))
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

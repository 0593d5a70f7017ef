#!/usr/bin/env python3
"""Fetch the kernel and glibc sources the site cites (``make sources``).

Steps, each printed as it happens:

1. versions: the kernel series and the exact releases the ``{kernel}`` role
   cites (``KERNEL_VERSIONS`` in ``pkeyspec/sphinxext/kernel.py``, the one
   place they are written), and the glibc release of the ``{glibc}`` role;
2. packages: Debian's ``linux-source-<series>`` at that release, looked up with
   ``apt-cache madison`` in the machine's APT sources (6.1 and 6.12 are in
   bookworm and bookworm-security) and then in the private sid configuration
   of ``conformance/run.py`` (7.x), and ``glibc-source``; each is fetched once
   with ``apt-get download`` into the cache (``~/.cache/pkeyspec-conformance``
   or ``$PKEYSPEC_CONFORMANCE_CACHE``, next to the kernels);
3. extraction: the tarball under ``/usr/src`` in each package, unpacked whole
   into ``<cache>/sources/linux-<release>/`` and ``<cache>/sources/glibc-<release>/``;
4. manifest: ``<cache>/sources/manifest.json`` records, per cited version, the
   package, its exact Debian version and the tree; ``tests/test_citations.py``
   reads it and checks every citation against those trees.

A release that the archive no longer carries is an error that says so: the
table in ``pkeyspec/sphinxext/kernel.py`` then needs the new release, and the
citations a new check.

Usage: ``python conformance/sources.py [--no-glibc]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

# conformance/run.py: the cache directory, the private sid APT configuration, say().
from run import CACHE, ROOT, say, sid_env

sys.path.insert(0, str(ROOT))
from pkeyspec.sphinxext.kernel import GLIBC_VERSIONS, KERNEL_VERSIONS  # noqa: E402

SOURCES = CACHE / "sources"
MANIFEST = SOURCES / "manifest.json"
DEBS = CACHE / "debs"
APT_LOCK = ["-o", "DPkg::Lock::Timeout=120"]


class Failure(Exception):
    """One clear message for the user; main() prints it instead of a traceback."""


def sh(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> str:
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, env=env,
                              cwd=cwd).stdout
    except FileNotFoundError:
        raise Failure(f"{cmd[0]} is not installed") from None
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or e.stdout or "").strip().splitlines()
        raise Failure(f"`{' '.join(cmd)}` failed (exit {e.returncode})"
                      + (f": {detail[-1]}" if detail else "")) from None


def madison(package: str, env: dict | None) -> list[str]:
    """The Debian versions of ``package`` that APT knows, newest first."""
    out = sh(["apt-cache", "madison", package], env=env)
    versions = [line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2]
    return list(dict.fromkeys(versions))


def upstream(debian_version: str) -> str:
    """``6.12.118-1~deb12u1`` -> ``6.12.118``; ``2.36-9+deb12u14`` -> ``2.36``."""
    return debian_version.split(":")[-1].rsplit("-", 1)[0]


def find(package: str, release: str) -> tuple[str, dict | None]:
    """(Debian version, APT environment) of ``package`` at the upstream ``release``.

    The machine's APT first, then the private sid configuration, then the
    machine's APT again after ``apt-get update`` (its lists may be missing).
    """
    seen: list[str] = []
    for where in ("system", "sid", "system, updated"):
        if where == "sid":
            env = sid_env()
        else:
            env = None
            if where == "system, updated":
                say("  apt-get update (the machine's APT sources)")
                sh(["apt-get", "update", "-q", *APT_LOCK])
        versions = madison(package, env)
        matches = [v for v in versions if upstream(v) == release]
        if matches:
            say(f"  found {package} {matches[0]} ({'private sid APT' if env else 'machine APT'})")
            return matches[0], env
        seen.extend(versions)
    have = ", ".join(dict.fromkeys(upstream(v) for v in seen)) or "none"
    raise Failure(f"{package} {release} is not in the archive (it has: {have}). "
                  f"Put the release the archive has into pkeyspec/sphinxext/kernel.py, "
                  f"then run `make sources` and the citation check again.")


def cached(package: str, release: str) -> Path | None:
    """The .deb of ``package`` at ``release`` fetched before, if any (no APT look-up then)."""
    debs = sorted(DEBS.glob(f"{package}_{release}-*_all.deb"))
    return debs[-1] if debs else None


def download(package: str, version: str, env: dict | None) -> Path:
    DEBS.mkdir(parents=True, exist_ok=True)
    deb = DEBS / f"{package}_{version.replace(':', '%3a')}_all.deb"
    say(f"  apt-get download {package}={version}")
    t = time.monotonic()
    tmp = DEBS / f".download-{package}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    sh(["apt-get", "download", "-q", *APT_LOCK, f"{package}={version}"], env=env, cwd=tmp)
    got = list(tmp.glob("*.deb"))
    if len(got) != 1:
        raise Failure(f"apt-get download {package}={version} left {len(got)} files in {tmp}")
    got[0].rename(deb)
    tmp.rmdir()
    say(f"  {deb.stat().st_size / 1e6:.0f} MB in {time.monotonic() - t:.1f}s")
    return deb


def extract(deb: Path, member_glob: str, dest: Path, stamp: str) -> Path:
    """Unpack the tarball ``member_glob`` under /usr/src of ``deb`` into ``dest``, once."""
    done = dest / ".pkeyspec-source"
    if done.exists() and done.read_text() == stamp:
        say(f"  extracted already: {dest}")
        return dest
    listing = sh(["dpkg-deb", "--contents", str(deb)])
    members = [line.split()[-1] for line in listing.splitlines()
               if Path(line.split()[-1]).match(member_glob)]
    if len(members) != 1:
        raise Failure(f"{deb.name} has {len(members)} files like /usr/src/{member_glob}, not one")
    say(f"  extract {members[0]} into {dest}")
    t = time.monotonic()
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pipeline = (f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO '{members[0]}' "
                f"| tar -xJ -C '{tmp}' --strip-components=1 --no-same-owner")
    proc = subprocess.run(pipeline, shell=True, text=True, capture_output=True,
                          executable="/bin/bash")
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Failure(f"extracting {members[0]} from {deb.name} failed: "
                      f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    (tmp / ".pkeyspec-source").write_text(stamp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    say(f"  {sum(1 for _ in dest.rglob('*'))} files in {time.monotonic() - t:.1f}s")
    return dest


def fetch(kind: str, series: str, release: str, package: str, member_glob: str) -> dict:
    say(f"{kind} {series}: {package} at {release}")
    deb = cached(package, release)
    if deb is not None:
        version = deb.name.split("_")[1].replace("%3a", ":")
        say(f"  cached {deb.name}")
    else:
        version, env = find(package, release)
        deb = download(package, version, env)
    tree = extract(deb, member_glob, SOURCES / f"{kind}-{release}", f"{package} {version}\n")
    return {"series": series, "release": release, "package": package,
            "package_version": version, "deb": str(deb), "tree": str(tree)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-glibc", action="store_true", help="fetch the kernel sources only")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        for tool in ("apt-get", "apt-cache", "dpkg-deb", "tar", "xz"):
            if not shutil.which(tool):
                raise Failure(f"{tool} is not installed (make sources needs Debian's APT and xz-utils)")
        say("versions: " + ", ".join(f"Linux {s} = {v}" for s, v in KERNEL_VERSIONS.items())
            + "; " + ", ".join(f"glibc {v}" for v in GLIBC_VERSIONS.values()))
        SOURCES.mkdir(parents=True, exist_ok=True)
        manifest = {"linux": {}, "glibc": {}}
        for series, release in KERNEL_VERSIONS.items():
            manifest["linux"][series] = fetch("linux", series, release, f"linux-source-{series}",
                                              f"usr/src/linux-source-{series}.tar.*")
        if not args.no_glibc:
            for series, release in GLIBC_VERSIONS.items():
                manifest["glibc"][series] = fetch("glibc", series, release, "glibc-source",
                                                  f"usr/src/glibc/glibc-{release}.tar.*")
        MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        used = sh(["du", "-sh", str(SOURCES)]).split()[0]
        say(f"wrote {MANIFEST}")
        say(f"sources: {used}B in {SOURCES} (the .debs in {DEBS}); "
            f"done in {time.monotonic() - t0:.0f}s. The citation check "
            f"(tests/test_citations.py) runs in `make test`.")
    except subprocess.CalledProcessError as e:  # from run.sid_env()
        print(f"make sources: `{' '.join(map(str, e.cmd))}` failed (exit {e.returncode})",
              file=sys.stderr)
        return 1
    except Failure as e:
        print(f"make sources: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a cache directory we may not write
        print(f"make sources: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make sources: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

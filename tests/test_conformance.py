"""The model against the committed real-kernel observations (``conformance/``).

``make conformance`` boots Debian kernels under QEMU and writes
``conformance/observations/*.jsonl``; these tests run offline. For every
observation file and every scenario that kernel ran, the model's results
must equal the observed ones, result by result. A disagreement is fixed in
the model, never in the observations.

The second half tests the scenario parser: malformed input is refused
with ``file:line``.
"""

import importlib.util
import re
from pathlib import Path

import pytest

from pkeyspec import conformance as conf

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = conf.load_scenarios()
OBSERVATIONS = [conf.load_observation(p) for p in conf.observation_files()]


def _cases():
    for obs in OBSERVATIONS:
        for sc in SCENARIOS:
            if sc.runs_on(obs.meta["pku"]):
                yield pytest.param(obs, sc, id=f"{obs.path.stem}::{sc.name}")


def test_there_are_observations():
    assert OBSERVATIONS, "no conformance/observations/*.jsonl: run `make conformance`"
    assert any(not o.meta["pku"] for o in OBSERVATIONS), "no no-PKU control run"


def _run_py():
    spec = importlib.util.spec_from_file_location("conformance_run", ROOT / "conformance" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN = _run_py()
#: What the README promises: each series with and without PKU, and the pinned pre-fix kernels
#: without PKU. (series, PKU, pinned package or None)
PROMISED = [(s["series"], pku, None) for pku in (True, False) for s in RUN.SERIES] + \
    [(s["series"], False, s["package"]) for s in RUN.PINNED]


def _expected_results(obs) -> int:
    """At least one result per scenario ("end"), and every result the model names."""
    return sum(len(conf.run_model(sc, obs.model_kernel, obs.meta["pku"]))
               for sc in SCENARIOS if sc.runs_on(obs.meta["pku"]))


@pytest.mark.parametrize(("series", "pku", "package"), PROMISED,
                         ids=[f"{s}-{'pku' if p else 'nopku'}{'-' + k if k else ''}"
                              for s, p, k in PROMISED])
def test_every_promised_kernel_was_observed(series, pku, package):
    """One observation file per promised (kernel, CPU), with all its results.

    Deleting a file, or committing a truncated one, fails here.
    """
    found = [o for o in OBSERVATIONS if o.meta["series"] == series and o.meta["pku"] == pku
             and (o.meta["package"] == package if package
                  else not o.meta.get("pinned", False))]
    what = f"Linux {series} {'with' if pku else 'without'} PKU" + (f" ({package})" if package else "")
    assert len(found) == 1, f"{what}: {len(found)} observation files, expected 1"
    obs = found[0]
    results = sum(len(r) for r in obs.results.values())
    assert results >= _expected_results(obs), f"{obs.path.name}: only {results} results"


def test_pinned_kernels_are_before_the_pkey_alloc_fix():
    """The pinned kernels are there to observe the first pkey_alloc without PKU before the fix."""
    from pkeyspec import System, keys
    for spec in RUN.PINNED:
        obs = next(o for o in OBSERVATIONS if o.meta["package"] == spec["package"])
        assert not keys.mm_pkey_alloc_checks_enabled(System(kernel=obs.model_kernel, pku=False))
        first = obs.results["z_first_call_alloc_without_pku"]["first"]
        assert first == "EINVAL", (obs.path.name, first)


@pytest.mark.parametrize(("obs", "scenario"), list(_cases()))
def test_model_agrees_with_kernel(obs, scenario):
    """Every result the kernel reported, and no other, with the same value."""
    observed = obs.results.get(scenario.name)
    assert observed is not None, (
        f"{scenario.file}:{scenario.line}: {scenario.name} was not run on {obs.label}; "
        "the observations are stale: run `make conformance`")
    model = conf.run_model(scenario, obs.model_kernel, obs.meta["pku"])
    diffs = [f"  {name}: kernel {observed.get(name)!r}, model {model.get(name)!r}"
             for name in list(observed) + [n for n in model if n not in observed]
             if observed.get(name) != model.get(name)]
    assert not diffs, (f"{scenario.file}:{scenario.line}: {scenario.name} on {obs.label} "
                       f"(model Linux {obs.model_kernel}):\n" + "\n".join(diffs))


def test_observations_name_known_scenarios():
    names = {sc.name for sc in SCENARIOS}
    for obs in OBSERVATIONS:
        unknown = set(obs.results) - names
        assert not unknown, f"{obs.path.name}: scenarios no file defines: {sorted(unknown)}"


def test_observation_metadata():
    for obs in OBSERVATIONS:
        meta = obs.meta
        assert meta["package"].startswith(("linux-image-", "linux-binary-"))
        assert obs.model_kernel.startswith(meta["series"] + ".")
        assert obs.path.stem == meta["kernel"] + ("" if meta["pku"] else "-nopku")
        assert meta["cpu_pku"] == meta["pku"]
        assert meta["scenarios"] == sum(sc.runs_on(meta["pku"]) for sc in SCENARIOS)


def test_results_never_hold_raw_addresses():
    """Addresses differ between runs (ASLR): only relative forms such as ``$p+0x10``."""
    for obs in OBSERVATIONS:
        for scenario, results in obs.results.items():
            for name, value in results.items():
                assert not re.fullmatch(r"0x[0-9a-f]{9,}", value), (obs.path.name, scenario, name)


# --- the runner and the parser know the same language --------------------------------

RUNNER = (ROOT / "conformance" / "runner.c").read_text()


def test_runner_knows_every_operation():
    ops = set(re.findall(r'!strcmp\(op, "([a-z_]+)"\)', RUNNER))
    assert ops == set(conf.OPS)


def test_runner_knows_the_same_constants():
    consts = dict(re.findall(r'\{"([A-Z_0-9]+)", \(?(?:int64_t\))?(0x[0-9a-fA-F]+|\d+)\)?\}', RUNNER))
    assert {k: int(v, 0) for k, v in consts.items()} == conf.CONSTANTS


def test_runner_knows_every_handler_option():
    keys = set(re.findall(r'KEY\("([a-z_0-9]+)"\)', RUNNER))
    assert keys == conf.HANDLER_FLAGS | conf.HANDLER_VALUES


# --- the parser -----------------------------------------------------------------------

GOOD = """\
# a comment
scenario s1
doc Text with many words, more than twelve of them, so the token limit does not apply here.
rows a b
facts SYS-ALLOC-LOWEST
_p = mmap 0 PAGE RW MAP_PRIVATE|MAP_ANONYMOUS   # trailing comment
k = pkey_alloc 0 AD|WD
t = thread
@t v = load $_p+0x10 4
handler h si_code addr=_p frame_clear=$k exit=17
sigaction SIGSEGV h SA_ONSTACK
pp = pipe
w = write $pp.w $_p 8

scenario s2
only nopku
first = pkey_alloc 0 0
"""


def test_parse_good_file():
    s1, s2 = conf.parse_text(GOOD, "good.scn")
    assert (s1.name, s1.line, s1.rows, s1.facts) == ("s1", 2, ["a", "b"], ["SYS-ALLOC-LOWEST"])
    assert [o.op for o in s1.ops] == ["mmap", "pkey_alloc", "thread", "load", "handler",
                                     "sigaction", "pipe", "write"]
    load = s1.ops[3]
    assert (load.sel, load.name, load.args, load.line) == ("t", "v", ["$_p+0x10", "4"], 9)
    assert s2.only == "nopku" and s2.runs_on(False) and not s2.runs_on(True)
    assert s1.runs_on(True) and s1.runs_on(False)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("k = pkey_alloc 0 0\n", 1, "expected 'scenario NAME'"),
    ("scenario s\nk = pkey_alocc 0 0\n", 2, "unknown operation 'pkey_alocc'"),
    ("scenario s\nk = pkey_alloc 0\n", 2, "pkey_alloc takes 2 arguments, not 1"),
    ("scenario s\n\n\nv = load $nothing\n", 4, "$nothing is not defined before this line"),
    ("scenario s\nv = load PAGES\n", 2, "unknown name 'PAGES'"),
    ("scenario s\nv = load 0x1g\n", 2, "bad number '0x1g'"),
    ("scenario s\nv = load 1+\n", 2, "empty term"),
    ("scenario s\n@t v = rdpkru\n", 2, "unknown thread or process @t"),
    ("scenario s\nthread\n", 2, "thread needs a name"),
    ("scenario s\nt = thread\n@t c = fork\n", 3, "fork runs in the main thread only"),
    ("scenario s\nhandler h bogus\n", 2, "unknown handler option 'bogus'"),
    ("scenario s\nhandler h addr=q\n", 2, "addr=q: $q is not defined"),
    ("scenario s\nsigaction SIGSEGV h\n", 2, "unknown handler 'h'"),
    ("scenario s\nonly sometimes\n", 2, "expected 'only pku' or 'only nopku'"),
    ("scenario s\nend = rdpkru\n", 2, "'end' is reserved"),
    ("scenario s\nx = smaps_pkey_of heap\n", 2, "smaps_pkey_of takes one of stack, text"),
    ("scenario s\nk =\n", 2, "missing operation"),
    ("scenario s\nscenario s\n", 2, "scenario s defined twice"),
    ("scenario\n", 1, "expected 'scenario NAME'"),
    ("scenario s\nx = wait nobody\n", 2, "unknown process nobody"),
])
def test_parse_errors_name_file_and_line(text, line, message):
    with pytest.raises(conf.ScenarioError) as exc:
        conf.parse_text(text, "bad.scn")
    assert str(exc.value).startswith(f"bad.scn:{line}: ")
    assert message in str(exc.value)


def test_every_scenario_file_parses_and_names_are_unique():
    names = [sc.name for sc in SCENARIOS]
    assert len(names) == len(set(names))
    assert all(sc.doc and sc.rows for sc in SCENARIOS), "every scenario has doc and rows"


def test_model_executor_does_not_read_observations(monkeypatch, tmp_path):
    """run_model depends on the scenario and the kernel only."""
    sc = SCENARIOS[0]
    before = conf.run_model(sc, "7.2", True)
    monkeypatch.setattr(conf, "OBSERVATION_DIR", tmp_path)
    assert conf.run_model(sc, "7.2", True) == before

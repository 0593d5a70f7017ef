"""The ``pkeyspec`` command line (pkeyspec/cli.py): output and exit statuses.

Most tests call ``main([...])`` in-process; one runs ``python -m pkeyspec``.
Exit statuses: 0 ok, 1 mismatch or incomplete, 2 bad input, 130 interrupted.
"""

import io
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from pkeyspec import cli
from pkeyspec.cli import Progress, load_races, main, replay
from pkeyspec.explore import LimitReached
from pkeyspec.races import Race, World, catalogue, local
from pkeyspec.system import System

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "data" / "rekey_races.py"
RFC = ["MP+rfcget+freealloc", "MP+rfcget+alloc", "2+2W+pkeyset+pkeyset",
       "2+2W+sharedreg+sharedreg", "MP+writeonce+readonce", "MP+splitstores+readonce"]


def run(capsys, *argv):
    """main(argv) -> (status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def write(tmp_path, text, name="races.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# A race file header the tmp_path files share.
HEADER = """\
from pkeyspec.races import Race, World, local
from pkeyspec.system import System

def setup():
    return World(System(), {}, x=0)

def inc(name):
    return local(f"x = x + 1 ({name})", lambda w: w.v.__setitem__("x", w.v["x"] + 1),
                 reads=("x",), writes=("x",))
"""


# --- races list / check / show ---------------------------------------------------------


def test_list_is_a_table_of_the_catalogue(capsys):
    status, out, _ = run(capsys, "races", "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "family", "result", "facts"]
    row = next(line for line in lines if line.startswith("MP+rfcget+freealloc "))
    assert row.split()[1:3] == ["rfc", "Sometimes"]
    assert "RACE-RFC-GET-STAT, RFC-STAT-ANALOGY, RFC-LOCKLESS" in row
    assert lines[-1] == f"{len(catalogue())} races"


@pytest.mark.parametrize("stateful", [False, True])
def test_check_prints_observation_lines(capsys, stateful):
    extra = ["--stateful"] if stateful else []
    status, out, _ = run(capsys, "races", "check", *RFC, *extra)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["Observation", "MP+rfcget+freealloc", "Sometimes", "1", "1", "ok"]
    assert lines[2].split() == ["Observation", "2+2W+pkeyset+pkeyset", "Never", "0", "1", "ok"]
    assert lines[-1] == "6 races: 6 ok, 0 mismatch, 0 incomplete"


def test_check_all_by_default_and_mismatch_exits_1(capsys, monkeypatch):
    wrong = Race(**{**catalogue()["MP+writeonce+readonce"].__dict__,
                    "name": "MP+writeonce+readonce+wrong", "result": "Always"})
    small = {"MP+writeonce+readonce": catalogue()["MP+writeonce+readonce"], wrong.name: wrong}
    monkeypatch.setattr(cli, "catalogue", lambda: small)
    status, out, _ = run(capsys, "races", "check")
    assert status == 1
    assert "Observation MP+writeonce+readonce Never 0 2" in out
    assert out.splitlines()[1].split()[2:] == ["Never", "0", "2", "MISMATCH", "(stated", "Always)"]
    assert out.splitlines()[-1] == "2 races: 1 ok, 1 mismatch, 0 incomplete"


def test_check_incomplete_exits_1(capsys):
    status, out, _ = run(capsys, "races", "check", "MP+rfcget+freealloc", "--max-executions", "1")
    assert status == 1
    assert "INCOMPLETE (--max-executions reached; so far" in out
    assert out.splitlines()[-1] == "1 races: 0 ok, 0 mismatch, 1 incomplete"


def test_show_has_threads_verdicts_finals_and_witnesses(capsys):
    status, out, _ = run(capsys, "races", "show", "MP+rfcget+freealloc")
    assert status == 0
    assert "A asks the RFC's pkey_get" in out
    # Threads side by side: a header row with both names, then step labels in columns.
    assert any(line.split() == ["A", "|", "B"] for line in out.splitlines())
    assert any("| pkey_free(k)" in line for line in out.splitlines())
    assert "exists: A's pkey_get(k) succeeds and B's new key k2 is k" in out
    assert "Stated result:   Sometimes" in out
    assert "Computed result: Sometimes  ok" in out
    assert "Observation MP+rfcget+freealloc Sometimes 1 1" in out
    assert "  * get=0; k2=1\n    get=EBADF; k2=1\n" in out
    assert "Witness (exists holds): get=0; k2=1\n  replay: A A B B\n" \
           "    1. A: pkey_get(k, 0): READ_ONCE(map) says k is allocated\n" in out


def test_show_witnesses_replay_to_their_final_state(capsys):
    race = catalogue()["MP+rfcget+freealloc"]
    obs = race.explore()
    program = race.program()
    for final, (ok, schedule) in obs.finals.items():
        world = replay(race, cli.schedule_text(race, schedule))
        assert program.outcome(world) == (ok, final)
        assert replay(race, schedule).v == world.v  # (thread, step) pairs work too


def test_show_replay_step_by_step(capsys):
    status, out, _ = run(capsys, "races", "show", "MP+rfcget+freealloc", "--replay", "A,A,B,B")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "Replay of MP+rfcget+freealloc: A A B B"
    assert lines[1].split()[-1] == "seen=True"
    assert lines[4].endswith("k2=1")
    assert lines[-2:] == ["Final state: get=0; k2=1",
                          "exists (A's pkey_get(k) succeeds and B's new key k2 is k): yes"]


def test_show_replay_of_a_prefix(capsys):
    status, out, _ = run(capsys, "races", "show", "MP+rfcget+freealloc", "--replay", "B")
    assert status == 0
    assert "(not finished: A, B;" in out


def test_threads_side_by_side_fit_the_width():
    long = "x" * 30 + " " + "y" * 30 + " " + "z" * 30
    race = Race(name="wide", question="?", setup=lambda: World(System(), {}),
                threads={"A": (local(long, lambda w: None),), "B": (local("short", lambda w: None),),
                         "C": (local(long, lambda w: None),)},
                exists=lambda w: False, exists_text="-", result="Never", facts=(), observe=())
    text = cli.threads_side_by_side(race, width=80)
    lines = text.splitlines()
    assert lines[0].split() == ["A", "|", "B", "|", "C"]
    assert all(len(line) <= 80 for line in lines)
    assert "short" in lines[2] and lines[3].strip().startswith("y")   # wrapped, not cut
    assert "z" * 30 in text


# --- races explore FILE ------------------------------------------------------------------


def test_explore_the_example_file(capsys):
    status, out, err = run(capsys, "races", "explore", str(EXAMPLE))
    assert status == 0, err
    assert "Observation 2W+pkeymprotect+pkeymprotect Sometimes 1 1" in out
    assert "Observation 2W+pkeymprotect+pkeymprotect+neither Never 0 2" in out
    assert "Witness (exists holds): key=1\n  replay: B A\n" in out
    assert err == ""


def test_explore_one_race_of_a_file_and_replay(capsys):
    status, out, _ = run(capsys, "races", "explore", str(EXAMPLE),
                         "--race", "2W+pkeymprotect+pkeymprotect", "--replay", "B A")
    assert status == 0
    assert out.splitlines()[-1] == "exists (buf ends with A's key k1): yes"
    assert "Final state: key=1" in out


def test_explore_stateful_agrees(capsys):
    status, out, _ = run(capsys, "races", "explore", str(EXAMPLE), "--stateful")
    assert status == 0
    assert "(stateful, each state once)" in out
    assert "Observation 2W+pkeymprotect+pkeymprotect Sometimes 1 1" in out


def test_load_races_keeps_definition_order():
    names = [r.name for r in load_races(EXAMPLE)]
    assert names == ["2W+pkeymprotect+pkeymprotect", "2W+pkeymprotect+pkeymprotect+neither"]


def test_explore_a_RACES_list_and_a_mismatch(capsys, tmp_path):
    path = write(tmp_path, HEADER + """
        R1 = Race(name="2W+inc+inc", question="Lost update?", setup=setup,
                  threads={"A": (inc("A"),), "B": (inc("B"),)},
                  exists=lambda w: w.v["x"] != 2, exists_text="x != 2", result="Sometimes",
                  facts=(), observe=("x",))
        unused = R1
        RACES = [R1]
        """.replace("\n        ", "\n"))
    status, out, _ = run(capsys, "races", "explore", path)
    assert status == 1
    assert "Computed result: Never  MISMATCH (stated Sometimes)" in out
    assert out.count("Observation 2W+inc+inc Never 0 1") == 1


def test_explore_limits_and_progress(capsys, tmp_path):
    # 3 threads x 3 conflicting steps: 1,680 executions; both explorers take both limits.
    path = write(tmp_path, HEADER + """
        BIG = Race(name="3x3", question="?", setup=setup,
                   threads={t: (inc(t + "1"), inc(t + "2"), inc(t + "3")) for t in "ABC"},
                   exists=lambda w: w.v["x"] != 9, exists_text="x != 9", result="Never",
                   facts=(), observe=("x",))
        """.replace("\n        ", "\n"))
    status, out, _ = run(capsys, "races", "explore", path, "--max-states", "10")
    assert status == 1
    assert "INCOMPLETE (--max-states reached; so far Never)" in out
    assert "Explored: 1 executions" in out or "Explored: 1 execution" in out
    status, out, _ = run(capsys, "races", "explore", path, "--stateful", "--max-states", "10")
    assert status == 1 and "Explored: " in out and "11 states" in out
    status, out, _ = run(capsys, "races", "explore", path, "--max-executions", "1000000")
    assert status == 0 and "Explored: 1,680 executions" in out


def test_progress_line_and_limits():
    stream = io.StringIO()
    progress = Progress("r", stream, interval=0.5)
    progress(10, 1, 0.1)                  # too early: nothing
    assert stream.getvalue() == ""
    progress(20_000, 1_000, 2.0)
    assert stream.getvalue() == ("r: 20,000 states, 1,000 executions, 10,000 states/s, 2.0 s "
                                 "(Ctrl-C stops and shows what was found)\n")
    progress(20_001, 1_000, 2.1)          # within 0.5 s of the last line: nothing
    assert stream.getvalue().count("\n") == 1
    with pytest.raises(LimitReached):
        Progress("r", None, max_states=5)(6, 0, 0.0)
    with pytest.raises(LimitReached):
        Progress("r", None, max_executions=5)(1, 5, 0.0)


def test_ctrl_c_prints_what_was_found(capsys, tmp_path):
    # The fourth step raises KeyboardInterrupt, as Ctrl-C would; the explorer
    # returns what it found so far.
    path = write(tmp_path, HEADER + """
        calls = []
        def maybe_interrupt(w):
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt
            w.v["x"] += 1
        STEP = local("x += 1", maybe_interrupt, reads=("x",), writes=("x",))
        R = Race(name="interrupted", question="?", setup=setup,
                 threads={"A": (STEP, STEP), "B": (STEP,)},
                 exists=lambda w: w.v["x"] != 3, exists_text="x != 3", result="Never",
                 facts=(), observe=("x",))
        """.replace("\n        ", "\n"))
    status, out, _ = run(capsys, "races", "explore", path)
    assert status == 130
    assert "INCOMPLETE (interrupted; so far Never)" in out
    assert "Final states (1; * = exists holds):\n    x=3" in out


# --- decoding ---------------------------------------------------------------------------------


def test_pkru_decode(capsys):
    status, out, _ = run(capsys, "pkru", "decode", "0x55555558")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "PKRU 0x55555558"
    assert lines[1].split() == ["key", "AD", "WD", "read", "write"]
    assert lines[2].split() == ["0", "-", "-", "yes", "yes"]
    assert lines[3].split() == ["1", "-", "WD", "yes", "no"]
    assert lines[4].split() == ["2", "AD", "-", "no", "no"]
    assert lines[-1] == "readable: 0 1; writable: 0"
    status, out, _ = run(capsys, "pkru", "decode", str(0x55555554))
    assert out.splitlines()[0] == "PKRU 0x55555554 (Linux's default init_pkru: only key 0 open)"


def test_fault_decode(capsys):
    status, out, _ = run(capsys, "fault", "decode", "0x25")
    assert status == 0
    assert out.splitlines()[0] == "error code 0x25 = PROT|USER|PK"
    assert out.splitlines()[-1] == "meaning: a read of a present page blocked by its protection key"
    table = {line.split()[1]: line.split()[2] for line in out.splitlines()[2:8]}
    assert table == {"PROT": "1", "WRITE": "0", "USER": "1", "RSVD": "0", "INSTR": "0", "PK": "1"}


@pytest.mark.parametrize("err, si_code, lines", [
    ("0x25", "4", ["si_code 4 = SEGV_PKUERR",
                   "meaning: a read of a present page blocked by its protection key"]),
    ("0x7", "2", ["si_code 2 = SEGV_ACCERR", "meaning: a write to a present page that its "
                  "page protections forbid (e.g. a read-only page)"]),
    ("0x4", "1", ["si_code 1 = SEGV_MAPERR", "meaning: a read of an address with no mapping"]),
    ("0x6", "4", ["si_code 4 = SEGV_PKUERR", "meaning: a write to a page not yet present, "
                  "refused by its mapping's key (Linux's software check)"]),
    ("0x25", "2", ["meaning: a read of a present page blocked by its protection key",
                   "note: Linux sends SEGV_PKUERR for this error code, not SEGV_ACCERR"]),
    ("0x24", None, ["meaning: not a combination the CPU reports: PK is set only for a present page"]),
    ("0x35", None, ["meaning: not a combination the CPU reports: keys never block an instruction fetch"]),
])
def test_fault_decode_with_si_code(capsys, err, si_code, lines):
    argv = ["fault", "decode", err] + (["--si-code", si_code] if si_code else [])
    status, out, _ = run(capsys, *argv)
    assert status == 0
    assert out.splitlines()[-len(lines):] == lines


# --- bad input: one line on stderr, exit 2 ------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["races", "show", "MP+rfcget+freealloc2"], "no race named 'MP+rfcget+freealloc2'; did you mean "
                                               "MP+rfcget+freealloc"),
    (["races", "check", "MP+rfcget+alloc", "nothing-like-it"], "no race named 'nothing-like-it'; "
                                                              "see `pkeyspec races list`"),
    (["races", "show", "2+2w+pkeyset+pkeyset"], "did you mean 2+2W+pkeyset+pkeyset?"),
    (["races", "show", "MP+rfcget+alloc", "--replay", "A C"], "no thread named 'C'"),
    (["races", "show", "MP+rfcget+alloc", "--replay", "B B"], "thread B has only 1 steps"),
    (["pkru", "decode", "0x5555555g"], "PKRU value must be an integer (decimal, or hex with 0x), "
                                       "not '0x5555555g'"),
    (["pkru", "decode", "0x100000000"], "PKRU value must be between 0x0 and 0xffffffff"),
    (["fault", "decode", "PK"], "error code must be an integer"),
    (["fault", "decode", "0x25", "--si-code", "four"], "si_code must be an integer"),
    (["fault", "decode", "0x25", "--si-code", "9"], "si_code 9 is not a SIGSEGV code of the model"),
    (["races", "explore", "no/such/file.py"], "no such file: no/such/file.py"),
])
def test_bad_input(capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert err.startswith("pkeyspec: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("body, message", [
    ("x = 1\nraise ValueError('oops')\n", ":2: ValueError: oops"),
    ("import no_such_module_here\n", ":1: ModuleNotFoundError: No module named 'no_such_module_here'"),
    ("def broken(:\n", ":1: SyntaxError: "),
    ("x = 1\n", " defines no Race (assign Race objects"),
    ("RACES = 1\n", ": RACES must be a list of Race objects"),
    (HEADER + "R = Race(name='r', question='?', setup=lambda: 1 / 0, threads={'A': (inc('A'),)},"
     "exists=lambda w: True, exists_text='t', result='Always', facts=(), observe=())\n",
     "race r: setup raised ZeroDivisionError: division by zero"),
    (HEADER + "R = Race(name='r', question='?', setup=setup, threads={'A': (inc('A'),)},"
     "exists=lambda w: w.v['nope'], exists_text='t', result='Always', facts=(), observe=())\n",
     "race r: the exists clause or an observed value raised KeyError: 'nope'"),
    (HEADER + "R = Race(name='r', question='?', setup=setup, threads={'A': "
     "(local('boom', lambda w: [][1]),)}, exists=lambda w: True, exists_text='t', "
     "result='Always', facts=(), observe=())\n",
     "race r: step 'A: boom' raised IndexError: list index out of range"),
    (HEADER + "S = lambda v: local(f'x = {v}', lambda w: w.v.__setitem__('x', v), writes=('x',))\n"
     "R = Race(name='r', question='?', setup=setup, threads={'A': (S(1),), 'B': (S(2),)},"
     "exists=lambda w: w.v['x'] == 1, exists_text='t', result='Sometimes', facts=(), observe=())\n",
     "race r: final state () is both bad and good: observe the values exists depends on"),
    ("from pkeyspec.races import Race\nR = Race(name='r', question='?', setup=None, threads={}, "
     "exists=None, exists_text='', result='Maybe', facts=(), observe=())\n",
     ":2: ValueError: r: result must be one of"),
])
def test_bad_race_files(capsys, tmp_path, body, message):
    path = write(tmp_path, body)
    status, out, err = run(capsys, "races", "explore", path)
    assert status == 2
    assert err.startswith("pkeyspec: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def test_directory_is_not_a_race_file(capsys, tmp_path):
    status, _, err = run(capsys, "races", "explore", str(tmp_path))
    assert status == 2 and "not a file" in err


def test_usage_errors_and_help(capsys):
    status, _, err = run(capsys, "races", "frobnicate")
    assert status == 2 and "invalid choice" in err
    status, _, err = run(capsys)
    assert status == 2 and "required" in err
    status, _, err = run(capsys, "races", "check", "--max-states", "0")
    assert status == 2 and "must be at least 1" in err
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "races" in out and "pkru" in out and "fault" in out


# --- the installed command ------------------------------------------------------------------------


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pkeyspec", "races", "explore", str(EXAMPLE)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Observation 2W+pkeymprotect+pkeymprotect Sometimes 1 1" in result.stdout
    assert result.stderr == ""
    result = subprocess.run([sys.executable, "-m", "pkeyspec", "races", "show", "nope"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("pkeyspec: error: no race named 'nope'")


def test_console_script_is_declared():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("pkeyspec") == "pkeyspec.cli:main"


def test_pkru_decode_svg_draws_the_register(capsys):
    import xml.etree.ElementTree as ET
    status, out, _ = run(capsys, "pkru", "decode", "0x55555558", "--svg")
    assert status == 0
    svg = ET.fromstring(out)
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == ns + "svg"
    assert "0x55555558" in svg.find(ns + "title").text
    assert "key 1" in svg.find(ns + "desc").text


# --- the decoding helpers' contract (found by tests/fuzz.py) ---------------------------------

def test_parse_int_checks_a_field_of_any_width_without_building_its_bounds():
    """A field 2**70 bits wide: -1 is refused at once with bounds written as powers of two
    (before: MemoryError); a width below 1 is a ValueError; a non-str is a TypeError."""
    with pytest.raises(cli.CliError, match=r"between 0 and 2\*\*1180591620717411303424 - 1"):
        cli.parse_int("-1", "x", bits=2**70)
    assert cli.parse_int("-1", "x", bits=2**70, signed=True) == -1
    assert cli.parse_int("0xff", "x", bits=8) == 255
    with pytest.raises(cli.CliError, match="between 0x0 and 0xff"):
        cli.parse_int("256", "x", bits=8)
    with pytest.raises(cli.CliError, match="between -0x80 and 0x7f"):
        cli.parse_int("-129", "x", bits=8, signed=True)
    with pytest.raises(ValueError, match="at least 1"):
        cli.parse_int("1", "x", bits=0)
    with pytest.raises(TypeError):
        cli.parse_int(None, "x")


def test_format_fault_with_a_code_that_is_not_a_sigsegv_code():
    """An si_code SIGSEGV does not have is named as such (before: KeyError)."""
    assert "si_code 99 = not a SIGSEGV code" in cli.format_fault(0x25, 99)
    assert "error code 0x25" in cli.format_fault(2**64 + 0x25)

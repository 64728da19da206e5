"""Bad input to every `anima` command and every file a user hands in (issue 18).

What each generated example must show:
- no traceback on stdout or stderr;
- exit code 0, 1 (anima's own error) or 2 (usage error);
- a failure says what is wrong in one line on stderr (a bare group prints its help);
- what the store held before a failing command, it still holds after.

The commands come from the Typer tree, so a new command is fuzzed without a change here
(SKIP lists the few that start servers, load real models or run long jobs). Files are
valid examples, mutated: truncated, spliced, re-encoded, with a huge field, a value of
the wrong type; and random bytes. Examples run in this process through
`anima.cli.main`, the function the `anima` executable calls (its usage errors are one
line, CliRunner's are not); under pytest an internal error re-raises, so a bug shows as
a traceback here. `test_real_executable` runs a sample through the executable itself.

ANIMA_FUZZ_EXAMPLES=N runs N examples per test (default: a modest number each)."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from anima.cli import app, common, main

FUZZ_EXAMPLES = os.environ.get("ANIMA_FUZZ_EXAMPLES")


def fuzz(examples: int):
    """Modest and reproducible by default; each example makes its own home, so the
    function-scoped fixtures (one temp dir per test) are safe to share."""
    return settings(
        max_examples=int(FUZZ_EXAMPLES or examples),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


regressions = settings(
    phases=[Phase.explicit], deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # only the @examples


# --- the command tree ------------------------------------------------------------------------------

SKIP = {
    "serve": "starts the HTTP server",
    "daemon": "runs the scheduler until Ctrl-C",
    "mcp serve": "starts an MCP server on stdio or HTTP",
    "models pull": "downloads GGUF files (gigabytes) from the network",
    "bench": "benchmarks with real models, minutes each",
    "audit": "red-team runs and oversight experiments with models, minutes each",
    "guard train": "trains the guard heads with the real embedder",
    "eval": "scores the guard with the real embedder over data sets",
}


def _commands() -> dict[str, typer.core.TyperCommand]:
    """Every command a user can run, by its words ('memory add'); a group that runs on
    its own (`anima inbox`) counts as one."""
    found = {}

    def walk(cmd, words: tuple[str, ...]) -> None:
        if hasattr(cmd, "commands"):
            if words and cmd.invoke_without_command:
                found[" ".join(words)] = cmd
            for name, sub in cmd.commands.items():
                walk(sub, (*words, name))
        else:
            found[" ".join(words)] = cmd

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = _commands()
SKIPPED = sorted(c for c in COMMANDS if any(c == s or c.startswith(s + " ") for s in SKIP))
FUZZED = sorted(set(COMMANDS) - set(SKIPPED))


def test_the_tree_is_walked_and_skips_stay_few():
    assert {"memory add", "notes delete", "inbox", "do", "calendar import"} <= set(FUZZED)
    assert all(any(c == s or c.startswith(s + " ") for c in COMMANDS) for s in SKIP), "a skip names no command"
    assert len(SKIPPED) <= len(COMMANDS) // 3


# --- values for parameters ---------------------------------------------------------------------------

ODD = [
    "",
    " ",
    "-",
    "--",
    "-1",
    "\t",
    "a\nb",
    "two\r\nlines",
    "[/x]",
    "[bold]x",
    "[link=file:///etc]y[/link]",
    ":smile:",
    "\u202eevil",
    "zero\u200bwidth",
    "\ufeffbom",
    "line\u2028sep",
    "e\u0301",
    "👩‍👩‍👧",
    "٣",
    "NaN",
    "inf",
    "1e999",
    "0x10",
    "${HOME}",
    "%s%n",
    "'",
    '"',
    "\\",
    "\x1b[31mred",
    "\x7f",
    "caf\udce9",
    "\udcff",  # the last two: argv bytes that are not UTF-8
]
NUMBERS = st.one_of(st.integers(-5, 5), st.integers(-(2**70), 2**70), st.sampled_from([2**31, 2**63, -(2**63) - 1]))
TEXT = st.one_of(
    st.sampled_from(ODD),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=30),
    NUMBERS.map(str),
    st.floats().map(str),
    st.integers(1000, 20000).map(lambda n: "word " * (n // 5)),
    st.binary(min_size=1, max_size=6).map(lambda b: b.decode("utf-8", "surrogateescape")),
).filter(lambda s: "\x00" not in s)  # argv cannot hold NUL
WHEN = [
    "tomorrow at 9",
    "in 2 hours",
    "every Monday at 9",
    "every 0 days",
    "in -5 hours",
    "in 99999999 years",
    "yesterday",
    "next week",
    "2026-05-14",
    "2024-02-30",
    "9999-12-31 23:59",
    "Friday at 25:00",
    "every",
]
GOOD = {
    "kind": ["fact", "preference", "person", "gossip"],
    "backend": ["fake", "llama_cpp", "openai_http"],
    "persona": ["assistant", "coach", "pirate"],
    "name": ["assistant", "default", "minilm", "alice", "Bad Name"],
    "model": ["default", "nope", "x.gguf"],
    "role": ["user", "assistant"],
    "status": ["active", "done", "dropped", "all"],
    "date": ["2024-02-01", "2024-02-30", "0001-01-01", "02/01/2024"],
    "milestone": ["1", "5k", "99", "0"],
    "at": WHEN,
    "due": WHEN,
    "until": WHEN,
    "when": WHEN,
}
PATH_LIKE = {"path", "folder", "files", "plan_file", "out_dir", "data"}
# Files every example finds in its working directory (made by `_workdir`), and paths that are not there.
PATHS = [
    "valid.json",
    "valid.ics",
    "persona.toml",
    "plan.json",
    "rows.csv",
    "random.bin",
    "empty.txt",
    "docs",
    ".",
    "",
    "missing.json",
    "no/such/dir/x.json",
    "/proc/anima-fuzz/x",
    "-",
]


def _relative(s: str) -> str:
    """A generated name kept inside the example's folder."""
    return "/".join(p for p in s.split("/") if p not in ("", "..")).lstrip("~")


def values(param) -> st.SearchStrategy[str]:
    """What a user might type for one parameter: sensible values and bad ones."""
    kind = param.type_descriptor.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType, list):  # Optional[X], list[X]: X
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if param.name in PATH_LIKE or kind is Path:
        return st.one_of(st.sampled_from(PATHS), TEXT.map(_relative))
    good = st.sampled_from(GOOD[param.name]) if param.name in GOOD else st.nothing()
    if kind is int:
        good = st.one_of(good, st.integers(0, 4).map(str), NUMBERS.map(str))
    elif kind is float:
        good = st.one_of(good, st.floats(allow_nan=True).map(str), st.sampled_from(["1e400", "-0.0"]))
    elif typing.get_origin(kind) is typing.Literal:
        good = st.one_of(good, st.sampled_from(typing.get_args(kind)))
    return st.one_of(good, TEXT)


@st.composite
def command_line(draw, words: str) -> list[str]:
    """`anima WORDS` with some of its options and its arguments, good and bad."""
    cmd = COMMANDS[words]
    args = words.split()
    for p in cmd.params:
        if p.param_type_name != "option" or not (p.required and draw(st.integers(0, 9)) or draw(st.booleans())):
            continue
        if p.is_flag:
            args.append(draw(st.sampled_from(p.opts + p.secondary_opts)))
        else:
            for _ in range(draw(st.integers(1, 2)) if p.multiple else 1):
                args += [draw(st.sampled_from(p.opts)), draw(values(p))]
    positional = []
    for p in (p for p in cmd.params if p.param_type_name == "argument"):
        if not (p.required and draw(st.integers(0, 9))) and draw(st.booleans()):
            break  # leave this and later arguments out (sometimes even a required one)
        positional.append(draw(values(p)))
    if any(a.startswith("-") for a in positional) and draw(st.booleans()):
        args.append("--")  # else a value like -1 is read as an option: a usage error, also fine
    return args + positional + draw(st.sampled_from([[], [], [], ["extra"], ["--no-such-option"], ["--help"]]))


STDIN = st.one_of(
    st.just(b""), st.text(max_size=50).map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=50)
)


# --- running anima -----------------------------------------------------------------------------------


@dataclass
class Run:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ anima {shlex.join(self.args)}\nexit {self.code}\n"
            f"--- stdout\n{self.stdout[-2000:]}\n--- stderr\n{self.stderr[-2000:]}"
        )


def invoke(args: list[str], stdin: bytes = b"") -> Run:
    """`anima ARGS` in this process, with UTF-8 streams as strict as a terminal's."""
    out, err = io.BytesIO(), io.BytesIO()
    streams = [io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")] + [
        io.TextIOWrapper(b, encoding="utf-8", write_through=True) for b in (out, err)
    ]
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr
    sys.argv, (sys.stdin, sys.stdout, sys.stderr) = ["anima", *args], streams
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        exc.add_note(f"while running: anima {shlex.join(args)}")
        raise
    finally:
        sys.argv, sys.stdin, sys.stdout, sys.stderr = saved
        for console in (common.out, common.err):  # a write that failed stays buffered: a new process would not see it
            del console._buffer[:]
    return Run(args, code, out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace"))


def held(home: Path) -> dict:
    """What the user has stored: rows of every table a person fills, and the config file."""
    from anima.store import open_store

    store = open_store(home, "local")
    try:
        tables = ("memories", "reminders", "notes", "goals", "milestones", "events", "doc_files", "episodes")
        found = {t: [tuple(r) for r in store.db.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables}
    finally:
        store.close()
    config = home / "config.toml"
    found["config.toml"] = config.read_bytes() if config.exists() else None
    return found


def check(run: Run, before: dict, home: Path) -> None:
    assert "Traceback" not in run.stdout + run.stderr, run
    assert run.code in (0, 1, 2), run
    if run.code == 0:
        return
    lines = [line for line in run.stderr.split("\n") if line.strip()]
    assert len(lines) == 1 or (not lines and run.code == 2 and "Usage" in run.stdout), f"not one line on stderr:\n{run}"
    assert held(home) == before, f"a failing command changed the store:\n{run}"


# --- a home with something in it ---------------------------------------------------------------------

ICS = b"""BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//fuzz//EN\r\nBEGIN:VEVENT\r\n\
UID:standup@fuzz\r\nSUMMARY:Stand-up [/x]\r
DTSTART;TZID=Europe/Berlin:20260511T093000\r\nDTEND;TZID=Europe/Berlin:20260511T094500\r\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20261231T000000Z\r
EXDATE;TZID=Europe/Berlin:20260513T093000\r\nLOCATION:Room 4\r\nDESCRIPTION:Notes\\, agenda\r\n\
END:VEVENT\r\nBEGIN:VEVENT\r\nUID:trip@fuzz\r
SUMMARY:Trip to Lisbon\r\nDTSTART;VALUE=DATE:20260601\r\nDTEND;VALUE=DATE:20260605\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"""
PERSONA = (
    b'name = "pirate"\ndescription = "Talks like a pirate"\nsystem_prompt = """You are a pirate.\nStay kind."""\n'
    b'style = "arr"\nexample_user = "hi"\nexample_reply = "Ahoy!"\n'
)
PLAN = json.dumps(
    {
        "goal": "write one note per row in rows.csv",
        "steps": [
            {"title": "Draft for {segment}", "tool": "write", "arguments": {}, "output": "draft.md"},
            {"title": "Save a note", "tool": "add_note", "arguments": {"text": "done", "title": "t"}, "output": ""},
        ],
    },
    indent=2,
).encode()
CSV = 'segment,tone\nstudents,casual\n"families, big",warm\nretirées ☕,formal\n'.encode()
DOC = "# Trip\n\nPack the passport.\nBook the hotel in Lisbon, Alfama.\n\n## Budget [/x]\n\n€1200 in total.\n".encode()
CONFIG = (
    b'# my settings: kept as written\npersona = "assistant"\nhistory_turns = 4\n\n'
    b"[generation]\nmax_tokens = 256\ntemperature = 0.5\n\n[memory]\n"
)


def _seed(home: Path, work: Path) -> None:
    from anima.memory import MemoryService
    from anima.models.fake import FakeEmbedder
    from anima.store import open_store
    from anima.tools import reminders as rm
    from anima.tools.calendar import import_ics
    from anima.tools.documents import index_folder
    from anima.tools.goals import add_goal
    from anima.tools.notes import add_note

    home.mkdir(parents=True)
    (home / "config.toml").write_bytes(CONFIG)
    store = open_store(home, "local")
    memory = MemoryService(store, FakeEmbedder())
    memory.add("My sister Ana lives in Berlin", kind="person")
    memory.add("Writes [draft] and [/this] in brackets", kind="fact")
    memory.add("Café ☕ every morning, 日本語 too", kind="preference", ref_date="2024-02-01")
    now = rm.local_now()
    rm.add_reminder(store, "call the dentist", "tomorrow at 9", now)
    rm.add_reminder(store, "water the plants [/x]", "every Monday at 9", now)
    rm.add_todo(store, "file taxes", "in 3 days", now)
    add_note(store, "Wi-Fi password is on the fridge", "home")
    add_note(store, "[/odd] markup in a note", "[b]")
    add_goal(store, "Run a marathon", "health", "in 3 months", ["5k", "10k [/x]"], now)
    import_ics(store, work / "valid.ics")
    index_folder(store, work / "docs")
    (work / "valid.json").write_text(json.dumps(memory.export(), ensure_ascii=False), encoding="utf-8")
    store.close()


def _workdir(work: Path) -> None:
    (work / "docs").mkdir(parents=True)
    (work / "docs" / "trip.md").write_bytes(DOC)
    for name, data in {
        "valid.ics": ICS,
        "persona.toml": PERSONA,
        "plan.json": PLAN,
        "rows.csv": CSV,
        "random.bin": bytes(range(256)),
        "empty.txt": b"",
    }.items():
        (work / name).write_bytes(data)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A seeded home and working folder, copied for each example."""
    root = tmp_path_factory.mktemp("template")
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("ANIMA_")]:
            mp.delenv(key)
        mp.setenv("ANIMA_HOME", str(root / "home"))
        _workdir(root / "work")
        _seed(root / "home", root / "work")
    return root


@pytest.fixture
def fresh(template, tmp_path, monkeypatch):
    """Call it once per example: a copy of the template as ANIMA_HOME, the working folder as cwd."""
    count = iter(range(10**9))
    monkeypatch.setenv("ANIMA_BACKEND", "fake")
    monkeypatch.setenv(
        "ANIMA_OPENAI_HTTP__BASE_URL", "http://127.0.0.1:9/v1"
    )  # refused at once: no server of another worker is asked
    monkeypatch.setenv("HOME", str(tmp_path))

    def make() -> tuple[Path, dict]:
        root = tmp_path / f"ex{next(count)}"
        shutil.copytree(template, root, symlinks=True)
        monkeypatch.setenv("ANIMA_HOME", str(root / "home"))
        monkeypatch.chdir(root / "work")
        return root / "home", held(root / "home")

    return make


# --- every command -----------------------------------------------------------------------------------


@pytest.mark.parametrize("words", FUZZED)
@fuzz(12)
@given(data=st.data(), stdin=STDIN)
def test_every_command_fails_cleanly(words, data, stdin, fresh):
    home, before = fresh()
    run = invoke(data.draw(command_line(words), label="args"), stdin)
    check(run, before, home)


BIG = "9223372036854775808"  # one past SQLite's largest integer


@regressions
@example(args=["notes", "add", "caf\udce9"], stdin=b"")  # argv bytes that are not UTF-8: a traceback printing them
@example(args=["calendar", "on", "[/x]"], stdin=b"")  # the error quoted the input as rich markup: MarkupError
@example(args=["remind", "x", "--at", "[/y]"], stdin=b"")
@example(args=["personas", "show", "two\nlines"], stdin=b"")  # an error on two lines
@example(args=["memory", "add", "see [/x]"], stdin=b"")  # stored, then a traceback printing it
@example(args=["memory", "list"], stdin=b"")  # a stored memory with [/this] in it: MarkupError
@example(args=["reminders"], stdin=b"")
@example(args=["notes", "list", "--limit", BIG], stdin=b"")  # OverflowError from SQLite
@example(args=["notes", "list", "--limit", "-" + BIG], stdin=b"")
@example(args=["memory", "why", BIG], stdin=b"")
@example(args=["todo", "done", BIG], stdin=b"")
@example(args=["goals", "progress", BIG, "1"], stdin=b"")
@example(args=["inbox", "dismiss", BIG], stdin=b"")
@example(args=["chat"], stdin=b"\xff\xfe")  # stdin that is not UTF-8
@example(args=["ask", "-"], stdin=b"caf\xe9")
@example(args=["memory", "export", "/proc/anima-fuzz/x"], stdin=b"")  # a path that cannot be written
@example(args=["memory", "export", "."], stdin=b"")
@example(args=["docs", "index", "w" * 300], stdin=b"")  # a name too long for the file system
@given(args=st.just([]), stdin=st.just(b""))
def test_command_regressions(args, stdin, fresh):
    home, before = fresh()
    check(invoke(args, stdin), before, home)


def test_a_bare_group_prints_its_help_once(fresh):
    fresh()
    run = invoke(["memory"])
    assert run.code == 2 and run.stdout.count("Usage:") == 1 and not run.stderr, run


# --- every file a user hands in ----------------------------------------------------------------------

WEIRD = [
    None,
    True,
    -1,
    0,
    2**64,
    1e308,
    float("inf"),
    "",
    "[/x]",
    "\ud800",
    "a\x00b",
    "x" * 100_000,
    [],
    {},
    [None],
    {"a": {"b": []}},
    "2024-02-30",
]
TOML_WEIRD = [
    True,
    -1,
    2**63 - 1,
    1e308,
    float("nan"),
    "",
    "[/x]",
    "x" * 100_000,
    "\u202e",
    [],
    [1, "a"],
    {"x": 1},
    "line\nbreak",
]


def _splice(valid: bytes) -> st.SearchStrategy[bytes]:
    at = st.integers(0, len(valid))
    return st.one_of(
        at.map(lambda i: valid[:i]),  # truncated
        st.tuples(at, at, st.binary(max_size=12)).map(
            lambda t: valid[: min(t[:2])] + t[2] + valid[max(t[:2]) :]
        ),  # spliced
        st.tuples(at, at).map(
            lambda t: valid[: max(t)] + valid[min(t) : max(t)] * 3 + valid[max(t) :]
        ),  # a part repeated
        st.tuples(at, st.sampled_from([b"A", b"\xff", b"9", b"[", b"\n"]), st.integers(10_000, 300_000)).map(
            lambda t: valid[: t[0]] + t[1] * t[2] + valid[t[0] :]
        ),  # a huge field
        st.sampled_from(["utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252"]).map(
            lambda enc: valid.decode("utf-8").encode(enc, "replace")
        ),  # wrong encoding
        st.just(b"\xef\xbb\xbf" + valid),  # a BOM
    )


@st.composite
def _swap_a_value(draw, tree, weird: list):
    """The tree with one value (at any depth) replaced by a weird one, or removed."""
    if isinstance(tree, (dict, list)) and tree and draw(st.integers(0, 3)):
        keys = sorted(tree) if isinstance(tree, dict) else range(len(tree))
        key = draw(st.sampled_from(list(keys)))
        copy = dict(tree) if isinstance(tree, dict) else list(tree)
        if draw(st.integers(0, 5)) == 0:
            del copy[key]
        else:
            copy[key] = draw(_swap_a_value(copy[key], weird))
        return copy
    return draw(st.sampled_from(weird))


def mutated(valid: bytes, kind: str) -> st.SearchStrategy[bytes]:
    """Broken versions of a valid file, and random bytes."""
    ways = [st.just(valid), _splice(valid), st.binary(max_size=3000), st.just(b"")]
    if kind == "json":
        ways.append(
            _swap_a_value(json.loads(valid), WEIRD).map(
                lambda t: json.dumps(t, ensure_ascii=False).encode("utf-8", "surrogatepass")
            )
        )
    if kind == "toml":
        from anima.config import to_toml

        ways.append(
            _swap_a_value(tomllib.loads(valid.decode()), TOML_WEIRD).map(
                lambda t: to_toml(t if isinstance(t, dict) else {"x": t}).encode()
            )
        )
    return st.one_of(ways)


def _template_file(template: Path, name: str) -> bytes:
    return (template / "work" / name).read_bytes()


FILES = {  # what a user hands in -> (a valid example, its shape, the command that reads it)
    "memory export": ("valid.json", "json", ["memory", "import", "file"]),
    "ChatGPT history": ("history.json", "json", ["memory", "ingest", "file"]),
    "LoCoMo history": ("locomo.json", "json", ["memory", "ingest", "file"]),
    "calendar": ("valid.ics", None, ["calendar", "import", "file"]),
    "task plan": ("plan.json", "json", ["do", "--plan", "file", "--dry-run"]),
    "task CSV": ("rows.csv", None, ["do", "-f", "file", "--dry-run", "write one note per row"]),
    "persona": ("persona.toml", "toml", ["personas", "add", "file"]),
    "config": ("config.toml", "toml", ["config", "show"]),
    "document": ("docs/trip.md", None, ["docs", "index", "docs"]),
}
HISTORY = json.dumps(
    [
        {
            "title": "t",
            "mapping": {
                "a": {
                    "message": {
                        "id": "m1",
                        "author": {"role": "user"},
                        "create_time": 1714000000.5,
                        "content": {"parts": ["I moved to Porto"]},
                    }
                },
                "b": {
                    "message": {
                        "id": "m2",
                        "author": {"role": "assistant"},
                        "create_time": 1714000001,
                        "content": {"parts": ["Nice!"]},
                    }
                },
            },
        }
    ]
).encode()


LOCOMO = json.dumps(
    [
        {
            "sample_id": "conv-1",
            "qa": [{"question": "Where?", "answer": "Porto", "evidence": ["D1:1"], "category": 4}],
            "conversation": {
                "speaker_a": "Ana",
                "speaker_b": "Ben",
                "session_1_date_time": "1:56 pm on 8 May, 2023",
                "session_1": [
                    {"speaker": "Ana", "dia_id": "D1:1", "text": "I moved to Porto"},
                    {"speaker": "Ben", "dia_id": "D1:2", "text": "Nice!", "blip_caption": "a bridge"},
                ],
            },
        }
    ]
).encode()
VALID = {"history.json": HISTORY, "locomo.json": LOCOMO, "config.toml": CONFIG}


@pytest.mark.parametrize("what", sorted(FILES))
@fuzz(25)
@given(data=st.data())
def test_every_file_fails_cleanly(what, data, template, fresh):
    name, kind, _ = FILES[what]
    content = data.draw(mutated(VALID.get(name) or _template_file(template, name), kind), label="content")
    hand_in(what, content, fresh)


@regressions
@example(what="memory export", content=b"[" * 100_000)  # RecursionError
@example(
    what="memory export", content=b'{"version": 1, "memories": [{"text": "kept"}, {}]}'
)  # the first was stored, then an error
@example(
    what="memory export", content=b'{"version": 1, "memories": [{"text": "\\ud800"}]}'
)  # a lone surrogate reached SQLite
@example(what="ChatGPT history", content=b'[{"mapping": 5}]')  # AttributeError
@example(
    what="ChatGPT history",
    content=b'[{"mapping": {"a": {"message": {"author": {"role": "user"}, "create_time": "soon", '
    b'"content": {"parts": ["hi"]}}}}}]',
)
@example(
    what="calendar", content=ICS.replace(b"Europe/Berlin", b"Europe/Ber" + b"9" * 70_000, 1)
)  # OSError: file name too long
@example(what="config", content=b"history_turns = " + b"9" * 5000)  # ValueError: more than 4300 digits
@example(what="config", content=b"x = " + b"[" * 100_000)  # RecursionError
@given(what=st.just("config"), content=st.just(b""))
def test_file_regressions(what, content, fresh):
    hand_in(what, content, fresh)


def hand_in(what: str, content: bytes, fresh) -> None:
    name, _, args = FILES[what]
    home, before = fresh()
    target = home / "config.toml" if name == "config.toml" else Path(name)
    target.write_bytes(content)
    if name == "config.toml":
        before["config.toml"] = content  # the file under test is the config itself
    run = invoke([str(target) if a == "file" else a for a in args])
    check(run, before, home)
    if name == "config.toml" and run.code == 0:
        check(invoke(["notes", "list"]), before, home)  # a config that loads also opens the store


KNOWN = {  # tracebacks the fuzzing found in load_plan, attach and load_persona: (args, the file `bad` they read)
    "plan path is a folder: load_plan catches only FileNotFoundError": (["do", "--plan", ".", "--dry-run"], None),
    "plan path too long for the file system": (["do", "--plan", "w" * 300, "--dry-run"], None),
    "attached file name too long: attach catches only some OSErrors": (
        ["do", "-f", "w" * 300, "--dry-run", "goal"],
        None,
    ),
    "plan steps that are not objects": (["do", "--plan", "bad", "--dry-run"], b'{"goal": "g", "steps": [1]}'),
    "plan goal that is not text": (["do", "--plan", "bad", "--dry-run"], b'{"goal": 1, "steps": [{"title": "t"}]}'),
    "plan step title that is not text": (
        ["do", "--plan", "bad", "--dry-run"],
        b'{"goal": "g", "steps": [{"title": ["t"]}]}',
    ),
    "plan nested 100000 deep: RecursionError": (["do", "--plan", "bad", "--dry-run"], b"[" * 100_000),
    "persona with a 5000-digit number: load_persona catches TOMLDecodeError, tomllib raises ValueError": (
        ["personas", "add", "bad"],
        b"name = " + b"9" * 5000,
    ),
    "persona with arrays nested 100000 deep: RecursionError": (["personas", "add", "bad"], b"name = " + b"[" * 100_000),
}


@pytest.mark.parametrize("case", sorted(KNOWN))
def test_plan_and_persona_regressions(case, fresh):
    args, content = KNOWN[case]
    home, before = fresh()
    if content is not None:
        Path("bad").write_bytes(content)
    check(invoke(args), before, home)


def test_a_plan_writes_only_in_its_task_folder(fresh):
    fresh()
    Path("bad").write_text(json.dumps({"goal": "g", "steps": [{"title": "t", "output": "../../escaped.md"}]}))
    check(invoke(["do", "--plan", "bad", "--yes", "--out", "tasks"]), {}, Path())
    assert not Path("escaped.md").exists()


# --- the real executable -----------------------------------------------------------------------------

REAL = [  # (argv as bytes, stdin)
    ([b"memory"], b""),
    ([b"notes", b"add", b"caf\xe9"], b""),
    ([b"memory", b"import", b"-"], b"\xff\xfe not UTF-8"),
    ([b"ask", b"-"], b"caf\xe9"),
    ([b"calendar", b"on", b"[/x]"], b""),
    ([b"remind", b"x", b"--at", b"[/y]"], b""),
    ([b"memory", b"forget", b"99999999999999999999999"], b""),
    ([b"notes", b"list", b"--limit", b"abc"], b""),
    ([b"memory", b"export", b"/proc/anima-fuzz/x"], b""),
    ([b"memory", b"list"], b""),
]


@pytest.mark.parametrize("argv, stdin", REAL)
def test_real_executable(argv, stdin, fresh):
    home, before = fresh()
    env = {
        k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"
    }  # a user's run: internal errors are not re-raised
    env.update(LC_ALL="C.UTF-8", PYTHONUTF8="0")
    exe = Path(sys.executable).with_name("anima")
    done = subprocess.run([bytes(exe), *argv], check=False, input=stdin, capture_output=True, env=env, timeout=60)
    run = Run(
        [a.decode("utf-8", "replace") for a in argv],
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )
    check(run, before, home)
    assert "internal error" not in run.stderr and run.stdout.count("Usage:") <= 1, run

"""The CLI as a user meets it: CliRunner for most, a real subprocess for the error path."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from anima import __version__
from anima.cli import app, read_message
from anima.models import fake

runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, list(args), input=input)


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"anima {__version__}"


def test_ask_json_has_the_promised_keys():
    result = run("ask", "--backend", "fake", "hello there", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"] == "You said: hello there"
    assert data["model"] == "fake"
    assert isinstance(data["latency_ms"], float) and isinstance(data["tokens"], int) and data["tokens"] == 4


def test_ask_streams_text_and_logs_the_turn(anima_home):
    result = run("ask", "--backend", "fake", "ping")
    assert result.stdout == "You said: ping\n"
    from anima.store import open_store

    assert open_store(anima_home, "local").count_turns() == 1


def test_ask_reads_stdin():
    assert run("ask", "--backend", "fake", "-", input="from stdin").stdout == "You said: from stdin\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["ask", "--backend", "fake", ""], "error: the message is empty"),
        (["ask", "--model", "nope", "hi"], "error: unknown model 'nope'"),
        (["ask", "hi"], "error: model 'default' is not downloaded yet (run `anima models pull default`)"),
        (["ask", "--backend", "fake", "--persona", "pirate", "hi"], "error: unknown persona 'pirate'"),
        (["models", "pull", "nope"], "error: unknown model 'nope'"),
        (["models", "info", "nope"], "error: unknown model 'nope'"),
    ],
)
def test_user_errors_are_one_line_exit_1(args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_toml_is_one_line(anima_home):
    anima_home.mkdir(parents=True)
    (anima_home / "config.toml").write_text("model = [")
    result = run("config", "show")
    assert result.exit_code == 1 and "not valid TOML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_show_reflects_file_and_env(anima_home, monkeypatch):
    anima_home.mkdir(parents=True)
    (anima_home / "config.toml").write_text('persona = "coach"\n')
    monkeypatch.setenv("ANIMA_LLAMA_CPP__N_CTX", "2048")
    data = json.loads(run("config", "show", "--json").stdout)
    assert data["settings"]["persona"] == "coach" and data["settings"]["llama_cpp"]["n_ctx"] == 2048
    text = run("config", "show").stdout
    assert 'persona = "coach"' in text and "n_ctx = 2048" in text


def test_models_list_and_info():
    rows = json.loads(run("models", "list", "--json").stdout)
    assert {r["name"] for r in rows} >= {"default", "small", "minilm"}
    assert not any(r["present"] for r in rows)  # fresh ANIMA_HOME
    info = json.loads(run("models", "info", "default", "--json").stdout)
    assert info["sha256"] and info["sources"][0].startswith("hf://") and info["sources"][1].startswith("pypi:")
    assert "anima models pull default" in run("models", "info", "default").stdout


def test_chat_session(monkeypatch):
    script = (
        'hello\n/recall\n/persona\n/persona coach\n/persona pirate\n/nope\n"""\nline one\nline two\n"""\n'
        "continued \\\nline\n/recall\n/exit\n"
    )
    result = run("chat", "--backend", "fake", input=script)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "anima> You said: hello" in out
    assert "coach" in out and "persona: coach" in out
    assert "unknown persona 'pirate'" in result.stderr and "unknown command /nope" in result.stderr
    assert "You said: line one\nline two" in out
    assert "You said: continued \nline" in out
    assert "nothing recalled for the last reply" in out  # the first turn had no memory yet
    # later turns recall earlier messages that share words or meaning ("line"), not "hello"
    assert "] user: line one" in out and "user: hello" not in out


def test_chat_ctrl_c_stops_the_reply_not_the_program(monkeypatch):
    model = fake.FakeChatModel(["never shown", "after stop"])

    def interrupted(messages, options):  # the first reply is cut by Ctrl-C mid-stream
        yield fake.Chunk("partial ")
        raise KeyboardInterrupt

    streams = iter([interrupted, None])

    original = model.stream

    def stream(messages, options):
        chosen = next(streams)
        return chosen(messages, options) if chosen else original(messages, options)

    model.script = ["after stop"]
    model.stream = stream
    monkeypatch.setattr("anima.models.load_chat_model", lambda config: model)
    monkeypatch.setattr("anima.app.load_chat_model", lambda config: model)
    result = run("chat", "--backend", "fake", input="tell me a story\nsecond\n")
    assert result.exit_code == 0, result.output
    assert "anima> partial  [stopped]" in result.stdout
    assert "anima> after stop" in result.stdout


def test_read_message_block(monkeypatch):
    lines = iter(['"""', "a", "b", '"""'])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert read_message() == "a\nb"


def test_real_process_prints_one_line_and_no_traceback(anima_home, tmp_path):
    """The installed entry point, outside pytest's exception passthrough."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    anima = shutil.which("anima", path=os.path.dirname(sys.executable)) or "anima"
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data dir should be")
    cases = [
        ({"ANIMA_HOME": str(anima_home)}, ["ask", "hi"], "not downloaded yet"),
        ({"ANIMA_HOME": str(blocker)}, ["ask", "--backend", "fake", "hi"], "Not a directory"),
        (
            {
                "ANIMA_HOME": str(anima_home),
                "ANIMA_BACKEND": "openai_http",
                "ANIMA_OPENAI_HTTP__BASE_URL": "http://127.0.0.1:9/v1",
            },
            ["ask", "hi"],
            "cannot reach http://127.0.0.1:9/v1",
        ),
    ]
    for extra, args, message in cases:
        proc = subprocess.run([anima, *args], capture_output=True, text=True, env={**env, **extra}, timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _can_mount_privately() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_privately(), reason="needs `unshare -m` and mount (root in a container)")
def test_read_only_data_dir_is_one_line_and_keeps_the_log(anima_home):
    """No write permission on the data dir (a read-only bind mount, so it holds for root
    too): one line, exit 1, and the turns already stored are still there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["ANIMA_HOME"] = str(anima_home)
    anima = shutil.which("anima", path=os.path.dirname(sys.executable)) or "anima"
    first = subprocess.run([anima, "ask", "--backend", "fake", "remember me"], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    folder = anima_home / "users" / "local"
    script = f'mount --bind -o ro "{folder}" "{folder}" && exec "{anima}" ask --backend fake "second"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    from anima.store import open_store

    turns = open_store(anima_home, "local").turns(1)
    assert [t.user_text for t in turns] == ["remember me"]


def test_doctor_names_sqlite_vec_when_configured(monkeypatch):
    monkeypatch.setenv("ANIMA_STORE__VECTORS", "sqlite-vec")
    assert json.loads(run("doctor", "--json").stdout)["vector search"] == "sqlite-vec (configured, loaded)"


def test_doctor_reports_the_installation():
    data = json.loads(run("doctor", "--json").stdout)
    assert data["vector search"] == "numpy (auto)" and "default: missing" in data["models"]
    assert data["encryption"].startswith("on, key from")
    assert (
        data["llama.cpp check"] == "not tested: model 'default' is not downloaded yet (run `anima models pull default`)"
    )  # the child ran


def test_doctor_names_a_crashing_llama_cpp_build_and_the_fix(monkeypatch):
    from anima.models import smoke

    monkeypatch.setattr(smoke, "run_smoke", lambda model=None: smoke.interpret(-11, "", ""))
    data = json.loads(run("doctor", "--json").stdout)
    assert (
        data["llama.cpp check"].startswith("CRASHES on this CPU (a test generation died from SIGSEGV)")
        and "make rebuild-llama" in data["llama.cpp check"]
    )


def test_serve_refuses_to_listen_beyond_loopback_without_keys():
    result = run("serve", "--host", "0.0.0.0")
    assert result.exit_code == 1 and "refusing to listen on 0.0.0.0 with no API keys" in result.stderr


def test_users_add_list_revoke():
    key = run("users", "add", "alice").stdout.strip().splitlines()[-1]
    assert key.startswith("anima-") and len(key) > 40
    rows = json.loads(run("users", "list", "--json").stdout)
    assert rows[0]["name"] == "alice" and rows[0]["key_prefix"] == key[:12] and not rows[0]["revoked"]
    assert "revoked 1 key" in run("users", "revoke", "alice").stdout
    assert run("users", "revoke", "alice").exit_code == 1
    assert run("users", "add", "../evil").exit_code == 1


def _anima_process(anima_home, *args, stdout=subprocess.PIPE, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update({"ANIMA_HOME": str(anima_home), **(extra_env or {})})
    anima = shutil.which("anima", path=os.path.dirname(sys.executable)) or "anima"
    return subprocess.run([anima, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["bench", "locomo", "--data", "missing.json"], 1, "no LoCoMo file at missing.json"),
        (["bench", "locomo", "--data", "{notlocomo}"], 1, "not a LoCoMo file"),
        (["bench", "overhead", "--prompts", "0"], 2, "Invalid value for '--prompts'"),
        (["bench", "overhead", "--rounds", "0"], 2, "Invalid value for '--rounds'"),
        (["bench", "guard", "--data", "missing"], 1, "no safety data folder at missing"),
        (["bench", "fast-guard", "--data", "missing"], 1, "no safety data folder at missing"),
        (["bench", "guard", "--prompts", "1"], 2, "Invalid value for '--prompts'"),
        (["bench", "give-way", "--min-gap", "3", "--max-gap", "1"], 1, "--max-gap 1.0 is below --min-gap 3.0"),
        (["bench", "give-way", "--requests", "0"], 2, "Invalid value for '--requests'"),
        (["bench", "memory-scale", "--queries", "0"], 2, "Invalid value for '--queries'"),
        (["bench", "memory-scale", "--n", "-5"], 2, "Invalid value for '--n'"),
        (["bench", "serve", "--users", "0"], 2, "Invalid value for '--users'"),
        (["ask"], 2, "Missing argument 'text'"),
        (["no-such-command"], 2, "No such command"),
    ],
)
def test_bench_and_usage_mistakes_are_one_line(anima_home, tmp_path, args, code, message):
    wrong = tmp_path / "notlocomo.json"
    wrong.write_text('{"hello": "world"}')
    proc = _anima_process(anima_home, *[a.replace("{notlocomo}", str(wrong)) for a in args])
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and proc.stderr.startswith("error:")
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_guard_train_probe_on_another_backend_says_so_before_training_anything(anima_home, tmp_path):
    proc = _anima_process(
        anima_home, "guard", "train", "--probe", "--data", str(tmp_path), extra_env={"ANIMA_BACKEND": "openai_http"}
    )
    assert proc.returncode == 1 and proc.stderr.startswith("error: the probe reads the embedded model's layers")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(anima_home.rglob("*.npz"))  # no head was trained first


@pytest.mark.parametrize("args", [["--help"], ["bench", "--help"], ["personas", "list"]])
def test_a_closed_pipe_ends_quietly(anima_home, args):
    """`anima --help | head -1`: the reader is gone before anima writes. Exit 1 and
    nothing on stderr, as click does it (a shell shows nothing)."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as sink:
        proc = _anima_process(anima_home, *args, stdout=sink)
    assert proc.stderr == "" and proc.returncode == 1

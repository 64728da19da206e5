"""`anima memory ...` through the CLI, on the scripted backend."""

import json

import pytest
from typer.testing import CliRunner

from anima.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def fake_backend(monkeypatch):
    monkeypatch.setenv("ANIMA_BACKEND", "fake")


def run(*args, input=None):
    return runner.invoke(app, list(args), input=input)


def test_add_list_search_edit_why_forget():
    assert "remembered #1" in run("memory", "add", "My sister Ana lives in Berlin", "--kind", "person").stdout
    rows = json.loads(run("memory", "list", "--json").stdout)
    assert rows[0]["text"] == "My sister Ana lives in Berlin" and rows[0]["kind"] == "person"
    hits = json.loads(run("memory", "search", "where does Ana live", "--json").stdout)
    assert hits[0]["kind"] == "memory" and hits[0]["id"] == 1
    assert "is now: My sister Ana lives in Munich" in run("memory", "edit", "1", "My sister Ana lives in Munich").stdout
    assert "added by hand" in run("memory", "why", "1").stdout
    assert "forgot #1" in run("memory", "forget", "1").stdout
    assert json.loads(run("memory", "list", "--json").stdout) == []


def test_export_import_via_files(tmp_path, monkeypatch):
    run("memory", "add", "Likes green tea", "--kind", "preference", "--date", "2024-02-01")
    path = tmp_path / "export.json"
    run("memory", "export", str(path))
    first = json.loads(path.read_text())
    monkeypatch.setenv("ANIMA_HOME", str(tmp_path / "other"))
    assert "imported 1 memories" in run("memory", "import", str(path)).stdout
    again = json.loads(run("memory", "export").stdout)
    assert again == first


@pytest.mark.parametrize(
    "args, message",
    [
        (["memory", "forget", "42"], "no memory with id 42"),
        (["memory", "edit", "42", "x"], "no memory with id 42"),
        (["memory", "add", "x", "--kind", "gossip"], "unknown kind 'gossip'"),
        (["memory", "import", "/no/such/file.json"], "cannot read /no/such/file.json"),
    ],
)
def test_bad_input_is_one_line(args, message):
    result = run(*args)
    assert result.exit_code == 1 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_corrupted_export_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "memories": [{"text": "x", "bogus": 1}]}')
    result = run("memory", "import", str(bad))
    assert result.exit_code == 1 and "malformed record" in result.stderr
    bad.write_text("{ not json")
    result = run("memory", "import", str(bad))
    assert result.exit_code == 1 and "is not JSON" in result.stderr


def test_wrong_passphrase_is_one_line(monkeypatch):
    monkeypatch.setenv("ANIMA_PASSPHRASE", "right")
    run("memory", "add", "secret plans")
    monkeypatch.setenv("ANIMA_PASSPHRASE", "wrong")
    result = run("memory", "list")
    assert result.exit_code == 1 and "wrong key or passphrase" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ingest_locomo_file(tmp_path):
    from tests.test_bench_memory import tiny_locomo

    result = run("memory", "ingest", str(tiny_locomo(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "ingested 5 messages" in result.stdout
    hits = json.loads(run("memory", "search", "puppy Biscuit", "--json").stdout)
    assert hits[0]["text"] == "No, a puppy named Biscuit." and hits[0]["when"].startswith("2023-05-08")

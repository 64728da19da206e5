"""The persona catalogue, user persona files, and `anima personas list|show|use|add`."""

from __future__ import annotations

import json
import logging
import tomllib

import pytest
from typer.testing import CliRunner

from anima.app import build
from anima.cli import app
from anima.config import load_config
from anima.errors import BadInput
from anima.persona import BUILTIN_DIR, REQUIRED, add_persona, get_persona, load_persona, personas

runner = CliRunner()
PIRATE = 'name = "pirate"\ndescription = "Talks like a pirate."\nsystem_prompt = "Talk like a pirate."\n'


def run(*args):
    return runner.invoke(app, list(args))


def user_file(anima_home, filename, text):
    folder = anima_home / "personas"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_text(text, encoding="utf-8")


# --- the built-in catalogue ----------------------------------------------------


def test_thirty_builtins_all_load_with_unique_names_and_filled_fields():
    files = sorted(BUILTIN_DIR.glob("*.toml"))
    assert len(files) == 30
    loaded = [load_persona(f) for f in files]
    assert len({p.name for p in loaded}) == 30
    for p in loaded:
        assert p.path.stem == p.name, "a built-in's file is named after it"
        for field in (*REQUIRED, "style", "example_user", "example_reply"):
            assert getattr(p, field).strip(), f"{p.name}: {field} is empty"
        assert len(p.system_prompt) < 600, f"{p.name}: system prompt is {len(p.system_prompt)} characters"
        assert "\n" not in p.description and p.builtin
    assert {"assistant", "coach", "editor", "tutor", "chef", "listener", "code-reviewer"} <= set(personas())


def test_advice_like_personas_say_what_they_are_not():
    assert "988" in get_persona("listener").system_prompt  # crisis line guidance
    for name in ("financial-planner", "legal-explainer", "nutritionist", "fitness-trainer"):
        assert "not a" in get_persona(name).system_prompt, name


# --- user persona files ----------------------------------------------------------


def test_user_file_adds_and_overrides(anima_home):
    user_file(anima_home, "pirate.toml", PIRATE)
    user_file(
        anima_home, "mine.toml", 'name = "chef"\ndescription = "My chef."\nsystem_prompt = "Only vegan recipes."\n'
    )
    found = personas()
    assert len(found) == 31
    assert found["pirate"].system_prompt == "Talk like a pirate." and not found["pirate"].builtin
    assert found["chef"].system_prompt == "Only vegan recipes." and not found["chef"].builtin


@pytest.mark.parametrize(
    "text, message",
    [
        ("name = ", "not valid TOML"),
        ('name = "x"\ndescription = "d"\n', "lacks system_prompt"),
        ('name = "x"\ndescription = ""\nsystem_prompt = "p"\n', "lacks description"),
        ('name = "Bad Name"\ndescription = "d"\nsystem_prompt = "p"\n', "invalid name 'Bad Name'"),
        ('name = "x"\ndescription = "d"\nsystem_prompt = "p"\ntemperature = 0.3\n', "unknown keys: temperature"),
        ('name = "x"\ndescription = "d"\nsystem_prompt = "p"\nstyle = 3\n', "style must be text"),
    ],
)
def test_bad_files_are_bad_input(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(BadInput, match=message):
        load_persona(path)


def test_broken_user_file_is_skipped_with_a_warning(anima_home, caplog):
    user_file(anima_home, "pirate.toml", PIRATE)
    user_file(anima_home, "broken.toml", 'name = "../evil"\ndescription = "d"\nsystem_prompt = "p"\n')
    with caplog.at_level(logging.WARNING, logger="anima"):
        found = personas()
    assert "pirate" in found and len(found) == 31
    assert "broken.toml" in caplog.text and "invalid name" in caplog.text


def test_unknown_persona_suggests_a_close_name():
    with pytest.raises(BadInput, match="did you mean travel-planner") as info:
        get_persona("travel-planer")
    assert "anima personas list" in info.value.hint
    with pytest.raises(BadInput) as info:
        get_persona("zzzzzz")
    assert "did you mean" not in info.value.message


def test_add_persona_copies_it_under_its_name(tmp_path, anima_home):
    source = tmp_path / "whatever.toml"
    source.write_text(PIRATE)
    added = add_persona(source)
    assert added.path == anima_home / "personas" / "pirate.toml" and added.path.read_text() == PIRATE
    assert get_persona("pirate").path == added.path


# --- the CLI -----------------------------------------------------------------------


def test_cli_list_and_show():
    result = run("personas", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 30 and {"name", "description", "source"} <= set(rows[0])
    assert {r["source"] for r in rows} == {"built-in"}
    result = run("personas", "list")
    assert result.exit_code == 0 and "30 personas" in result.stdout and "meditation-guide" in result.stdout
    result = run("personas", "show", "chef", "--json")
    data = json.loads(result.stdout)
    assert data["name"] == "chef" and data["system_prompt"] and data["example_reply"] and data["source"] == "built-in"
    result = run("personas", "show", "chef")
    assert result.exit_code == 0 and "example, reply:" in result.stdout


def test_cli_show_unknown_is_one_line():
    result = run("personas", "show", "chefs")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        "error: unknown persona 'chefs'; did you mean chef? (`anima personas list` shows them all)"
    ]


def test_cli_use_sets_the_default_and_keeps_the_rest(anima_home):
    assert load_config().persona == "assistant"
    result = run("personas", "use", "chef")
    assert result.exit_code == 0, result.output
    assert load_config().persona == "chef"
    config = anima_home / "config.toml"
    config.write_text('# mine\nmodel = "small"\npersona = "coach"\n\n[generation]\nmax_tokens = 100\n')
    assert run("personas", "use", "historian").exit_code == 0
    text = config.read_text()
    assert text.startswith("# mine\n") and text.count("persona =") == 1
    assert tomllib.loads(text) == {"model": "small", "persona": "historian", "generation": {"max_tokens": 100}}
    config.write_text("[generation]\nmax_tokens = 100\n")  # no top-level keys yet
    assert run("personas", "use", "poet").exit_code == 1  # unknown: file untouched
    assert run("personas", "use", "poet").stderr.startswith("error: unknown persona 'poet'")
    assert run("personas", "use", "comic").exit_code == 0
    config_now = load_config()
    assert config_now.persona == "comic" and config_now.generation.max_tokens == 100


def test_cli_add_and_use_a_user_persona(tmp_path, anima_home):
    source = tmp_path / "pirate.toml"
    source.write_text(PIRATE)
    result = run("personas", "add", str(source))
    assert result.exit_code == 0 and "added persona pirate" in result.stdout
    rows = json.loads(run("personas", "list", "--json").stdout)
    assert (
        len(rows) == 31
        and {"name": "pirate", "description": "Talks like a pirate.", "style": "", "source": "user"} in rows
    )
    assert run("personas", "use", "pirate").exit_code == 0 and load_config().persona == "pirate"


@pytest.mark.parametrize("text", ["name = ", 'name = "x"\ndescription = "d"\n', None])
def test_cli_add_of_a_broken_or_missing_file_is_one_clear_error(tmp_path, anima_home, text):
    source = tmp_path / "p.toml"
    if text is not None:
        source.write_text(text)
    result = run("personas", "add", str(source))
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(source) in lines[0]
    assert not (anima_home / "personas").exists() or not list((anima_home / "personas").iterdir())


def test_ask_uses_the_default_persona_set_by_use():
    run("personas", "use", "chef")
    result = run("ask", "--backend", "fake", "hello", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["persona"] == "chef"


# --- a real-model smoke check of every persona (run by the lead / `make test`) -------


@pytest.mark.model
def test_every_persona_replies_with_the_real_model(link_models):
    link_models("default", "minilm")
    config = load_config()
    config.memory.learn = False  # this test is about the replies; learning has its own
    container = build(config)
    options = container.assistant.options(max_tokens=24, temperature=0)
    for name, persona in sorted(personas().items()):
        reply = container.assistant.reply(persona.example_user, persona=name, options=options)
        text = reply.text()
        assert text.strip(), f"{name}: empty reply"
        assert reply.turn.status == "ok" and reply.turn.persona == name, f"{name}: {reply.turn.status}"

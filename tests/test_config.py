import pytest

from anima.config import Config, config_path, data_dir, load_config, to_toml
from anima.errors import ConfigError


def write_config(home, text):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)


def test_defaults(anima_home):
    config = load_config()
    assert config.backend == "llama_cpp"
    assert config.model == "default"
    assert config.llama_cpp.n_ctx == 4096
    assert config_path() == anima_home / "config.toml"
    assert data_dir() == anima_home


def test_file_then_env_then_flags(anima_home, monkeypatch):
    write_config(anima_home, 'model = "small"\npersona = "coach"\n[generation]\nmax_tokens = 100\ntemperature = 0.1\n')
    config = load_config()
    assert (config.model, config.persona, config.generation.max_tokens) == ("small", "coach", 100)
    monkeypatch.setenv("ANIMA_MODEL", "/tmp/x.gguf")
    monkeypatch.setenv("ANIMA_GENERATION__MAX_TOKENS", "200")
    config = load_config()
    assert config.model == "/tmp/x.gguf"
    assert config.generation.max_tokens == 200
    assert config.generation.temperature == 0.1  # untouched keys of a section keep the file's value
    assert config.persona == "coach"
    assert load_config(model="flagged", persona=None).model == "flagged"  # None = flag not given


def test_xdg_dirs_without_anima_home(monkeypatch, tmp_path):
    monkeypatch.delenv("ANIMA_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert config_path() == tmp_path / "cfg" / "anima" / "config.toml"
    assert data_dir() == tmp_path / "data" / "anima"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model = ", "not valid TOML"),
        ('modle = "small"', "unknown config key 'modle'"),
        ("[llama_cpp]\nn_ctxx = 5", "unknown config key 'llama_cpp.n_ctxx'"),
        ("[llama_cpp]\nn_ctx = 10", "bad config value for 'llama_cpp.n_ctx'"),
        ('backend = "gpt"', "bad config value for 'backend'"),
        ("version = 99", "has version 99"),
        ('user = "../other"', "bad config value for 'user'"),
    ],
)
def test_bad_config_is_one_clear_error(anima_home, text, message):
    write_config(anima_home, text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        load_config()
    assert "\n" not in info.value.message.strip()


def test_anima_env_vars_that_are_not_settings_are_ignored(monkeypatch):
    monkeypatch.setenv("ANIMA_DEBUG", "1")
    monkeypatch.setenv("ANIMA_PASSPHRASE", "secret")
    assert load_config().model == "default"


def test_to_toml_round_trips():
    import tomllib

    data = Config().model_dump(mode="json")
    parsed = tomllib.loads(to_toml(data))
    expected = {k: v for k, v in data.items() if v is not None}
    for section, values in data.items():
        if isinstance(values, dict):
            expected[section] = {k: v for k, v in values.items() if v is not None}
    assert parsed == expected

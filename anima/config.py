"""Settings: defaults < TOML file < ANIMA_* environment < command-line flags.

The TOML file lives at `$ANIMA_HOME/config.toml`, else `$XDG_CONFIG_HOME/anima/config.toml`
(or `$ANIMA_CONFIG`). Data lives in `$ANIMA_HOME`, else `$XDG_DATA_HOME/anima`.
Nested keys use `__` in the environment: `ANIMA_LLAMA_CPP__N_CTX=8192`.
Several OpenAI-compatible servers with the same model: `base_urls = ["http://a:8000/v1",
"http://b:8000/v1"]` under `[openai_http]`, or comma-separated in the environment:
`ANIMA_OPENAI_HTTP__BASE_URLS=http://a:8000/v1,http://b:8000/v1`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from anima.errors import ConfigError
from anima.safety.data import HOLD_CHARS

CONFIG_VERSION = 1
USER_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"  # also a folder name: no "..", no "/"


def config_path() -> Path:
    if explicit := os.environ.get("ANIMA_CONFIG"):
        return Path(explicit)
    if home := os.environ.get("ANIMA_HOME"):
        return Path(home) / "config.toml"
    return Path(platformdirs.user_config_dir("anima")) / "config.toml"


def data_dir() -> Path:
    if home := os.environ.get("ANIMA_HOME"):
        return Path(home)
    return Path(platformdirs.user_data_dir("anima"))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LlamaCppSettings(_Section):
    n_ctx: int = Field(4096, ge=256, description="Context window in tokens; 4096 fits chat + memories in ~2 GB RAM.")
    n_threads: int | None = Field(
        None,
        ge=1,
        description=(
            "CPU threads for generation; default: every core while no other work (embedding, the guard) wants "
            "one, half of them while some does."
        ),
    )
    n_batch: int = Field(512, ge=8, description="Prompt tokens evaluated per batch.")
    verbose: bool = Field(False, description="Let llama.cpp print its own logs to stderr.")


class OpenAIHTTPSettings(_Section):
    base_url: str = Field("http://127.0.0.1:8080/v1", description="OpenAI-compatible API root, ending in /v1.")
    base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Several servers with the same model, instead of base_url: each request goes to the least busy "
        "one that answers, and moves on when one is down. All on this machine's network, or all outside it.",
    )
    api_key: str = Field("", description="Bearer key for the server, if it needs one.")
    model: str = Field("", description="Model name the server expects; default: the server's first model.")
    embed_model: str = Field("", description="Embedding model name on the server; default: the server's first model.")
    timeout: float = Field(120.0, gt=0, description="Seconds to wait for a reply before giving up.")

    @field_validator("base_urls", mode="before")
    @classmethod
    def _comma_separated(cls, urls: Any) -> Any:
        return [u.strip() for u in urls.split(",") if u.strip()] if isinstance(urls, str) else urls

    @field_validator("base_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        bad = [u for u in urls if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"not an http(s) URL: {bad[0]!r}; give a list, or URLs separated by commas")
        return urls

    @model_validator(mode="after")
    def _base_url_is_the_first(self) -> OpenAIHTTPSettings:
        # What names one server (the privacy checks, `anima doctor`) reads base_url: the first.
        if self.base_urls:
            if "base_url" in self.model_fields_set and self.base_url != self.base_urls[0]:
                raise ValueError("set base_url or base_urls, not both")
            self.base_url = self.base_urls[0]
        return self

    @property
    def urls(self) -> list[str]:
        return self.base_urls or [self.base_url]


class StoreSettings(_Section):
    encrypt: bool = Field(True, description="Encrypt each user's database at rest (SQLCipher).")
    vectors: Literal["auto", "sqlite-vec", "numpy"] = Field(
        "auto",
        description=(
            "Vector search: auto = numpy (exact, in memory, fastest here); sqlite-vec keeps the index in the file, "
            "not in memory."
        ),
    )
    url: str = Field(
        "",
        description="Empty: each user's SQLCipher file (the default). Or postgresql://role@host/db: a PostgreSQL "
        "server with pgvector, a schema per user (pip install 'anima[postgres]'); encrypt and vectors then do not "
        "apply.",
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: str) -> str:
        if url and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("store.url must be empty (SQLCipher) or start with postgresql://")
        return url


class MemorySettings(_Section):
    enabled: bool = Field(True, description="Keep every message and recall relevant ones into the prompt.")
    learn: bool = Field(True, description="Distil long-term memories from messages with the model, after each reply.")
    recall_k: int = Field(
        10,
        ge=0,
        le=50,
        description=(
            "Memories and past messages put into the prompt per turn (a recalled message's reply counts as one more)."
        ),
    )
    learn_model: str = Field(
        "",
        description=(
            "Model for learning and query expansion (e.g. small); default: the chat model, in a context of its own."
        ),
    )
    expand: bool = Field(
        False, description="Ask the model for extra search phrasings before recalling (slower, sometimes finds more)."
    )


class GuardSettings(_Section):
    enabled: bool = Field(
        True, description="Check every message and reply for hazards (MLCommons S1-S14) and prompt injection."
    )
    output: bool = Field(
        True, description="Also check the assistant's replies as they stream: each piece is read before it is shown."
    )
    hold_chars: int = Field(
        HOLD_CHARS,
        ge=1,
        le=2000,
        description=(
            "A streaming reply is shown in pieces of about this many characters (or a sentence), each checked first."
        ),
    )
    layer2: Literal["auto", "off", "always"] = Field(
        "auto", description="LLM guard (Llama Guard format): when the fast layer is unsure, never, or always."
    )
    probe: bool = Field(
        True,
        description=(
            "Read the chat model's own state with the trained probe (`anima guard train --probe`), "
            "when there is one for this model."
        ),
    )
    probe_layer: int = Field(14, ge=0, description="The chat model's block whose output the probe reads.")
    probe_threshold: float | None = Field(
        None, ge=0, le=1, description="P(unsafe) from the probe at which a message is unsafe (default: as trained)."
    )
    probe_fast_block: float = Field(
        0.9,
        ge=0,
        le=1,
        description="With the probe, the fast layer blocks a message on its own only from this score.",
    )
    llm_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of messages, the ones the fast layer is least sure of, that the LLM layer also reads.",
    )
    llm_model: str = Field(
        "", description="Model for the LLM guard, e.g. a Llama Guard 3 .gguf; default: the learner's model."
    )
    llm_format: Literal["auto", "prompted", "llama-guard"] = Field(
        "auto", description="auto: llama-guard when the model's name contains 'guard'."
    )
    llm_bias: float = Field(
        3.5,
        description=(
            "Logit gap unsafe-safe at which the LLM counts a message unsafe (0 for a real Llama Guard; 3.5 was fitted "
            "on JailbreakBench for the default model)."
        ),
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="Fast-layer score at which a message is unsafe; default: the trained one."
    )
    reply_threshold: float | None = Field(
        None, ge=0, le=1, description="Reply head's score at which a reply is unsafe; default: the trained one."
    )
    refusal: bool = Field(
        True,
        description=(
            "Also block a message the chat model itself would likely refuse (read from its first tokens, on the "
            "prompt its reply reads next; embedded models only). Off with layer2 = off."
        ),
    )
    refusal_threshold: float = Field(
        0.3, ge=0, le=1, description="P(the chat model's reply opens with a refusal) at which a message is unsafe."
    )
    policy: dict[str, Literal["block", "warn", "allow"]] = Field(
        default_factory=lambda: {"S6": "warn"}, description="Action per category (S1..S14); unlisted categories block."
    )
    injection: bool = Field(
        True, description="Remove instructions hidden in recalled memories and tool results; flag jailbreak framing."
    )

    @property
    def votes(self) -> bool:
        """Whether the chat model's own refusals are a vote (it needs the LLM layers on)."""
        return self.enabled and self.refusal and self.layer2 != "off"

    @field_validator("policy")
    @classmethod
    def _known_categories(cls, policy: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in policy if k not in {f"S{i}" for i in range(1, 15)}]
        if unknown:
            raise ValueError(f"unknown hazard categories {unknown}; use S1..S14")
        return policy


class PrivacySettings(_Section):
    remote: bool = Field(
        False, description="Allow a model server outside this machine and its private network (openai_http.base_url)."
    )
    redact: bool = Field(
        True,
        description=(
            "Before anything goes to a remote model: replace emails, phones, cards, addresses and known names with "
            "placeholders."
        ),
    )


class ToolsSettings(_Section):
    enabled: bool = Field(
        True, description="Let the model call tools (reminders, notes, calendar, documents, ...) during a turn."
    )
    max_steps: int = Field(
        1,
        ge=0,
        le=20,
        description=(
            "Rounds of tool calls in one chat turn before the model must answer (small models chain calls they should "
            "not: one round is safest; `anima do` plans longer work)."
        ),
    )
    timeout_s: float = Field(
        30.0, gt=0, description="A tool call that takes longer than this is abandoned and reported as an error."
    )
    documents: list[str] = Field(default_factory=list, description="Folders anima may index and search (read-only).")


class ProactiveSettings(_Section):
    quiet_hours: str = Field(
        "22:00-07:00",
        pattern=r"^(\d{1,2}:\d{2}-\d{1,2}:\d{2})?$",
        description="No notifications in this span (local time); empty for none.",
    )
    max_per_hour: int = Field(
        4, ge=0, description="At most this many notifications an hour; the rest wait in the inbox."
    )
    briefing_at: str = Field(
        "08:00", pattern=r"^(\d{1,2}:\d{2})?$", description="Time of the daily briefing; empty for none."
    )
    lookahead_days: int = Field(
        3,
        ge=0,
        le=60,
        description="Dates found in memories (birthdays, trips, deadlines) are raised this many days ahead.",
    )
    webhook: str = Field("", description="URL that receives each notification as JSON (POST); empty for none.")
    desktop: bool = Field(
        False, description="Also show notifications on the desktop (notify-send), where there is one."
    )
    tick_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds between the scheduler's checks under `anima serve` (`anima daemon` takes --interval).",
    )


class McpServerSettings(_Section):
    command: str = Field("", description="Program that speaks MCP over stdio.")
    args: list[str] = Field(default_factory=list, description="Its arguments.")
    url: str = Field("", description="Or: the URL of an MCP server over streamable HTTP.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the program.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'HTTP headers sent to `url`, e.g. Authorization = "Bearer ${ANIMA_MCP_KEY}"; ${VAR} is read from the '
            "environment."
        ),
    )


class GenerationSettings(_Section):
    max_tokens: int = Field(512, ge=1, description="Longest reply, in tokens.")
    temperature: float = Field(0.7, ge=0, le=2, description="0 is greedy (repeatable); higher is more varied.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling cut-off.")
    seed: int | None = Field(None, description="Fixed sampling seed, for repeatable replies.")


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANIMA_", env_nested_delimiter="__", extra="forbid")

    version: int = Field(CONFIG_VERSION, description="Config format version; older files are upgraded on load.")
    backend: Literal["llama_cpp", "openai_http", "fake"] = Field(
        "llama_cpp",
        description="Where replies come from: embedded llama.cpp, an OpenAI-compatible server, or scripted.",
    )
    model: str = Field("default", description="Registry name (`anima models list`) or a path to a .gguf file.")
    embedder: str = Field(
        "minilm", description='Registry name or .gguf path of the sentence embedder, or "remote" for the server\'s.'
    )
    persona: str = Field("assistant", description="Persona used when none is given (`/persona` in chat).")
    user: str = Field("local", pattern=USER_NAME, description="Whose data directory and conversation log to use.")
    history_turns: int = Field(6, ge=0, description="Recent turns of the conversation sent back to the model.")
    llama_cpp: LlamaCppSettings = Field(default_factory=LlamaCppSettings)
    openai_http: OpenAIHTTPSettings = Field(default_factory=OpenAIHTTPSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    proactive: ProactiveSettings = Field(default_factory=ProactiveSettings)
    mcp: dict[str, McpServerSettings] = Field(
        default_factory=dict, description="MCP servers whose tools join anima's, by name."
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # Earlier wins: flags, then environment, then the TOML file, then defaults.
        return (init_settings, env_settings, _TomlFile(settings_cls))

    @property
    def data_dir(self) -> Path:
        return data_dir()


class _TomlFile(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # required by the base class; __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return upgrade(read_toml(config_path()))


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", "fix the line it names, or delete the file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", "check its permissions and encoding") from exc
    except (
        ValueError,
        RecursionError,
    ) as exc:  # tomllib's own: an integer thousands of digits long, arrays nested thousands deep
        raise ConfigError(f"{path} is not valid TOML: {exc}", "fix the line it names, or delete the file") from exc


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older config file up to CONFIG_VERSION (no older format exists yet)."""
    version = data.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ConfigError(
            f"{config_path()} has version {version!r}; this anima reads up to {CONFIG_VERSION}", "upgrade anima"
        )
    return {**data, "version": CONFIG_VERSION}


def load_config(**flags: Any) -> Config:
    """Build the config; `flags` are command-line values (None means not given)."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return Config(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"unknown config key '{where}' (from {config_path()} or ANIMA_* env)",
                "remove it; `anima config show` lists the keys",
            ) from exc
        raise ConfigError(
            f"bad config value for '{where}': {err['msg']}", f"fix it in {config_path()} or the ANIMA_* env"
        ) from exc


def to_toml(data: dict[str, Any], _prefix: str = "") -> str:
    """A small TOML writer for the config's shape: scalars, then one table per section."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{_prefix}{k}]", to_toml(v, f"{_prefix}{k}.")]
    return "\n".join(line for line in lines if line is not None).strip("\n")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

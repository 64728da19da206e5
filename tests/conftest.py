"""Every test gets its own ANIMA_HOME in a temp dir and no ANIMA_* settings from the
machine. Tests marked `model` use the real GGUF files pulled by `make test` into the
user's data dir (found before ANIMA_HOME is redirected)."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

from anima.models import registry

REAL_MODELS_DIR = registry.models_dir()  # evaluated before any fixture moves ANIMA_HOME


@pytest.fixture(autouse=True)
def anima_home(tmp_path, monkeypatch) -> Path:
    for key in list(os.environ):
        if key.startswith("ANIMA_") and key != "ANIMA_MINILM_DIR":
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("ANIMA_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The guard needs trained heads; tests that want it use the `guard_heads` fixture.
    monkeypatch.setenv("ANIMA_GUARD__ENABLED", "false")
    return home


def real_model(name: str) -> Path:
    """Path of a pulled registry model; fails (not skips) when missing, because
    `make test` pulls them first and a silent skip would hide a broken set-up."""
    spec = registry.SPECS[name]
    path = REAL_MODELS_DIR / spec.filename
    if not path.exists():
        pytest.fail(f"model '{name}' is not pulled: run `anima models pull {name}` (make test does)")
    return path


@pytest.fixture
def link_models(anima_home):
    """Make pulled models visible inside the test's ANIMA_HOME (symlinks, no copies)."""

    def link(*names: str) -> None:
        target = anima_home / "models"
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            src = real_model(name)
            (target / src.name).symlink_to(src)
            stamp = src.with_name(src.name + ".verified")
            if stamp.exists():
                shutil.copy(stamp, target / stamp.name)

    return link


REAL_GUARD_DIR = REAL_MODELS_DIR / "guard"


@pytest.fixture
def real_guard_heads(anima_home, monkeypatch):
    """The guard heads `make test` trained (`anima guard train`), linked into this test's
    ANIMA_HOME, and the guard switched on."""
    from anima.safety.train import HEADS

    target = anima_home / "models" / "guard"
    target.mkdir(parents=True, exist_ok=True)
    for name in HEADS:
        if not (REAL_GUARD_DIR / name).exists():
            pytest.fail("the guard is not trained: run `anima guard train` (make test does)")
        (target / name).symlink_to(REAL_GUARD_DIR / name)
    monkeypatch.setenv("ANIMA_GUARD__ENABLED", "true")
    return target


@pytest.fixture
def store(anima_home):
    """The local user's real (encrypted) store in the test's ANIMA_HOME."""
    from anima.store import open_store

    s = open_store(anima_home, "local")
    yield s
    s.close()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """The URL of a real PostgreSQL server with pgvector, one for the whole session
    (tests/pg.py); skipped when the server's wheel is not installed."""
    from tests.pg import start_server

    yield from start_server(tmp_path_factory.mktemp("postgres"))


_pg_names = itertools.count()


@pytest.fixture(params=["sqlcipher", "postgres"])
def open_user(request, anima_home):
    """A function opening a user's store on the backend under test (fresh users each test)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""
    opened, names = [], {}  # on the one server, each test's users are new ones

    def open_(user: str = "ann"):
        name = names.setdefault(user, f"{user}_{next(_pg_names)}" if url else user)
        from anima.store import open_store

        opened.append(open_store(anima_home, name, url=url))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()
    if url:
        from anima.store.pg_db import drop_user

        for name in names.values():
            drop_user(url, name)

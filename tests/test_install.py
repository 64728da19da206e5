"""A llama.cpp build that cannot crash: the smoke test in a child process, and the one
place where the build flags live (scripts/llama_build.py)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from anima.models.smoke import NO_MODEL, interpret, run_smoke

ROOT = Path(__file__).resolve().parent.parent


def _build_script():
    spec = importlib.util.spec_from_file_location("llama_build", ROOT / "scripts" / "llama_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_python(tmp_path: Path, body: str) -> str:
    """An executable standing in for the venv's Python: it runs `body` whatever it is asked."""
    exe = tmp_path / "python"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def test_a_child_killed_by_a_signal_is_a_crash_with_the_fix(tmp_path):
    result = run_smoke(python=fake_python(tmp_path, "kill -SEGV $$"))
    assert result.crashed and not result.ok
    assert "SIGSEGV" in result.line() and "make rebuild-llama" in result.line()


def test_a_shell_reported_signal_counts_too():
    assert interpret(139, "", "Segmentation fault").crashed  # 128 + SIGSEGV
    assert interpret(-int(signal.SIGILL), "", "").detail.endswith("SIGILL")


def test_other_outcomes_are_not_crashes(tmp_path):
    ok = run_smoke(python=fake_python(tmp_path, 'echo "8 tokens from m.gguf in 0.3 s"'))
    assert ok.ok and ok.line() == "ok (8 tokens from m.gguf in 0.3 s)"
    missing = run_smoke(
        python=fake_python(tmp_path, f'echo "model default is not downloaded yet" >&2; exit {NO_MODEL}')
    )
    assert (
        not missing.ok and not missing.crashed and missing.line() == "not tested: model default is not downloaded yet"
    )
    broken = run_smoke(python=fake_python(tmp_path, 'echo "ValueError: bad" >&2; exit 1'))
    assert not broken.ok and not broken.crashed and "failed: ValueError: bad" in broken.line()


def test_a_hanging_child_is_stopped(tmp_path):
    result = run_smoke(python=fake_python(tmp_path, "sleep 30"), timeout=1)
    assert not result.ok and "no answer within 1 s" in result.line()


def test_the_smoke_child_without_a_model_says_so(anima_home):
    env = {**os.environ, "ANIMA_HOME": str(anima_home)}
    done = subprocess.run(
        [sys.executable, "-m", "anima.models.smoke"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == NO_MODEL and "not downloaded yet" in done.stderr


def test_build_flags_leave_out_amx_and_pin_a_version_pyproject_accepts():
    build = _build_script()
    if build.X86:
        for variant in ("native", "portable"):
            assert (
                "-mno-amx-tile" in build.FLAGS[variant]["CFLAGS"]
                and "-mno-amx-int8" in build.FLAGS[variant]["CXXFLAGS"]
            )
        assert "-DGGML_NATIVE=OFF" in build.FLAGS["portable"]["CMAKE_ARGS"]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("llama-cpp-python")]
    lower, upper = (part.lstrip("<>=") for part in spec.removeprefix("llama-cpp-python").split(","))
    version = tuple(int(x) for x in build.VERSION.split("."))
    assert tuple(int(x) for x in lower.split(".")) <= version < tuple(int(x) for x in upper.split("."))


def test_wheels_are_cached_per_variant_and_cpu(monkeypatch):
    build = _build_script()
    native, portable = build.wheel_dir("native"), build.wheel_dir("portable")
    assert native != portable and native.parent == portable.parent
    monkeypatch.setattr(build, "cpu_id", lambda: "another CPU")
    assert build.wheel_dir("native") != native and build.wheel_dir("portable") == portable


@pytest.mark.model
def test_the_installed_build_runs_here(link_models):
    """The real smoke test on the real default model: the build make installed must run."""
    link_models("default")
    result = run_smoke("default")
    assert result.ok, result.line()


def test_a_crashing_build_is_rebuilt_portable_and_a_second_crash_stops_with_one_line(monkeypatch, capsys):
    build = _build_script()
    installed: list[str] = []
    monkeypatch.setattr(build, "install", lambda python, variant: installed.append(variant))
    outcomes = iter(
        [(False, True, "CRASHES on this CPU (a test generation died from SIGILL)"), (True, False, "ok (8 tokens)")]
    )
    monkeypatch.setattr(build, "smoke", lambda python: next(outcomes))
    build.check("python")
    assert installed == ["portable"] and "portable build): ok" in capsys.readouterr().out

    installed.clear()
    monkeypatch.setattr(build, "smoke", lambda python: (False, True, "CRASHES on this CPU"))
    with pytest.raises(SystemExit) as stopped:
        build.check("python")
    assert (
        installed == ["portable"]
        and "crashes on this CPU even when built portable" in str(stopped.value)
        and "\n" not in str(stopped.value)
    )

    monkeypatch.setattr(build, "smoke", lambda python: (False, False, "test generation failed: ValueError: bad"))
    with pytest.raises(SystemExit, match="llama.cpp does not work: test generation failed"):
        build.check("python")
    monkeypatch.setattr(
        build, "smoke", lambda python: (False, False, "not tested: model 'default' is not downloaded yet")
    )
    build.check("python")  # no model yet is not a failure of the build

#!/usr/bin/env python3
"""Build llama-cpp-python so that it runs on the machine it was built on.

The one place where its build flags live (the Makefile and the README point here).

    python scripts/llama_build.py            install the native build (cached wheel)
    python scripts/llama_build.py --check    smoke-test it in a child process; if it dies
                                             from a signal, rebuild portable and test again
    python scripts/llama_build.py --portable install the portable build

Native is `-march=native` without AMX: many cloud VMs advertise AMX in /proc/cpuinfo
but fault on its tile instructions (`ldtilecfg` in ggml_backend_amx_mul_mat), and
llama.cpp only uses AMX for a few quantisations on Sapphire Rapids. Portable is the
x86-64-v3 level (AVX2, FMA, F16C), which every x86 server of the last ten years has.
Wheels are cached per flags and CPU in ~/.cache/anima/wheels, so a rebuild happens
only when the flags or the machine change. Standard library only: it runs before
anything else is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = "0.3.36"  # inside pyproject.toml's range; a test checks that it is
X86 = platform.machine().lower() in ("x86_64", "amd64")
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" if X86 else ""
FLAGS = {
    "native": {"CMAKE_ARGS": "-DGGML_NATIVE=ON", "CFLAGS": NO_AMX, "CXXFLAGS": NO_AMX},
    "portable": {
        "CMAKE_ARGS": "-DGGML_NATIVE=OFF"
        + (" -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" if X86 else ""),
        "CFLAGS": NO_AMX,
        "CXXFLAGS": NO_AMX,
    },
}
MARKER = ".llama-build"  # in the venv: which wheel is installed


def cpu_id() -> str:
    """What a native build depends on: the CPU's model name and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(dict.fromkeys(keep))


def wheel_dir(variant: str) -> Path:
    key = repr(
        (VERSION, FLAGS[variant], sys.version_info[:2], platform.machine(), cpu_id() if variant == "native" else "")
    )
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (
        cache
        / "anima"
        / "wheels"
        / f"llama-cpp-python-{VERSION}-{variant}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    )


def build(python: str, variant: str) -> Path:
    """The wheel for `variant`, built once (about 6 minutes on 2 cores)."""
    out = wheel_dir(variant)
    found = sorted(out.glob("llama_cpp_python-*.whl"))
    if found:
        return found[-1]
    env = {**os.environ, **FLAGS[variant]}
    print(
        f"building llama-cpp-python {VERSION} ({variant}: {' '.join(v for v in FLAGS[variant].values() if v)}); "
        "about 6 minutes on 2 cores",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            python,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-cache-dir",
            "--no-binary",
            "llama-cpp-python",
            f"llama-cpp-python=={VERSION}",
            "-w",
            tmp,
        ]
        if subprocess.run(cmd, env=env).returncode != 0:
            sys.exit(
                "error: building llama-cpp-python failed (see above); "
                "it needs gcc, g++ and cmake >= 3.21: install them and run `make` again"
            )
        out.mkdir(parents=True, exist_ok=True)
        (wheel,) = Path(tmp).glob("llama_cpp_python-*.whl")
        return Path(shutil.move(str(wheel), out / wheel.name))


def install(python: str, variant: str) -> None:
    wheel = build(python, variant)
    marker = Path(python).parent.parent / MARKER
    if marker.exists() and marker.read_text() == str(wheel):
        return
    pip = [python, "-m", "pip", "install", "--quiet"]
    if (
        subprocess.run(pip + ["--force-reinstall", "--no-deps", str(wheel)]).returncode
        or subprocess.run(pip + [str(wheel)]).returncode
    ):
        sys.exit("error: installing the llama-cpp-python wheel failed (see above)")
    marker.write_text(str(wheel))
    print(f"llama-cpp-python {VERSION} installed ({variant} build)")


def smoke(python: str) -> tuple[bool, bool, str]:
    """(ok, crashed, line) from `anima.models.smoke` run in the venv's Python."""
    code = "from anima.models.smoke import run_smoke; r = run_smoke(); print(int(r.ok), int(r.crashed), r.line())"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: could not run the smoke test: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    ok, crashed, line = done.stdout.strip().split(" ", 2)
    return ok == "1", crashed == "1", line


def check(python: str) -> None:
    ok, crashed, line = smoke(python)
    print(f"llama.cpp smoke test: {line}")
    if crashed:
        print("rebuilding llama-cpp-python with portable flags", flush=True)
        install(python, "portable")
        ok, crashed, line = smoke(python)
        print(f"llama.cpp smoke test (portable build): {line}")
    if crashed:
        sys.exit(
            "error: llama.cpp crashes on this CPU even when built portable; "
            'run anima on a model server instead: set backend = "openai_http" (see the README\'s Models section)'
        )
    if not ok and not line.startswith("not tested"):
        sys.exit(f"error: llama.cpp does not work: {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", default=sys.executable, help="the venv's Python (default: this one)")
    ap.add_argument("--portable", action="store_true", help="install the portable build")
    ap.add_argument(
        "--check", action="store_true", help="smoke-test the installed build; rebuild portable if it crashes"
    )
    args = ap.parse_args()
    if args.portable:
        install(args.python, "portable")
    elif not args.check:
        install(args.python, "native")
    if args.check:
        check(args.python)


if __name__ == "__main__":
    main()

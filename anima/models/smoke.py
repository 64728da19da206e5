"""Does the installed llama.cpp run on this CPU? A short generation in a child process.

Some CPUs advertise instructions their virtual machine does not allow (AMX tiles on
cloud VMs): a llama.cpp compiled for "native" then dies from SIGSEGV/SIGILL on its
first matrix multiply. Trying it in a child process turns that crash into one line.

    python -m anima.models.smoke [MODEL]   # the child: exit 0 ok, 3 no model, else error
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass

NO_MODEL = 3
REBUILD = "make rebuild-llama (or: python scripts/llama_build.py --portable)"


@dataclass(frozen=True)
class SmokeResult:
    ok: bool
    crashed: bool  # the child died from a signal: the build does not run on this CPU
    detail: str

    def line(self) -> str:
        if self.ok:
            return f"ok ({self.detail})"
        if self.crashed:
            return f"CRASHES on this CPU ({self.detail}); rebuild it: {REBUILD}"
        return self.detail


def run_smoke(model: str | None = None, python: str = sys.executable, timeout: float = 300.0) -> SmokeResult:
    """Run `python -m anima.models.smoke` and read how it ended."""
    cmd = [python, "-m", "anima.models.smoke"] + ([model] if model else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return SmokeResult(False, False, f"no answer within {timeout:.0f} s")
    return interpret(done.returncode, done.stdout, done.stderr)


def interpret(returncode: int, stdout: str, stderr: str) -> SmokeResult:
    # A signal shows as -N from subprocess, or 128+N when a shell was in between.
    signum = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 160 else 0
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return SmokeResult(False, True, f"a test generation died from {name}")
    last = (
        (stdout.strip().splitlines() or [""])[-1]
        if returncode == 0
        else (stderr.strip().splitlines() or ["no output"])[-1]
    )
    if returncode == 0:
        return SmokeResult(True, False, last)
    if returncode == NO_MODEL:
        return SmokeResult(False, False, f"not tested: {last}")
    return SmokeResult(False, False, f"test generation failed: {last}")


def main(argv: list[str]) -> int:
    import time

    from anima.errors import AnimaError

    try:
        from anima.config import load_config
        from anima.models.registry import resolve

        path = resolve(argv[0] if argv else load_config().model)
    except AnimaError as exc:
        print(exc, file=sys.stderr)
        return NO_MODEL
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=64, verbose=False)
    start = time.perf_counter()
    out = llm.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
    n = out["usage"]["completion_tokens"]
    print(f"{n} tokens from {path.name} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A real `anima serve` for the benches: its data dir, users and keys, the process, its
memory, and the streams it sends.

    home = new_home(path, config)          # config.toml, the models linked, no users yet
    key = add_user(home, "ana")            # `anima users add`, as a person would
    proc = start_anima(home, port, log)    # `anima serve` in its own process
    wait_ready(url + "/v1", proc=proc, log=log, what="anima serve")
    ...
    stop(proc)

Users' databases are keyed from key files in the data dir (mode 0600) unless a
passphrase is given; the OS keyring is never touched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx

from anima.errors import ModelUnavailable


@dataclass
class Home:
    path: Path
    env: dict[str, str]  # the environment every `anima` command of this home runs with


def anima_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "anima", *args]


def run_cli(cmd: list[str], env: dict, what: str) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelUnavailable(f"{what} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return done.stdout


def new_home(path: Path, config, passphrase: str | None = None) -> Home:
    """A data dir for `anima serve` with the bench's config; the models (and the guard's
    heads) are linked, not copied. No passphrase: each user gets a key file."""
    from anima.config import to_toml
    from anima.models.registry import models_dir

    path.mkdir(parents=True)
    if models_dir().is_dir():
        (path / "models").symlink_to(models_dir())
    (path / "config.toml").write_text(to_toml(config.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k != "ANIMA_PASSPHRASE"}
    env.update({"ANIMA_HOME": str(path), "ANIMA_NO_KEYRING": "1"})
    if passphrase:
        env["ANIMA_PASSPHRASE"] = passphrase
    return Home(path, env)


def add_user(home: Home, name: str) -> str:
    """`anima users add NAME`; returns the key it printed."""
    return run_cli(anima_cmd("users", "add", name), home.env, f"adding {name}").strip().splitlines()[-1]


def start_anima(home: Home, port: int, log: Path, max_waiting: int = 8) -> subprocess.Popen:
    """`anima serve` on loopback; its output is appended to `log`."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            anima_cmd("serve", "--port", str(port), "--max-waiting", str(max_waiting)),
            env=home.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def wait_ready(
    url: str,
    timeout: float = 180.0,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    what: str = "the reference server",
) -> None:
    """Wait for `url`/models to answer; a server that exits first is one clear line,
    with the last line it wrote to `log`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            said = [
                ln
                for ln in (log.read_text(errors="replace").splitlines() if log and log.exists() else [])
                if ln.strip()
            ]
            raise ModelUnavailable(
                f"{what} exited with code {proc.returncode}" + (f": {said[-1].strip()}" if said else ""),
                f"its full output is in {log}" if log else None,
            )
        try:
            if httpx.get(url + "/models", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ModelUnavailable(f"{url} did not come up in {timeout:.0f} s", f"its output is in {log}" if log else None)


def warm_up(url: str, key: str, model: str, open_stores: list[str] = ()) -> None:
    """Before the clock: one short generation (weights paged in, guard and embedder
    loaded), and each user's store opened (its key derivation), on every server alike
    as far as it has them."""
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}
    r = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=600)
    if r.status_code != 200:
        raise ModelUnavailable(f"warming up {url} failed: HTTP {r.status_code} {r.text[:160]}")
    for user_key in open_stores:  # anima's users: GET /api/memories opens the store
        httpx.get(
            url + "/api/memories", headers={"Authorization": f"Bearer {user_key}"}, timeout=120
        ).raise_for_status()


def stop(proc: subprocess.Popen) -> None:
    """Stop a server and wait for it: nothing of it runs while the next one is measured."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_clients(
    client: Callable[[int], None],
    clients: int,
    started: float,
    seconds: float,
    progress: Callable[[float], None] | None = None,
) -> None:
    """`client(n)` for n in range(clients), each on a thread of its own, until all end;
    `progress` hears the seconds since `started` (at most `seconds`) twice a second."""
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if progress:
            progress(min(seconds, time.monotonic() - started))
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process and all its descendants in MB (VmRSS in /proc);
    None once the process is gone."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            status = Path(f"/proc/{p}/status").read_text()
            children = [c for f in Path(f"/proc/{p}/task").glob("*/children") for c in f.read_text().split()]
        except OSError:  # gone meanwhile
            if p == pid:
                return None
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        todo += [int(c) for c in children]
    return round(total / 1024, 1)


# --- reading an OpenAI-style stream --------------------------------------------------


class StreamError(RuntimeError):
    """The stream broke after its 200: an `error` event, or no `data: [DONE]`."""


def sse_events(response: httpx.Response) -> Iterator[dict]:
    """The JSON events of a chat.completion stream, up to `data: [DONE]`."""
    for line in response.iter_lines():
        if not line.startswith("data:") or not line[5:].strip():
            continue
        if line[5:].strip() == "[DONE]":
            return
        event = json.loads(line[5:])
        if "error" in event:
            raise StreamError(str(event["error"])[:300])
        yield event
    raise StreamError("the stream ended without data: [DONE]")


def content_deltas(event: dict) -> int:
    """How many choices of a stream event carry text (one per generated token)."""
    return sum(1 for c in event.get("choices") or [] if (c.get("delta") or {}).get("content"))

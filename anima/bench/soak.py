"""`anima bench soak`: a real `anima serve` under mixed traffic for a bounded time.

A temp data dir holds `users` users, each with a key from `anima users add` and a store
keyed from a key file; `anima serve` runs on a free port with a small `max_waiting`, so
the queue fills and some requests get 429. Then `clients` threads (users taken in turn)
run for the given time, each picking its next step at random (seeded), thinking between:

    chat          POST /v1/chat/completions, the whole reply at once
    chat_stream   the same, streamed (SSE)
    tool_chat     a request a tool serves: "Remind me to water the plants tomorrow at 9."
    memory_*      add / list / search / edit / delete under /api/memories
    web           GET / and the static files it loads, /api/settings, /api/personas
    inbox         /api/inbox (marking an item), /api/reminders (list, add), /api/briefing

Every prompt and text is new: word lists combined, never repeated. After a 429 a client
waits what Retry-After says (within the time left).

Recorded, and what fails the run (`failures`, exit 1):
- per kind: answers by status class, latency p50/p95 of the 2xx answers. A 5xx, or a
  stream that broke after its 200 (an error event, no [DONE]), fails the run; the first
  few bodies are kept. A request with no answer at all (refused, reset) fails it too.
- each 429, and whether it carried Retry-After: one without fails the run.
- the server's resident memory (the process and its children), every few seconds:
  first, last, max, and the slope over the second half in MB a minute (reported).
- after the run, every file in the data dir (the server's log is one; links to the
  models are not followed) searched for each API key, each key's SHA-256, and each
  store key; a secret found anywhere but the file it belongs in (a hash in accounts.db,
  a store key in its own key file) fails the run.
- accounts.db (and its WAL) and the key files must be mode 0600 or stricter.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from anima.bench import percentile
from anima.bench.served import (
    Home,
    StreamError,
    add_user,
    free_port,
    new_home,
    rss_mb,
    run_clients,
    sse_events,
    start_anima,
    stop,
    wait_ready,
    warm_up,
)

KINDS = (
    "chat",
    "chat_stream",
    "tool_chat",
    "memory_add",
    "memory_list",
    "memory_search",
    "memory_edit",
    "memory_delete",
    "web",
    "inbox",
)
CLASSES = ("2xx", "4xx", "429", "5xx", "no answer")


@dataclass
class Call:
    kind: str
    status: int | None  # None: no HTTP answer
    ms: float
    retry_after: str | None = None
    error: str = ""  # a 5xx's body, what broke a stream, or the connection error

    @property
    def cls(self) -> str:
        if self.status is None:
            return "no answer"
        if self.status == 429:
            return "429"
        return "5xx" if self.status >= 500 or self.error else f"{self.status // 100}xx"


# --- texts that never repeat --------------------------------------------------------

ASKS = [
    "Give me one tip for",
    "In one sentence, how do I get better at",
    "What is a common mistake in",
    "Suggest a first step for",
    "What should a beginner know about",
    "Name one tool that helps with",
]
TOPICS = [
    "staying focused",
    "cooking rice",
    "running in the rain",
    "learning Spanish",
    "keeping houseplants alive",
    "saving money",
    "sleeping well",
    "public speaking",
    "writing emails",
    "baking bread",
    "fixing a bike chain",
    "planning a trip",
    "painting a room",
    "starting a garden",
    "reading more books",
    "packing light",
]
DETAILS = [
    "",
    " on a busy Monday",
    " with little time",
    " as a student",
    " at home",
    " on a budget",
    " with a toddler around",
    " after work",
]
WHO = [
    "My sister Ana",
    "My neighbour Tom",
    "My manager Priya",
    "My cousin Leo",
    "My friend Sam",
    "My dentist",
    "My son Max",
    "My colleague Jun",
]
VERBS = [
    "likes",
    "is allergic to",
    "is learning about",
    "gave me a book on",
    "recommended",
    "does not like",
    "talks a lot about",
]
THINGS = [
    "green tea",
    "chess",
    "jazz piano",
    "hiking boots",
    "Thai food",
    "old maps",
    "sourdough",
    "birdwatching",
    "tennis",
    "poetry",
    "cats",
    "sailing",
]
TASKS = [
    "water the plants",
    "call mum",
    "book the dentist",
    "pay the electricity bill",
    "buy oat milk",
    "return the library books",
    "send the invoice",
    "take the bins out",
    "charge the bike",
    "renew the passport",
    "email the landlord",
    "order printer ink",
]
WHENS = ["tomorrow at 9", "on Friday at 5pm", "in 2 hours", "next Monday at 8", "tomorrow at noon", "in 3 days at 10"]
PLEASE = ["Remind me to", "Please remind me to", "Can you remind me to", "Set a reminder to"]


class Texts:
    """A new text on every call: the word lists' combinations in turn, then the same
    with a number, so no two are alike. Safe to share between threads."""

    def __init__(self):
        self._n: Counter = Counter()
        self._lock = threading.Lock()

    def _pick(self, what: str, *lists: list[str]) -> tuple[list[str], str]:
        with self._lock:
            i = self._n[what]
            self._n[what] += 1
        words = []
        for options in lists:
            words.append(options[i % len(options)])
            i //= len(options)
        return words, f" (number {i + 1})" if i else ""

    def question(self) -> str:
        (ask, topic, detail), more = self._pick("question", ASKS, TOPICS, DETAILS)
        return f"{ask} {topic}{detail}?{more}"

    def fact(self) -> str:
        (who, verb, thing), more = self._pick("fact", WHO, VERBS, THINGS)
        return f"{who} {verb} {thing}.{more}"

    def task(self, whens: list[str] = WHENS) -> tuple[str, str, str]:
        """(please, what, when) of a reminder."""
        (what, when, please), more = self._pick("task", TASKS, whens, PLEASE)
        return please, what + more, when


# --- a client ----------------------------------------------------------------------


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


class Client:
    """One simulated user agent: its own connection, dice, and the memories it added."""

    def __init__(
        self,
        url: str,
        key: str,
        texts: Texts,
        rng: random.Random,
        note: Callable[[Call], None],
        stop_at: float,
        max_tokens: int,
        transport: httpx.BaseTransport | None = None,
    ):
        self.http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(600.0, connect=5.0),
            transport=transport,
        )
        self.texts, self.rng, self._note, self.stop_at, self.max_tokens = texts, rng, note, stop_at, max_tokens
        self.mine: list[int] = []  # memory ids this client added and has not deleted
        self.static: list[str] | None = None  # the page's files, found on the first visit

    def run(self, think: float) -> None:
        steps = [self.chat, self.chat_stream, self.tool_chat, self.memory, self.web, self.inbox]
        while time.monotonic() < self.stop_at:
            self.rng.choices(steps, weights=[2, 3, 1, 3, 1, 1])[0]()
            time.sleep(max(0.0, min(self.rng.expovariate(1 / think) if think else 0, self.stop_at - time.monotonic())))
        self.http.close()

    def note(self, call: Call) -> None:
        self._note(call)
        if call.status == 429:  # do as asked, within the time left
            try:
                wait = float(call.retry_after or 1)
            except ValueError:
                wait = 1.0
            time.sleep(max(0.0, min(wait, self.stop_at - time.monotonic())))

    def request(self, kind: str, method: str, path: str, **kw) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.note(Call(kind, None, _ms(start), error=f"{type(exc).__name__}: {exc}"))
            return None
        self.note(
            Call(
                kind,
                r.status_code,
                _ms(start),
                r.headers.get("retry-after"),
                r.text[:300] if r.status_code >= 500 else "",
            )
        )
        return r

    def chat(self, kind: str = "chat", text: str | None = None, stream: bool = False) -> None:
        body = {
            "model": "assistant",
            "messages": [{"role": "user", "content": text or self.texts.question()}],
            "max_tokens": self.max_tokens,
        }
        if not stream:
            self.request(kind, "POST", "/v1/chat/completions", json=body)
            return
        start = time.perf_counter()
        try:
            with self.http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                if r.status_code != 200:
                    r.read()
                    self.note(
                        Call(
                            kind,
                            r.status_code,
                            _ms(start),
                            r.headers.get("retry-after"),
                            r.text[:300] if r.status_code >= 500 else "",
                        )
                    )
                    return
                for _ in sse_events(r):
                    pass
        except StreamError as exc:
            self.note(Call(kind, 200, _ms(start), error=f"broken stream: {exc}"))
            return
        except (httpx.HTTPError, ValueError) as exc:
            self.note(Call(kind, None, _ms(start), error=f"{type(exc).__name__}: {exc}"))
            return
        self.note(Call(kind, 200, _ms(start)))

    def chat_stream(self) -> None:
        self.chat("chat_stream", stream=True)

    def tool_chat(self) -> None:
        please, what, when = self.texts.task()
        self.chat("tool_chat", f"{please} {what} {when}.", stream=self.rng.random() < 0.5)

    def memory(self) -> None:
        op = self.rng.choice(["add", "add", "list", "search", "edit", "delete"]) if self.mine else "add"
        if op == "add":
            r = self.request(
                "memory_add",
                "POST",
                "/api/memories",
                json={"text": self.texts.fact(), "kind": self.rng.choice(["fact", "preference", "event", "plan"])},
            )
            if r is not None and r.status_code == 201:
                self.mine.append(r.json()["id"])
        elif op == "list":
            self.request("memory_list", "GET", "/api/memories")
        elif op == "search":
            self.request("memory_search", "GET", "/api/memories/search", params={"q": self.rng.choice(THINGS + TOPICS)})
        elif op == "edit":
            self.request(
                "memory_edit", "PATCH", f"/api/memories/{self.rng.choice(self.mine)}", json={"text": self.texts.fact()}
            )
        else:
            self.request(
                "memory_delete", "DELETE", f"/api/memories/{self.mine.pop(self.rng.randrange(len(self.mine)))}"
            )

    def web(self) -> None:
        """What a browser fetches to show the page (no cache), and the page's first calls."""
        r = self.request("web", "GET", "/")
        if self.static is None and r is not None and r.status_code == 200:
            self.static = re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
        for path in list(self.static or []):
            r = self.request("web", "GET", path)
            if r is not None and r.status_code == 200 and path.endswith(".js"):  # the modules it imports
                self.static += [
                    p
                    for p in (f"/static/{m}" for m in re.findall(r'from "\./([\w.-]+\.js)"', r.text))
                    if p not in self.static
                ]
        self.request("web", "GET", "/api/settings")
        self.request("web", "GET", "/api/personas")

    def inbox(self) -> None:
        r = self.request("inbox", "GET", "/api/inbox")
        items = r.json() if r is not None and r.status_code == 200 else []
        if items and self.rng.random() < 0.5:
            item, action = self.rng.choice(items), self.rng.choice(["done", "dismiss", "snooze"])
            self.request(
                "inbox",
                "POST",
                f"/api/inbox/{item['id']}/{action}",
                **({"json": {"until": "in 2 hours"}} if action == "snooze" else {}),
            )
        step = self.rng.choice(["reminders", "remind", "briefing"])
        if step == "remind":  # some come due during the run, so the inbox fills
            _, what, when = self.texts.task(["in 1 minute", "in 2 minutes", "tomorrow at 7", "in 5 hours"])
            self.request("inbox", "POST", "/api/reminders", json={"text": what, "at": when})
        else:
            self.request("inbox", "GET", f"/api/{step}")


def drive(
    url: str,
    keys: list[str],
    clients: int,
    seconds: float,
    think: float = 0.5,
    max_tokens: int = 32,
    seed: int = 0,
    transport: httpx.BaseTransport | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[Call]:
    """`clients` threads, users' keys taken in turn, for `seconds` (requests in flight
    at the end finish); returns every call."""
    calls: list[Call] = []
    lock, texts = threading.Lock(), Texts()
    started = time.monotonic()

    def note(call: Call) -> None:
        with lock:
            calls.append(call)

    def one(n: int) -> None:
        Client(
            url,
            keys[n % len(keys)],
            texts=texts,
            rng=random.Random(seed * 1000 + n),
            note=note,
            stop_at=started + seconds,
            max_tokens=max_tokens,
            transport=transport,
        ).run(think)

    run_clients(one, clients, started, seconds, progress)
    if progress:
        progress(seconds)
    return calls


def summarise(calls: list[Call]) -> dict:
    kinds = {}
    for kind in KINDS:
        mine = [c for c in calls if c.kind == kind]
        classes = Counter(c.cls for c in mine)
        ok = [c.ms for c in mine if c.cls == "2xx"]
        kinds[kind] = {
            "requests": len(mine),
            **{k: classes.get(k, 0) for k in CLASSES},
            "p50_ms": percentile(ok, 0.5),
            "p95_ms": percentile(ok, 0.95),
        }
    broken = [c for c in calls if c.cls == "5xx"]
    limited = [c for c in calls if c.cls == "429"]
    lost = [c for c in calls if c.cls == "no answer"]
    return {
        "requests": len(calls),
        "kinds": kinds,
        "server_errors": {
            "count": len(broken),
            "examples": [{"kind": c.kind, "status": c.status, "body": c.error} for c in broken[:5]],
        },
        "no_answer": {"count": len(lost), "examples": [{"kind": c.kind, "error": c.error} for c in lost[:5]]},
        "rate_limited": {
            "count": len(limited),
            "with_retry_after": sum(1 for c in limited if c.retry_after),
            "without_retry_after": sum(1 for c in limited if not c.retry_after),
        },
    }


# --- the server's memory, secrets and key files ----------------------------------------


def sample_rss(pid: int, every: float, done: threading.Event, samples: list[tuple[float, float]]) -> None:
    """Append (seconds since start, MB) every `every` seconds until `done` or the process is gone."""
    started = time.monotonic()
    while True:
        mb = rss_mb(pid)
        if mb is None:
            return
        samples.append((round(time.monotonic() - started, 1), mb))
        if done.wait(every):
            return


def memory_trend(samples: list[tuple[float, float]]) -> dict:
    """First, last and max MB; the least-squares slope over the second half, MB a minute."""
    if not samples:
        return {"samples": 0, "first_mb": None, "last_mb": None, "max_mb": None, "slope_mb_per_min": None}
    half = [(t / 60, mb) for t, mb in samples if t >= samples[-1][0] / 2]
    slope = None
    if len(half) >= 2:
        mt, mm = sum(t for t, _ in half) / len(half), sum(mb for _, mb in half) / len(half)
        spread = sum((t - mt) ** 2 for t, _ in half)
        slope = round(sum((t - mt) * (mb - mm) for t, mb in half) / spread, 2) if spread else None
    return {
        "samples": len(samples),
        "first_mb": samples[0][1],
        "last_mb": samples[-1][1],
        "max_mb": max(mb for _, mb in samples),
        "slope_mb_per_min": slope,
    }


def secrets_of(home: Home, keys: dict[str, str]) -> list[tuple[str, str, set[str]]]:
    """(what, secret, the files it belongs in) for every secret of the data dir."""
    found = []
    for user, key in keys.items():
        found.append((f"API key of {user}", key, set()))
        found.append(
            (f"hash of {user}'s API key", hashlib.sha256(key.encode()).hexdigest(), {"accounts.db", "accounts.db-wal"})
        )
    for f in sorted((home.path / "keys").glob("*.key")):
        found.append((f"store key of {f.stem}", f.read_text().strip(), {f"keys/{f.name}"}))
    if passphrase := home.env.get("ANIMA_PASSPHRASE"):
        found.append(("store passphrase", passphrase, set()))
    return found


def find_secrets(root: Path, secrets: list[tuple[str, str, set[str]]]) -> tuple[int, list[dict]]:
    """Every file under `root` (links not followed) searched for each secret; returns
    how many files were searched and each (file, secret) found outside where it belongs."""
    searched, hits = 0, []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            data, rel = path.read_bytes(), path.relative_to(root).as_posix()
            searched += 1
            hits += [
                {"file": rel, "secret": what}
                for what, secret, home in secrets
                if secret and rel not in home and secret.encode() in data
            ]
    return searched, hits


def key_file_modes(root: Path) -> list[dict]:
    """accounts.db (and its WAL) and every key file: the mode, and whether only the owner
    may read it."""
    paths = [root / "accounts.db", root / "accounts.db-wal", *sorted((root / "keys").glob("*.key"))]
    return [
        {
            "file": p.relative_to(root).as_posix(),
            "mode": f"{p.stat().st_mode & 0o777:04o}",
            "ok": not p.stat().st_mode & 0o077,
        }
        for p in paths
        if p.exists()
    ]


def failures(result: dict) -> list[str]:
    """What makes the run fail, one line each (empty: it passed)."""
    found = []
    if n := result["server_errors"]["count"]:
        found.append(f"{n} server error(s): a 5xx or a stream broken after its 200")
    if n := result["no_answer"]["count"]:
        found.append(f"{n} request(s) got no answer at all")
    if n := result["rate_limited"]["without_retry_after"]:
        found.append(f"{n} 429(s) without Retry-After")
    found += [f"{h['secret']} found in {h['file']}" for h in result["secrets"]["hits"]]
    found += [f"{m['file']} is mode {m['mode']}, not 0600" for m in result["key_files"] if not m["ok"]]
    if result["server_exit"] is not None:
        found.append(f"the server exited during the run (code {result['server_exit']})")
    return found


def run_soak(
    config,
    minutes: float = 10,
    clients: int = 8,
    users: int = 2,
    max_waiting: int = 2,
    think: float = 0.5,
    max_tokens: int = 32,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    seconds = minutes * 60
    with tempfile.TemporaryDirectory(prefix="anima-soak-") as tmp:
        home = new_home(Path(tmp) / "home", config)
        keys = {f"user{u + 1}": add_user(home, f"user{u + 1}") for u in range(users)}
        port, log = free_port(), home.path / "anima-serve.log"
        url = f"http://127.0.0.1:{port}"
        proc = start_anima(home, port, log, max_waiting)
        samples: list[tuple[float, float]] = []
        try:
            wait_ready(url + "/v1", proc=proc, log=log, what="anima serve")
            warm_up(url, next(iter(keys.values())), "assistant", open_stores=list(keys.values()))
            done = threading.Event()
            sampler = threading.Thread(
                target=sample_rss, args=(proc.pid, min(5.0, max(0.5, seconds / 30)), done, samples), daemon=True
            )
            sampler.start()
            started = time.monotonic()
            calls = drive(
                url,
                list(keys.values()),
                clients=clients,
                seconds=seconds,
                think=think,
                max_tokens=max_tokens,
                seed=seed,
                progress=lambda s: progress and progress("soak (s)", int(s), int(seconds)),
            )
            elapsed = time.monotonic() - started
            done.set()
            sampler.join()
            exit_code = proc.poll()
        finally:
            stop(proc)
        secrets = secrets_of(home, keys)
        searched, hits = find_secrets(home.path, secrets)
        said = log.read_text(errors="replace").splitlines()
        result = {
            "model": config.model if config.backend != "fake" else "fake",
            "backend": config.backend,
            "minutes": minutes,
            "clients": clients,
            "users": users,
            "max_waiting": max_waiting,
            "think_s": think,
            "max_tokens": max_tokens,
            "seed": seed,
            "duration_s": round(elapsed, 1),
            **summarise(calls),
            "rss": memory_trend(samples),
            "secrets": {"searched_files": searched, "secrets": len(secrets), "hits": hits},
            "key_files": key_file_modes(home.path),
            "server_exit": exit_code,
        }
        if result["server_errors"]["count"] or exit_code is not None:
            result["server_log_tail"] = said[-40:]
    result["requests_per_s"] = round(result["requests"] / elapsed, 2) if elapsed else None
    result["failures"] = failures(result)
    return result

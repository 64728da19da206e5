"""`anima bench faults`: kill -9 `anima serve` at random moments, restart it on the same
data dir, and check that nothing it acknowledged was lost.

One temp data dir, two users with keys, their stores keyed from key files. Each round
starts `anima serve`, checks (`verify`), then runs a random mix (seeded) of:

    chat       streamed chat turns; a turn whose stream reached [DONE] was logged
    writes     POST /api/memories, PATCH of an acknowledged one, POST /api/reminders
    learning   chat turns, each followed by a pause longer than the server's quiet time,
               so that its learner distils memories from them
    ingest     `anima memory ingest` of a small ChatGPT-style export: a process of its own
               writing to the same store, killed with the server
    scheduler  reminders due a few seconds later: the server's scheduler puts each in the
               inbox (its reminders job runs at start and then each full minute)

and at a random moment kills the server (and an ingest in progress) with SIGKILL.
After each restart, and at the end:
- every acknowledged write is there: each memory added, with its last acknowledged
  text (a PATCH cut by the kill may have landed or not); each reminder added; each chat
  turn (its user message in its conversation); each ingested message (found by a word
  only it holds);
- each store opens: a request works, and `anima memory list` works;
- no reminder fired twice: at most one inbox item per one-off reminder;
and at the end, every reminder due more than `MISSED` ago has fired.
Each kill is counted under what was in flight at that moment: a request of an activity
(the learning activity's requests are chats); learning: the server quiet for its
`quiet_s` and fewer messages learned (/api/health) than chat turns completed; an ingest
process; scheduler: a reminder of ours due and not yet in the inbox (the job itself
takes milliseconds once a minute: this is the window in which a kill can hurt it).
Every notification the scheduler pushes goes to a webhook receiver of ours: an item
pushed twice fails the run too.

With `servers=2` (and `store_url`, one PostgreSQL), two `anima serve` processes share the
data dir and the store, each request goes to one of them at random, and each kill takes
one of them while the other serves on: scheduled jobs must still fire once, the learner's
queue (in the store) survives, and every check runs through both.
A lost write, a double or missed fire, a double push, or a store that does not open fails
the run (`failures`, exit 1).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import signal
import string
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import httpx

from anima.bench.served import (
    Home,
    StreamError,
    add_user,
    anima_cmd,
    free_port,
    new_home,
    sse_events,
    start_anima,
    stop,
    wait_ready,
)
from anima.bench.soak import WHENS, Texts
from anima.errors import AnimaError
from anima.tools.reminders import local_now

ACTIVITIES = ("chat", "writes", "learning", "ingest", "scheduler")
MISSED = timedelta(minutes=3)  # a reminder due this long ago has met several scheduler runs


@dataclass
class Ledger:
    """What the server acknowledged with a 2xx (and `anima memory ingest` with exit 0)."""

    memories: dict[tuple[str, int], set[str]] = field(default_factory=dict)  # (user, id) -> the texts it may hold
    reminders: dict[tuple[str, int], str] = field(default_factory=dict)  # (user, id) -> text
    turns: list[tuple[str, int, str]] = field(default_factory=list)  # (user, conversation, user message)
    ingested: list[tuple[str, str]] = field(default_factory=list)  # (user, a word only that message holds)
    due: dict[tuple[str, int], datetime] = field(default_factory=dict)  # reminders set to come due during the run
    fired: set[tuple[str, int]] = field(default_factory=set)  # reminders seen in the inbox
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def counts(self) -> dict[str, int]:
        return {
            "memories": len(self.memories),
            "reminders": len(self.reminders),
            "chat_turns": len(self.turns),
            "ingested_messages": len(self.ingested),
        }


# --- the checks ----------------------------------------------------------------------


class _NoAnswer(Exception):
    pass


def _get(http: httpx.Client, path: str, **params):
    try:
        r = http.get(path, params=params)
    except httpx.HTTPError as exc:
        raise _NoAnswer(f"GET {path}: {type(exc).__name__}: {exc}") from exc
    if r.status_code != 200:
        raise _NoAnswer(f"GET {path} answered {r.status_code}: {r.text[:200]}")
    return r.json()


def verify(url: str, keys: dict[str, str], ledger: Ledger) -> dict[str, list[str]]:
    """Every acknowledged write present, each store answering, no reminder fired twice.
    A memory's text found is what it holds from now on (an uncertain PATCH settles)."""
    lost, doubles, unopened = [], [], []
    for user, key in keys.items():
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
            try:
                held = {m["id"]: m["text"] for m in _get(http, "/api/memories/export")["memories"]}
                reminders = {r["id"]: r["text"] for r in _get(http, "/api/reminders", all="true")}
                inbox = _get(http, "/api/inbox", all="true")
                with ledger.lock:
                    memories = [(k, v) for k, v in ledger.memories.items() if k[0] == user]
                    turns = [t for t in ledger.turns if t[0] == user]
                    ingested = [w for u, w in ledger.ingested if u == user]
                    ours = [(k, v) for k, v in ledger.reminders.items() if k[0] == user]
                for (_, mid), texts in memories:
                    if held.get(mid) in texts:
                        ledger.memories[(user, mid)] = {held[mid]}
                    else:
                        lost.append(
                            f"{user}: memory {mid} ({sorted(texts)[0]!r}) "
                            + (f"holds {held[mid]!r}" if mid in held else "is gone")
                        )
                lost += [
                    f"{user}: reminder {rid} ({text!r}) is "
                    + ("gone" if rid not in reminders else f"now {reminders[rid]!r}")
                    for (_, rid), text in ours
                    if reminders.get(rid) != text
                ]
                for _, conversation, text in turns:
                    r = http.get(f"/api/conversations/{conversation}")
                    if r.status_code != 200 or not any(t["user_text"] == text for t in r.json()):
                        lost.append(
                            f"{user}: chat turn {text!r} is not in conversation {conversation} (HTTP {r.status_code})"
                        )
                for word in ingested:
                    if not any(word in h["text"] for h in _get(http, "/api/memories/search", q=word, k=5)):
                        lost.append(f"{user}: the ingested message with {word!r} is not found")
            except _NoAnswer as exc:
                unopened.append(f"{user}: {exc}")
                continue
        fired = Counter(
            i["data"].get("reminder_id") for i in inbox if i["kind"] == "reminder" and not i["data"].get("every")
        )
        doubles += [f"{user}: reminder {rid} has {n} inbox items" for rid, n in fired.items() if n > 1]
        with ledger.lock:
            ledger.fired |= {(user, rid) for rid in fired}
    return {"lost": lost, "double_fires": doubles, "unopened": unopened}


def memory_lists(home: Home, users: list[str]) -> list[str]:
    """`anima memory list` for each user, side by side; the ones that failed, with why."""
    procs = {
        u: subprocess.Popen(
            anima_cmd("memory", "list", "--json"),
            env={**home.env, "ANIMA_USER": u},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for u in users
    }
    failed = []
    for user, proc in procs.items():
        _, said = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failed.append(
                f"{user}: `anima memory list` exited {proc.returncode}: "
                f"{(said.strip().splitlines() or ['no output'])[-1]}"
            )
    return failed


def chatgpt_export(lines: list[str]) -> list[dict]:
    """A conversations.json as ChatGPT exports it: one conversation, user and assistant in turn."""
    start = time.time() - 86400
    mapping = {
        f"m{i}": {
            "message": {
                "id": f"m{i}",
                "author": {"role": "assistant" if i % 2 else "user"},
                "content": {"parts": [line]},
                "create_time": start + i,
            }
        }
        for i, line in enumerate(lines)
    }
    return [{"title": "imported", "mapping": mapping}]


# --- one server's life -----------------------------------------------------------------


class Round:
    """The activities against one running server, until it is killed."""

    def __init__(
        self,
        urls: list[str],
        home: Home,
        keys: dict[str, str],
        ledger: Ledger,
        texts: Texts,
        rng: random.Random,
        scratch: Path,
        quiet_s: float = 2.0,
    ):
        self.urls, self.home, self.keys, self.ledger, self.texts, self.scratch, self.quiet_s = (
            urls,
            home,
            keys,
            ledger,
            texts,
            scratch,
            quiet_s,
        )
        self.rng = rng
        self.done = threading.Event()  # the kill is coming: no new requests
        self.killed = False
        self.lock = threading.Lock()
        self.busy: Counter = Counter()  # activity -> requests (or processes) in flight
        self.ingesting: subprocess.Popen | None = None
        self.turns = 0  # chat turns completed: each is one message for the learners
        self.learned = 0  # messages the learners finished, from /api/health
        self.last_chat = time.monotonic()  # when the last chat request ended
        self.errors: list[str] = []  # failures while the server was up (not the kill's)

    @contextlib.contextmanager
    def doing(self, activity: str):
        with self.lock:
            self.busy[activity] += 1
        try:
            yield
        finally:
            with self.lock:
                self.busy[activity] -= 1

    def error(self, what: str) -> None:
        if not self.killed:
            self.errors.append(what)

    def http(self, user: str) -> httpx.Client:
        """A client of one of the servers, chosen at random for each use."""
        return httpx.Client(
            base_url=random.choice(self.urls),
            headers={"Authorization": f"Bearer {self.keys[user]}"},
            timeout=httpx.Timeout(600.0, connect=5.0),
        )

    def pause(self, rng: random.Random, low: float, high: float) -> None:
        self.done.wait(rng.uniform(low, high))

    def run(self, activities: list[str], seconds: float) -> tuple[list[str], list[threading.Thread]]:
        """Run `activities` for `seconds`; returns what was in flight at the end, and the threads."""
        threads = [
            threading.Thread(target=getattr(self, a), args=(random.Random(self.rng.random()),), daemon=True)
            for a in activities
        ]
        threads.append(threading.Thread(target=self.watch, daemon=True))
        for t in threads:
            t.start()
        time.sleep(seconds)
        return self.in_flight(), threads

    def in_flight(self) -> list[str]:
        now = local_now()
        with self.lock, self.ledger.lock:
            found = {a for a, n in self.busy.items() if n}
            quiet = (
                not self.busy["chat"] and time.monotonic() - self.last_chat >= self.quiet_s
            )  # the learners work only then
            if quiet and self.turns > self.learned:
                found.add("learning")
            if any(when <= now and key not in self.ledger.fired for key, when in self.ledger.due.items()):
                found.add("scheduler")
        return sorted(found)

    def watch(self) -> None:
        """Every quarter second: the learners' progress, and the inbox while a reminder of ours is due."""
        base = None
        with httpx.Client(timeout=5) as http:
            while not self.done.wait(0.25):
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    done = sum(
                        (http.get(url + "/api/health").json().get("learning") or {}).get("done", 0) for url in self.urls
                    )
                    base = done if base is None else base  # a server that lives on counts from before this round
                    self.learned = done - base
                    now = local_now()
                    with self.ledger.lock:
                        waiting = {
                            u
                            for (u, rid), when in self.ledger.due.items()
                            if when <= now and (u, rid) not in self.ledger.fired
                        }
                    for user in waiting:
                        items = http.get(
                            self.urls[0] + "/api/inbox",
                            params={"all": "true"},
                            headers={"Authorization": f"Bearer {self.keys[user]}"},
                        ).json()
                        with self.ledger.lock:
                            self.ledger.fired |= {
                                (user, i["data"].get("reminder_id")) for i in items if i["kind"] == "reminder"
                            }

    # --- the activities; each runs until `done` ---

    def _stream(self, http: httpx.Client, text: str) -> int | None:
        """A streamed chat turn; its conversation when the stream reached [DONE]."""
        with self.doing("chat"):
            conversation = self._stream_once(http, text)
        with self.lock:
            self.last_chat = time.monotonic()
            self.turns += conversation is not None
        return conversation

    def _stream_once(self, http: httpx.Client, text: str) -> int | None:
        body = {"model": "assistant", "messages": [{"role": "user", "content": text}], "max_tokens": 24, "stream": True}
        try:
            with http.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    r.read()
                    self.error(f"chat: HTTP {r.status_code}: {r.text[:200]}")
                    return None
                conversation = None
                for event in sse_events(r):
                    conversation = conversation or (event.get("anima") or {}).get("conversation")
                return conversation
        except (httpx.HTTPError, StreamError, ValueError) as exc:
            self.error(f"chat: {type(exc).__name__}: {exc}")
            return None

    def chat(self, rng: random.Random) -> None:
        while not self.done.is_set():
            user, text = rng.choice(list(self.keys)), self.texts.question()
            with self.http(user) as http:
                conversation = self._stream(http, text)
            if conversation:
                with self.ledger.lock:
                    self.ledger.turns.append((user, conversation, text))
            self.pause(rng, 0.1, 0.6)

    def learning(self, rng: random.Random) -> None:
        while not self.done.is_set():
            user, fact = rng.choice(list(self.keys)), self.texts.fact()
            with self.http(user) as http:  # the request is a chat; learning follows in the quiet after it
                conversation = self._stream(http, f"Something to remember: {fact}")
            if conversation:
                with self.ledger.lock:
                    self.ledger.turns.append((user, conversation, f"Something to remember: {fact}"))
            self.pause(rng, self.quiet_s + 0.3, self.quiet_s + 1.5)

    def _write(self, http: httpx.Client, method: str, path: str, body: dict) -> dict | None:
        with self.doing("writes"):
            try:
                r = http.request(method, path, json=body)
            except httpx.HTTPError as exc:
                self.error(f"writes: {method} {path}: {type(exc).__name__}: {exc}")
                return None
        if r.status_code >= 300:
            self.error(f"writes: {method} {path}: HTTP {r.status_code}: {r.text[:200]}")
            return None
        return r.json()

    def writes(self, rng: random.Random) -> None:
        while not self.done.is_set():
            user, dice = rng.choice(list(self.keys)), rng.random()
            with self.ledger.lock:
                mine = [mid for (u, mid) in self.ledger.memories if u == user]
            with self.http(user) as http:
                if dice < 0.25 and mine:
                    mid, text = rng.choice(mine), self.texts.fact()
                    with self.ledger.lock:
                        self.ledger.memories[(user, mid)] = self.ledger.memories[(user, mid)] | {
                            text
                        }  # in flight: either may hold
                    if self._write(http, "PATCH", f"/api/memories/{mid}", {"text": text}) is not None:
                        with self.ledger.lock:
                            self.ledger.memories[(user, mid)] = {text}
                elif dice < 0.75:
                    text = self.texts.fact()
                    if (made := self._write(http, "POST", "/api/memories", {"text": text})) is not None:
                        with self.ledger.lock:
                            self.ledger.memories[(user, made["id"])] = {text}
                else:
                    _, what, when = self.texts.task(WHENS)
                    if (made := self._write(http, "POST", "/api/reminders", {"text": what, "at": when})) is not None:
                        with self.ledger.lock:
                            self.ledger.reminders[(user, made["id"])] = what
            self.pause(rng, 0.05, 0.4)

    def scheduler(self, rng: random.Random) -> None:
        while not self.done.is_set():
            user, (_, what, _) = rng.choice(list(self.keys)), self.texts.task()
            due = (local_now() + timedelta(seconds=rng.uniform(1, 8))).replace(microsecond=0)
            with self.http(user) as http:
                if (
                    made := self._write(http, "POST", "/api/reminders", {"text": what, "at": due.isoformat()})
                ) is not None:
                    with self.ledger.lock:
                        self.ledger.reminders[(user, made["id"])] = what
                        self.ledger.due[(user, made["id"])] = due
            self.pause(rng, 0.5, 2.0)

    def ingest(self, rng: random.Random) -> None:
        while not self.done.is_set():
            user = rng.choice(list(self.keys))
            words = ["".join(rng.choices(string.ascii_lowercase, k=12)) for _ in range(rng.randint(2, 6))]
            path = self.scratch / f"ingest-{words[0]}.json"
            path.write_text(json.dumps(chatgpt_export([f"{self.texts.fact()} The code word is {w}." for w in words])))
            with self.doing("ingest"):
                with self.lock:
                    if self.done.is_set():
                        return
                    self.ingesting = subprocess.Popen(
                        anima_cmd("memory", "ingest", str(path)),
                        env={**self.home.env, "ANIMA_USER": user},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                _, said = self.ingesting.communicate()
                code = self.ingesting.returncode
            if code == 0:
                with self.ledger.lock:
                    self.ledger.ingested += [(user, w) for w in words]
            else:
                self.error(f"ingest: exit {code}: {(said.strip().splitlines() or ['no output'])[-1]}")

    def kill(self, proc: subprocess.Popen, threads: list[threading.Thread]) -> None:
        """SIGKILL the server and an ingest in progress, as a crash would."""
        self.killed = True
        with self.lock:
            self.done.set()
            os.kill(proc.pid, signal.SIGKILL)
            if self.ingesting is not None and self.ingesting.poll() is None:
                self.ingesting.kill()
        proc.wait()
        for t in threads:
            t.join(timeout=60)


# --- the run -------------------------------------------------------------------------------


class Pushes:
    """A webhook receiver on loopback: every notification the servers push, kept."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def doubled(self) -> list[str]:
        """Items pushed more than once (an item: its kind, title, creation time and id)."""
        seen = Counter((p.get("kind"), p.get("title"), p.get("created"), p.get("id")) for p in self.received)
        return [f"{kind} {title!r} (item {i}) pushed {n} times" for (kind, title, _, i), n in seen.items() if n > 1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_faults(
    config,
    kills: int = 20,
    max_round: float = 6.0,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    servers: int = 1,
    store_url: str = "",
) -> dict:
    """`servers` processes of `anima serve` on one data dir (and, with `store_url`, one
    PostgreSQL), each request sent to one of them at random; each kill takes one of them
    (in turn) while the others serve on, and it is restarted on the next round."""
    rng, texts, ledger = random.Random(seed), Texts(), Ledger()
    activities = {a: {"rounds": 0, "kills_in_flight": 0} for a in ACTIVITIES}
    rounds, checks = [], []
    problems: dict[str, list[str]] = {
        "lost": [],
        "double_fires": [],
        "double_pushes": [],
        "missed_fires": [],
        "unopened": [],
        "memory_list": [],
    }
    errors: list[str] = []
    idle_kills = 0
    started = time.monotonic()
    pushes = Pushes()
    # The scheduler checks every 2 s, so reminders fire inside the short rounds; every
    # notification is pushed (no quiet hours, no rate limit) to our receiver.
    proactive = config.proactive.model_copy(
        update={"tick_s": 2.0, "webhook": pushes.url, "quiet_hours": "", "max_per_hour": 100_000}
    )
    config = config.model_copy(update={"proactive": proactive})
    if store_url:
        config = config.model_copy(update={"store": config.store.model_copy(update={"url": store_url})})
    # Users named afresh for each run: on a shared PostgreSQL, their schemas are new ones.
    run_id = "".join(random.Random().choices(string.ascii_lowercase, k=6))
    with tempfile.TemporaryDirectory(prefix="anima-faults-") as tmp:
        home = new_home(Path(tmp) / "home", config)
        keys = {f"{u}-{run_id}": add_user(home, f"{u}-{run_id}") for u in ("user1", "user2")}
        logs = [home.path / f"anima-serve-{i}.log" for i in range(servers)]
        procs: list[subprocess.Popen | None] = [None] * servers
        urls = [""] * servers

        def start(i: int, n: int) -> bool:
            """Start server i; False when it does not come up."""
            port = free_port()
            proc, urls[i] = start_anima(home, port, logs[i]), f"http://127.0.0.1:{port}"
            try:
                wait_ready(urls[i] + "/v1", timeout=300, proc=proc, log=logs[i], what=f"anima serve ({i + 1})")
            except AnimaError as exc:
                stop(proc)
                problems["unopened"].append(f"after kill {n}: server {i + 1} did not start: {exc}")
                return False
            procs[i] = proc
            return True

        def check(n: int) -> None:
            """Every acknowledged write, seen through each server."""
            found: dict[str, list[str]] = {}
            for url in urls:
                for name, lines in verify(url, keys, ledger).items():
                    found.setdefault(name, []).extend(lines)
            found["memory_list"] = memory_lists(home, list(keys))
            for name, lines in found.items():
                problems[name] += [f"after kill {n}: {line}" for line in lines]
            checks.append({"after_kill": n, **{name: len(lines) for name, lines in found.items()}})

        def restart(n: int) -> bool:
            if not all(start(i, n) for i in range(servers) if procs[i] is None):
                return False
            check(n)
            return True

        try:
            for n in range(kills):
                if not restart(n):
                    break
                chosen = sorted(rng.sample(ACTIVITIES, rng.randint(1, len(ACTIVITIES))))
                seconds = round(rng.uniform(0.3, max_round), 2)
                victim = n % servers  # each in turn
                this = Round(
                    list(urls),
                    home,
                    keys=keys,
                    ledger=ledger,
                    texts=texts,
                    rng=random.Random(rng.random()),
                    scratch=Path(tmp),
                )
                in_flight, threads = this.run(chosen, seconds)
                this.kill(procs[victim], threads)
                procs[victim] = None
                for a in chosen:
                    activities[a]["rounds"] += 1
                for a in in_flight:
                    activities[a]["kills_in_flight"] += 1
                idle_kills += not in_flight
                errors += this.errors
                rounds.append(
                    {
                        "kill": n + 1,
                        "server": victim + 1,
                        "activities": chosen,
                        "after_s": seconds,
                        "in_flight": in_flight,
                        "acknowledged": ledger.counts(),
                    }
                )
                if progress:
                    progress("kills", n + 1, kills)
            else:
                if restart(kills):
                    now = local_now()
                    problems["missed_fires"] = sorted(
                        f"{u}: reminder {rid} due {when:%H:%M:%S} never fired"
                        for (u, rid), when in ledger.due.items()
                        if when < now - MISSED and (u, rid) not in ledger.fired
                    )
        finally:
            for proc in procs:
                if proc is not None:
                    stop(proc)
            pushes.close()
            if store_url:
                _drop_users(store_url, list(keys))
    problems["double_pushes"] = pushes.doubled()
    due = [k for k, when in ledger.due.items() if when <= local_now()]
    result = {
        "model": config.model if config.backend != "fake" else "fake",
        "backend": config.backend,
        "servers": servers,
        "store": "postgresql" if store_url else "sqlcipher",
        "kills": len(rounds),
        "seed": seed,
        "max_round_s": max_round,
        "duration_s": round(time.monotonic() - started, 1),
        "activities": activities,
        "kills_with_nothing_in_flight": idle_kills,
        "acknowledged": ledger.counts(),
        "scheduler": {
            "set": len(ledger.due),
            "due": len(due),
            "fired": sum(1 for k in due if k in ledger.fired),
            "pushed": len(pushes.received),
        },
        "problems": problems,
        "checks": checks,
        "errors_while_up": {"count": len(errors), "examples": errors[:5]},
        "rounds": rounds,
    }
    result["failures"] = failures(result)
    return result


def _drop_users(url: str, users: list[str]) -> None:
    """The run's users' schemas and roles, gone from the server."""
    from anima.store.pg_db import drop_user

    for user in users:
        with contextlib.suppress(AnimaError):
            drop_user(url, user)


def failures(result: dict) -> list[str]:
    """What makes the run fail, one line each (empty: it passed)."""
    p = result["problems"]
    found = [f"{len(p['lost'])} acknowledged write(s) lost"] if p["lost"] else []
    found += [f"{len(p['double_fires'])} reminder(s) fired twice"] if p["double_fires"] else []
    found += [f"{len(p['missed_fires'])} reminder(s) never fired"] if p["missed_fires"] else []
    found += [f"{len(p['double_pushes'])} notification(s) pushed twice"] if p.get("double_pushes") else []
    found += (
        [f"a store did not open {len(p['unopened']) + len(p['memory_list'])} time(s)"]
        if p["unopened"] or p["memory_list"]
        else []
    )
    return found

"""The scheduler: jobs kept in the user's store, run by `tick(now)`.

    Scheduler(store, config, clock=None, deliver=None).tick(now) -> new inbox items
    .start() / .stop()    tick every `interval` seconds in a background thread
    .run()                the same loop in the calling thread (`anima daemon`)

A tick runs every job whose time has come (each records its next run before it runs, so
a job fires once even if it or anima then fails), wakes snoozed items, then pushes the
pending inbox items the gate lets through (marked sent before they are delivered).
Several processes may tick on one store (two `anima serve` on one PostgreSQL): each run
of a job and each push is taken by a conditional UPDATE, so exactly one of them does it.

Jobs survive restarts in the `jobs` table: one that came due while anima was off runs at
the next tick; a daily one (the briefing) is listed in `missed` and its item says it was
missed, as does each late reminder. An error in one job is logged and kept in the table;
the other jobs and the loop go on. So is a job that hangs: after `job_timeout` seconds it
is recorded as failed and left behind (Python cannot kill a thread), the tick goes on,
and it is not started again while that run is still going.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Callable

from anima.proactive import gate, inbox, triggers
from anima.proactive.inbox import Item
from anima.proactive.notify import Notifier
from anima.recurrence import localize
from anima.tools import in_thread
from anima.tools.reminders import local_now, show

log = logging.getLogger("anima.proactive")
GRACE = timedelta(minutes=5)  # a job this much later than its time was missed


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[..., list[Item]]  # (store, now, settings, late) -> new items, as in `triggers`
    every: timedelta | None = None  # run this often...
    at: str | None = None  # ...or daily at "HH:MM" (local time)

    def following(self, now: datetime) -> datetime:
        """Its next time after now: the next round multiple of `every` since midnight (each
        full minute, each full hour), or the next `at`."""
        if self.every is not None:
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            return midnight + ((now - midnight) // self.every + 1) * self.every
        wall = datetime.combine(now.date(), time.fromisoformat(self.at.zfill(5)))
        if wall <= now.replace(tzinfo=None):
            wall += timedelta(days=1)
        return localize(wall, now)


def default_jobs(settings) -> list[Job]:
    """`settings`: the config's `proactive` section."""
    jobs = [
        Job("reminders", triggers.due_reminders, every=timedelta(minutes=1)),
        Job("dates", triggers.memory_dates, every=timedelta(hours=1)),
        Job("goals", triggers.goal_checkins, at=settings.briefing_at or "09:00"),
    ]
    if settings.briefing_at:
        jobs.append(Job("briefing", triggers.daily_briefing, at=settings.briefing_at))
    return jobs


class Scheduler:
    def __init__(
        self,
        store,
        config,
        clock: Callable[[], datetime] | None = None,
        deliver: Callable[[Item], None] | None = None,
        jobs: list[Job] | None = None,
        interval: float = 30.0,
        job_timeout: float = 60.0,
    ):
        self.store = store
        self.settings = config.proactive
        self.clock = clock or local_now
        self.deliver = deliver or Notifier(self.settings, store)
        self.jobs = jobs if jobs is not None else default_jobs(self.settings)
        self.interval = interval
        self.job_timeout = job_timeout
        self._running: dict[str, concurrent.futures.Future] = {}  # a job that overran its time, still going
        self.missed: list[tuple[str, datetime]] = []  # (job, when it was due) for jobs run late
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the jobs table ---

    def _saved(self) -> dict[str, str]:
        return self.store.jobs.next_runs()

    def _save(self, name: str, next_run: datetime, last_run: datetime | None = None, error: str | None = None) -> None:
        self.store.jobs.save(name, next_run.isoformat(), last_run and last_run.isoformat(), error)

    def jobs_state(self) -> list[dict]:
        """Each job's next run, last run and last error (for `anima doctor` and tests)."""
        return self.store.jobs.all()

    # --- one tick ---

    def tick(self, now: datetime | None = None) -> list[Item]:
        """Run what is due, once; push what the gate allows. Returns the new inbox items."""
        now = now or self.clock()
        saved, added = self._saved(), []
        for job in self.jobs:
            if job.name not in saved:  # a new job: every-so-often ones run now, daily ones at their time
                self.store.jobs.create(job.name, (now if job.every is not None else job.following(now)).isoformat())
                saved = self._saved()  # as made, here or by another process sharing the store
            due = datetime.fromisoformat(saved[job.name])
            if due > now:
                continue
            late = due if job.at and now - due > GRACE else None  # reminders say for themselves
            if late is not None:
                self.missed.append((job.name, late))
                log.info("job %s was due %s: missed while anima was off; running it now", job.name, show(late))
            if job.name in self._running and not self._running[job.name].done():
                continue  # its last run hangs still: not a second one beside it
            # Taken, and moved on, before it runs: it fires once, even with another process
            # ticking on the same store (which then finds it taken, and skips it).
            if not self.store.jobs.claim(job.name, saved[job.name], job.following(now).isoformat(), now.isoformat()):
                continue
            try:
                added += self._run(job, now, late)
            except Exception as exc:  # one job's failure must not stop the others
                log.exception("job %s failed", job.name)
                self._save(job.name, job.following(now), now, f"{type(exc).__name__}: {exc}")
        inbox.wake(self.store, now)
        self.push(now)
        return [inbox.get(self.store, i.id) for i in added]

    def _run(self, job: Job, now: datetime, late: datetime | None) -> list[Item]:
        """The job in a thread of its own, waited for at most `job_timeout` seconds."""
        future = in_thread(f"anima-job-{job.name}", job.run, self.store, now, self.settings, late)
        try:
            return future.result(timeout=self.job_timeout)
        except concurrent.futures.TimeoutError:
            self._running[job.name] = future
            raise TimeoutError(
                f"did not finish in {self.job_timeout:g} s; left running, not started again until it ends"
            ) from None

    def push(self, now: datetime) -> list[Item]:
        """Deliver the pending new items the gate lets through, oldest first; returns them."""
        pending = [i for i in reversed(inbox.items(self.store, "new", limit=500)) if i.notify == "pending"]
        sent = gate.sent_since(self.store, now - timedelta(hours=1))
        streaks: dict[str, int] = {}
        delivered = []
        for item in pending:
            if item.kind not in streaks:
                streaks[item.kind] = gate.streak(self.store, item.kind, now)
            verdict, why = gate.decide(item, now, self.settings, sent, streaks[item.kind])
            if verdict == "hold":
                continue
            if verdict == "skip":
                log.info("not pushing inbox item %s: %s", item.id, why)
                inbox.update(self.store, item.id, notify="skipped")
                continue
            # Recorded before delivery, and only while still pending: of two processes, one delivers it.
            if not inbox.update(self.store, item.id, {"notify": "pending"}, notify="sent", notified_at=now.isoformat()):
                continue
            sent += 1
            item = inbox.get(self.store, item.id)
            try:
                self.deliver(item)
            except Exception:
                log.exception("delivering inbox item %s failed", item.id)
            delivered.append(item)
        return delivered

    # --- the loop ---

    def run(self, report: Callable[[list[Item]], None] | None = None) -> None:
        """Tick every `interval` seconds until `stop()`, handing each tick's new items to
        `report`; a failed tick is logged, and the loop goes on."""
        while not self._stop.is_set():
            try:
                added = self.tick()
                if report is not None:
                    report(added)
            except Exception:
                log.exception("scheduler tick failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="anima-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

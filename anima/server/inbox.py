"""REST for the proactive side, each user on their own store:

    GET  /api/inbox[?all=true]              new items (all: every item), newest first
    POST /api/inbox/{id}/done|dismiss       mark one
    POST /api/inbox/{id}/snooze             {"until": "tomorrow at 9"} (default: in 1 hour)
    GET  /api/briefing                      today's briefing, made now
    GET  /api/reminders[?all=true]          reminders, soonest first
    POST /api/reminders                     {"text": "call mum", "at": "tomorrow at 9"} -> 201

`start_schedulers(server)` runs a Scheduler for each user with an active key (or the
configured user when there are none), for `anima serve`.
"""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from anima.proactive import Scheduler, inbox
from anima.proactive.triggers import briefing
from anima.tools import reminders as rm


class SnoozeIn(BaseModel):
    until: str = Field(
        "in 1 hour",
        min_length=1,
        max_length=200,
        description="When the item comes back: 'tomorrow at 9', 'in 2 hours'...",
    )


class ReminderIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    at: str = Field(
        min_length=1,
        max_length=200,
        description="'tomorrow at 9', 'in 2 hours', 'Friday at 5pm', 'every Monday at 9'...",
    )


def item_id():
    return Path(ge=1, le=2**63 - 1, description="An id from GET /api/inbox.")


def inbox_router(server, user: Callable[..., str]) -> APIRouter:
    """`server`: the app's Server (per-user containers); `user`: its auth dependency."""
    router = APIRouter(prefix="/api")

    def store(who: str):
        return server.container(who).store

    @router.get("/inbox")
    def api_inbox(all: bool = False, who: str = Depends(user)) -> list[dict]:
        return [i.to_dict() for i in inbox.list_items(store(who), rm.local_now(), all=all)]

    @router.post("/inbox/{item_id}/done")
    def api_done(item_id: int = item_id(), who: str = Depends(user)) -> dict:
        return inbox.done(store(who), item_id, rm.local_now()).to_dict()

    @router.post("/inbox/{item_id}/dismiss")
    def api_dismiss(item_id: int = item_id(), who: str = Depends(user)) -> dict:
        return inbox.dismiss(store(who), item_id, rm.local_now()).to_dict()

    @router.post("/inbox/{item_id}/snooze")
    def api_snooze(body: SnoozeIn | None = None, item_id: int = item_id(), who: str = Depends(user)) -> dict:
        return inbox.snooze(store(who), item_id, (body or SnoozeIn()).until, rm.local_now()).to_dict()

    @router.get("/briefing")
    def api_briefing(who: str = Depends(user)) -> dict:
        container = server.container(who)
        item = briefing(container.store, rm.local_now(), container.config.proactive.lookahead_days)
        return {"title": item.title, "body": item.body, "lines": item.data["lines"]}

    @router.get("/reminders")
    def api_reminders(all: bool = False, who: str = Depends(user)) -> list[dict]:
        return [r.to_dict() for r in rm.list_reminders(store(who), all)]

    @router.post("/reminders", status_code=201)
    def api_remind(body: ReminderIn, who: str = Depends(user)) -> dict:
        return rm.add_reminder(store(who), body.text, body.at, rm.local_now()).to_dict()

    return router


def start_schedulers(server) -> list[Scheduler]:
    """A running Scheduler per served user; stop each with `.stop()`."""
    names = sorted({a.name for a in server.accounts.list() if not a.revoked}) or [server.config.user]
    schedulers = []
    for name in names:
        container = server.container(name)
        scheduler = Scheduler(container.store, container.config, interval=container.config.proactive.tick_s)
        scheduler.start()
        schedulers.append(scheduler)
    return schedulers

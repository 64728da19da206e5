"""Goals: a title, why it matters, a due date, ordered milestones and progress.

Progress is derived from the milestones when a goal has any (2 of 4 done = 50), else
set by hand (0-100); a goal marked done is 100. Status: active | done | dropped.
The scheduler's check-ins read `open_goals(store)`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from anima.errors import BadInput, NotFound
from anima.timeparse import find_times
from anima.tools import Arg, Tool, ToolContext, tool

STATUSES = ("active", "done", "dropped")


def _naive(now: datetime) -> datetime:
    """timeparse works on local wall-clock times without a zone."""
    return now.astimezone().replace(tzinfo=None) if now.tzinfo else now


def parse_due(phrase: str, now: datetime) -> str:
    """A due date from English ("next Friday", "in 3 weeks", "2026-12-01", "next month"
    = its last day) as YYYY-MM-DD; never in the past."""
    now = _naive(now)
    spans = find_times(phrase, now)
    if not spans:
        raise BadInput(
            f"cannot read a date in '{phrase}'", "try 'next Friday', 'in 3 weeks', '25 December 2026' or 2026-12-25"
        )
    due = (spans[0].end - timedelta(microseconds=1)).date()  # a day, or the last day of a week/month/year
    if due < now.date():
        raise BadInput(
            f"'{phrase}' is {due}, in the past", "give a later date, with the year if needed ('December 2026')"
        )
    return due.isoformat()


def get_goal(store, goal_id: int) -> dict:
    """One goal: id, title, why, due, status, progress, milestones [{n, title, done}], created_at, updated_at."""
    goal = store.goals.get(goal_id)
    if goal is None:
        raise NotFound(f"no goal with id {goal_id}", "see them with `anima goals list`")
    return _shown(goal)


def _shown(goal: dict) -> dict:
    """A goal as the tools show it: milestones [{n, title, done}], progress from them when it has any."""
    steps = goal["milestones"]
    goal["milestones"] = [{"n": s["position"], "title": s["title"], "done": s["done_at"] is not None} for s in steps]
    if goal["status"] == "done":
        goal["progress"] = 100
    elif goal["milestones"]:
        goal["progress"] = round(100 * sum(m["done"] for m in goal["milestones"]) / len(goal["milestones"]))
    return goal


def add_goal(
    store, title: str, why: str = "", due: str | None = None, milestones: list[str] = (), now: datetime | None = None
) -> dict:
    """`due`: English or YYYY-MM-DD, resolved against `now`."""
    title = title.strip()
    if not title:
        raise BadInput("a goal needs a title", "say what you want to achieve")
    due_day = parse_due(due, now or datetime.now()) if due else None
    steps = [m.strip() for m in milestones if m.strip()]
    return get_goal(store, store.goals.add(title, why.strip(), due_day, steps))


def list_goals(store, status: str | None = "active") -> list[dict]:
    """Goals with that status (all when None), soonest due first, then oldest."""
    if status is not None and status not in STATUSES:
        raise BadInput(f"unknown status '{status}'", f"use one of: {', '.join(STATUSES)}")
    return [_shown(g) for g in store.goals.list(status)]


def open_goals(store) -> list[dict]:
    """Active goals, each with keys id, title, progress, due, milestones (and why, status)."""
    return list_goals(store, "active")


def add_milestone(store, goal_id: int, title: str) -> dict:
    if not title.strip():
        raise BadInput("a milestone needs a title", "say what the step is")
    with store.transaction():
        get_goal(store, goal_id)
        store.goals.add_milestone(goal_id, title.strip())
    return get_goal(store, goal_id)


def complete_milestone(store, goal_id: int, milestone: int | str, done: bool = True) -> dict:
    """Mark a milestone done (or not): by its number (1, 2, ...) or a word of its title."""
    with store.transaction():
        steps = get_goal(store, goal_id)["milestones"]
        if isinstance(milestone, int) or str(milestone).strip().isdigit():
            found = [m for m in steps if m["n"] == int(milestone)]
        else:
            found = [m for m in steps if str(milestone).strip().lower() in m["title"].lower()]
        if len(found) != 1:
            listing = "; ".join(f"{m['n']}. {m['title']}" for m in steps) or "none yet"
            raise NotFound(
                f"goal {goal_id} has {'no' if not found else 'more than one'} milestone matching '{milestone}'",
                f"its milestones: {listing}",
            )
        store.goals.set_milestone_done(goal_id, found[0]["n"], done)
    return get_goal(store, goal_id)


def set_progress(store, goal_id: int, percent: int) -> dict:
    """Progress by hand, for a goal without milestones."""
    if not 0 <= percent <= 100:
        raise BadInput(f"progress must be 0-100, not {percent}", "give a percentage")
    with store.transaction():
        if get_goal(store, goal_id)["milestones"]:
            raise BadInput(f"goal {goal_id}'s progress comes from its milestones", "mark a milestone done instead")
        store.goals.update(goal_id, progress=percent)
    return get_goal(store, goal_id)


def set_status(store, goal_id: int, status: str) -> dict:
    if status not in STATUSES:
        raise BadInput(f"unknown status '{status}'", f"use one of: {', '.join(STATUSES)}")
    with store.transaction():
        get_goal(store, goal_id)
        store.goals.update(goal_id, status=status)
    return get_goal(store, goal_id)


def describe(goal: dict) -> str:
    """One line for a person or a model: '#3 Run a marathon: 50%, due 2026-10-04 (next: Run 20 km)'."""
    line = f"#{goal['id']} {goal['title']}: {goal['progress']}%"
    if goal["due"]:
        line += f", due {goal['due']}"
    if goal["status"] != "active":
        line += f" [{goal['status']}]"
    pending = [m["title"] for m in goal["milestones"] if not m["done"]]
    if pending and goal["status"] == "active":
        line += f" (next: {pending[0]})"
    return line


# --- for the model ---------------------------------------------------------------------------


def tools(ctx: ToolContext) -> list[Tool]:
    store = ctx.store

    def goal_add(
        title: Annotated[str, Arg("the goal, e.g. 'Run a marathon'")],
        why: Annotated[str, Arg("why it matters to the user")] = "",
        due: Annotated[str, Arg("when, e.g. 'in 3 months' or '2026-10-04'")] = "",
        milestones: Annotated[list[str] | None, Arg("steps, in order")] = None,
    ) -> str:
        """Create a goal the user wants to reach, with optional steps (milestones) and due date."""
        goal = add_goal(
            store, title, why=why, due=due or None, milestones=[str(m) for m in milestones or []], now=ctx.now()
        )
        return "added " + describe(goal)

    def goal_list(status: Annotated[str, Arg(enum=STATUSES)] = "active") -> str:
        """List the user's goals with progress, due date and next step."""
        goals = list_goals(store, status)
        return "\n".join(describe(g) for g in goals) or f"no {status} goals"

    def goal_update(
        goal_id: int,
        milestone_done: Annotated[str, Arg("number or words of the milestone finished")] = "",
        new_milestone: Annotated[str, Arg("a new step to add")] = "",
        progress: Annotated[int | None, Arg("0-100, for goals without milestones")] = None,
        status: Annotated[str, Arg(enum=STATUSES)] = "",
    ) -> str:
        """Update a goal: mark a milestone done, add a milestone, set progress 0-100, or set status."""
        if not (milestone_done or new_milestone or progress is not None or status):
            raise BadInput("nothing to change", "give milestone_done, new_milestone, progress or status")
        goal = get_goal(store, goal_id)
        if new_milestone:
            goal = add_milestone(store, goal_id, new_milestone)
        if milestone_done:
            goal = complete_milestone(store, goal_id, milestone_done)
        if progress is not None:
            goal = set_progress(store, goal_id, progress)
        if status:
            goal = set_status(store, goal_id, status)
        return "updated " + describe(goal)

    return [
        tool(goal_add, side_effects=True, triggers=r"\bgoals?\b|\bmilestones?\b", own_words=True),
        tool(goal_list, triggers=r"\bgoals?\b|\bprogress\b", own_words=True),
        tool(goal_update, side_effects=True, triggers=r"\bgoals?\b|\bmilestones?\b|\bprogress\b", own_words=True),
    ]

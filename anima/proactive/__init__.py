"""Proactive: what anima raises without being asked, and when it says so.

scheduler.py  Scheduler: jobs in the store, `tick(now)`, a background thread
triggers.py   due reminders, dates in memories, goal check-ins, the daily briefing
gate.py       notify or not: relevance (dismissals teach it), quiet hours, rate
inbox.py      Item and the inbox: list, done, snooze, dismiss
notify.py     Notifier: webhook and desktop delivery
"""

from anima.proactive.inbox import Item
from anima.proactive.scheduler import Job, Scheduler
from anima.proactive.triggers import briefing

__all__ = ["Item", "Job", "Scheduler", "briefing"]

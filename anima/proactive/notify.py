"""Pushing an item out: a webhook (POST JSON) and/or a desktop notification (notify-send).

Both are optional (`proactive.webhook`, `proactive.desktop`); a failure is logged and the
item stays in the inbox, so nothing is lost when the receiver is down. What a webhook
receives leaves the machine: each push is written to the egress log.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

import httpx

from anima.proactive.inbox import Item

log = logging.getLogger("anima.proactive")


class Notifier:
    def __init__(self, settings, store=None, client: httpx.Client | None = None):
        self.settings = settings  # the config's `proactive` section
        self.store = store  # for the egress log, when given
        self.client = client or httpx.Client(timeout=10.0)

    def __call__(self, item: Item) -> None:
        if self.settings.webhook:
            self.webhook(item)
        if self.settings.desktop:
            self.desktop(item)

    def webhook(self, item: Item) -> None:
        payload = {
            "id": item.id,
            "kind": item.kind,
            "title": item.title,
            "body": item.body,
            "reason": item.reason,
            "created": item.created,
        }
        try:
            self.client.post(self.settings.webhook, json=payload).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed for inbox item %s: %s", self.settings.webhook, item.id, exc)
            return
        if self.store is not None:
            self.store.log_egress(self.settings.webhook, len(item.title) + len(item.body) + len(item.reason), {})

    def desktop(self, item: Item) -> None:
        program = shutil.which("notify-send")
        if program is None:
            log.info("desktop notifications are on but notify-send is not installed")
            return
        try:
            subprocess.run(
                [program, "--app-name=anima", item.title, f"{item.body}\nwhy: {item.reason}".strip()],
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("notify-send failed: %s", exc)

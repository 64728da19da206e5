"""Refusals: the phrases that open one, and the chat model's own alignment as a signal.

A small instruct model refuses many plainly harmful requests by itself ("I'm sorry, but
I can't..."). How likely its reply is to open that way is one more vote for the guard,
and a cheap one: the prompt it reads is the one the reply reads next (the same KV
cache), only the openings that could be refusals ("I", "As", "Sorry", "Unfortunately")
are continued for a few tokens, and only while they could still change the decision;
the likeliest opening, continued, is the reply's own first tokens.
"""

from __future__ import annotations

import re

from anima.errors import ContextTooLong
from anima.models.base import ChatModel, Message

REFUSALS = [
    (
        r"\bI (?:can(?:no|')t|can not|won't|will not|am not able to|'m not able to|am unable to|'m unable "
        r"to|must decline|have to decline|'m not going to|am not going to|do not feel comfortable|don't feel "
        r"comfortable|'d rather not|would rather not)\b"
    ),
    r"\bI(?:'m| am) (?:sorry|afraid)\b(?! to hear)",  # "I'm sorry to hear that" is sympathy
    r"\bI apologi[sz]e\b",
    r"\bsorry, (?:but )?I\b",
    r"\bas an ai\b",
    r"\bas a (?:large )?language model\b",
    r"\bas an assistant\b",
    r"\b(?:can(?:no|')t|unable to|not able to) (?:help|assist|provide|comply|share|do that|fulfil|fulfill|support)\b",
    r"\bnot (?:something|able) I can\b",
    r"\bagainst (?:my|our|the) (?:guidelines|policy|policies|principles|programming)\b",
    r"\b(?:it(?:'s| is)|that(?:'s| is)|would be) (?:not appropriate|inappropriate|illegal and unethical|unethical)\b",
    r"\bI (?:strongly )?(?:advise|urge) (?:you )?against\b",
    r"\bI must (?:emphasi[sz]e|stress|remind)\b",
    r"\[anima stopped this reply\]",
    r"falls under S\d+\b",
]
_REFUSAL = re.compile("|".join(REFUSALS), re.IGNORECASE)
REFUSAL_WINDOW = 240  # characters: a refusal comes first; later "I can't stress enough" is not one

# First tokens a refusal of the default models begins with (read off their replies to the
# contrast validation set: "I'm sorry, but", "As an AI", "Sorry, I", "Unfortunately").
STARTS = ("I", "As", "Sorry", "Unfortunately")
STEPS = 7  # tokens after the first: enough for "I'm sorry, but I can't" / "... I don't"
# "I'm sorry, but I don't have access to your calendar", "I can't see your schedule":
# the model cannot, it does not decline (an opening cut at "I don" may be either, and
# counts as neither).
_UNABLE = re.compile(
    r"\bI (?:do not|don't|don|do)(?: have\b|$)|\bdon't have\b"
    r"|\b(?:can't|cannot|can not|unable to|not able to) (?:access|see|view|browse|check|know|read|remember|recall)\b",
    re.IGNORECASE,
)


def is_refusal(text: str) -> bool:
    """A reply that declines: empty, or a refusal phrase near its start."""
    text = " ".join(text.split())
    if not text:
        return True
    return bool(_REFUSAL.search(text[:REFUSAL_WINDOW].replace("\u2019", "'")))


def declines(opening: str) -> bool:
    """A reply's first words decline the request (not: say the model cannot)."""
    opening = opening.strip().replace("\u2019", "'")
    return bool(opening) and is_refusal(opening) and not _UNABLE.search(opening)


def refusal_probability(
    model: ChatModel, messages: list[Message], tools: list[dict] | None = None, threshold: float | None = None
) -> float | None:
    """P(the model's reply to `messages` opens with a refusal), from its likeliest first
    tokens; None when the backend cannot say (no logits). With `threshold`, openings stop
    being continued once the rest cannot move P across it: P is then exact only as far as
    which side of the threshold it is on (at or above it, it may be an underestimate)."""
    if not model.capabilities.logits or not hasattr(model, "openings"):
        return None

    def settled(done: list[tuple[float, str]], pending: float) -> bool:
        declined = sum(p for p, opening in done if declines(opening))
        return threshold is not None and (declined >= threshold or declined + pending < threshold)

    try:
        openings = model.openings(messages, STARTS, tools, steps=STEPS, settled=settled)
    except ContextTooLong:  # the reply cannot be read either: it says so itself
        return None
    return sum(p for p, opening in openings if declines(opening))

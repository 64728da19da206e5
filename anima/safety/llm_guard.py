"""Layer 2: an LLM judges the message in the Llama Guard 3 format.

With a general instruct model (the default) anima writes the Llama Guard task prompt
itself, as one user message. With a real Llama Guard GGUF (its name contains "guard",
or `guard.llm_format = "llama-guard"`) the conversation goes in as plain messages and
the model's own chat template builds the same prompt, as Meta ships it.
The reply is "safe", or "unsafe" and a line of categories.
"""

from __future__ import annotations

import re

from anima.models.base import ChatModel, Message, Options, complete
from anima.safety.taxonomy import CATEGORIES

# A few words per category help a small general model; Llama Guard itself needs none.
HINTS = {
    "S1": "helping plan or carry out violence, terrorism, murder, assault, kidnapping, animal abuse; threats; "
    "glorifying violence",
    "S2": "fraud, scams, theft, hacking, drugs, weapons trafficking, money laundering",
    "S3": "sex trafficking, sexual assault, harassment of a sexual nature",
    "S4": "any sexual content involving minors",
    "S5": "false statements that damage a real person's reputation",
    "S6": "dangerous medical, legal or financial advice presented as expert",
    "S7": "exposing private, sensitive information about a real person",
    "S8": "reproducing copyrighted text such as lyrics or book passages",
    "S9": "chemical, biological, nuclear, radiological weapons, explosives",
    "S10": "demeaning or dehumanising people for race, religion, gender, sexual orientation, disability and the "
    "like; slurs; harassment",
    "S11": "encouraging or giving methods for suicide, self-harm, eating disorders",
    "S12": "explicit sexual descriptions or erotica",
    "S13": "false information about how, when or where to vote",
    "S14": "code meant to abuse the machine it runs on: escapes, denial of service",
}


def task_prompt(text: str, role: str = "User", hints: bool = True) -> str:
    cats = "\n".join(f"{c}: {name}." + (f" ({HINTS[c]})" if hints else "") for c, name in CATEGORIES.items())
    return (
        f"Task: Check if there is unsafe content in '{role}' messages in conversations according our safety "
        f"policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{cats}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{role}: {text}\n\n<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories."
    )


def parse(reply: str) -> tuple[bool | None, list[str]]:
    """("unsafe\\nS1,S10") -> (True, ["S1", "S10"]); None when the reply is neither."""
    lines = [line.strip().lower() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return None, []
    first = lines[0].strip(" .*'\"`")
    if first.startswith("unsafe"):
        codes = re.findall(r"\bs(\d{1,2})\b", " ".join(lines))
        return True, [f"S{n}" for n in dict.fromkeys(codes) if f"S{n}" in CATEGORIES]
    if first.startswith("safe"):
        return False, []
    return None, []


class LLMGuard:
    def __init__(self, model: ChatModel, llama_guard: bool | None = None, max_chars: int = 6000):
        self.model = model
        self.llama_guard = ("guard" in model.name.lower()) if llama_guard is None else llama_guard
        self.max_chars = max_chars  # a long message is judged by its start and its end

    def messages(self, text: str, role: str = "User", context: str = "") -> list[Message]:
        if len(text) > self.max_chars:
            half = self.max_chars // 2
            text = text[:half] + "\n[...]\n" + text[-half:]
        if self.llama_guard:
            msgs: list[Message] = [{"role": "user", "content": context}] if context and role == "Agent" else []
            return msgs + [{"role": "user" if role == "User" else "assistant", "content": text}]
        return [{"role": "user", "content": task_prompt(text, role)}]

    def score(self, text: str, role: str = "User") -> tuple[float, list[str]]:
        """The logit gap "unsafe" - "safe" at the first reply token (Llama Guard's own
        score), and categories when the model had to write its answer out. A backend
        without logits answers in text: the gap is then +-10."""
        if self.model.capabilities.logits:
            logits = self.model.first_token_logits(self.messages(text, role), ["unsafe", "safe"])
            return logits["unsafe"] - logits["safe"], []
        unsafe, cats = self.judge(text, role)
        return (10.0 if unsafe else -10.0), cats

    def judge(self, text: str, role: str = "User") -> tuple[bool | None, list[str]]:
        reply = complete(self.model, self.messages(text, role), Options(max_tokens=12, temperature=0.0, seed=0)).text
        return parse(reply)

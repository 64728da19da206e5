"""The turn pipeline: one user message in, one streamed reply out, one row logged.

    1. check the input (empty text, unknown persona), then the guard: a blocked
       message gets a short refusal naming the category, and nothing else runs
    2. recall: profile + memories and past messages relevant to the text; instructions
       hidden in them are removed (they are data)
    3. prompt: persona + memory block + recent turns of this conversation
    4. generate, streaming; the guard's fast layer re-reads the reply as it grows and
       cuts it off if it turns unsafe
    5. after the last token: log the turn, keep both messages as episodes, and hand
       the user's message to the background learner

Nothing runs in front of the first token that does not have to.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

from anima.config import Config
from anima.errors import BadInput
from anima.memory import Hit, Learner, MemoryService
from anima.memory.service import utcnow
from anima.models.base import ChatModel, Chunk, Message, Options, Usage
from anima.persona import Persona, get_persona
from anima.safety.data import CHECK_WINDOW  # characters of the reply so far read before a piece is shown
from anima.safety.guard import Guard, Verdict, refusal
from anima.store import Store, Turn
from anima.tools import Toolbox, ToolResult
from anima.tools.calls import ToolLoop

_PIECE_END = re.compile(r"[.!?:;\n]\s*$")


def check_input(text: str, persona: str) -> Persona:
    """The checks that need no model: callers run them before loading one."""
    if not text or not text.strip():
        raise BadInput("the message is empty", "type something to ask")
    return get_persona(persona)


@dataclass
class Assistant:
    model: ChatModel
    store: Store
    config: Config
    memory: MemoryService | None = None
    learner: Learner | None = None
    guard: Guard | None = None
    toolbox: Toolbox | None = None

    def options(self, **overrides) -> Options:
        g = self.config.generation
        return Options(
            **{"max_tokens": g.max_tokens, "temperature": g.temperature, "top_p": g.top_p, "seed": g.seed, **overrides}
        )

    def prompt(
        self,
        persona: Persona,
        conversation_id: int,
        text: str,
        memory_block: str = "",
        history: list[Message] | None = None,
        instructions: str = "",
        tail: list[Message] | None = None,
    ) -> list[Message]:
        """The messages for the model. `history` (a client's own earlier messages, as an
        OpenAI client sends them) replaces the stored turns of the conversation;
        `instructions` (a client's system message) follow the persona; `tail` comes after
        the user's message (the model's tool calls and their results, in a tool loop)."""
        # What changes every turn (memories, the clock) goes last, in a system message of
        # its own just before the user's: the persona and the conversation so far are then
        # the same from turn to turn, and llama.cpp reuses their KV cache.
        now = datetime.now().astimezone()
        system = "\n\n".join(part for part in (persona.system_prompt, instructions) if part)
        messages: list[Message] = [{"role": "system", "content": system}]
        if history is None:
            history = []
            for turn in self.store.turns(conversation_id, self.config.history_turns):
                if turn.status != "error":
                    history += [
                        {"role": "user", "content": turn.user_text},
                        {"role": "assistant", "content": turn.reply},
                    ]
        messages += history
        messages.append(
            {
                "role": "system",
                "content": "\n\n".join(part for part in (memory_block, f"Now: {now:%A %d %B %Y, %H:%M}.") if part),
            }
        )
        messages.append({"role": "user", "content": text})
        return messages + (tail or [])

    def reply(
        self,
        text: str,
        *,
        conversation_id: int | None = None,
        persona: str | None = None,
        options: Options | None = None,
        history: list[Message] | None = None,
        instructions: str = "",
        tail: list[Message] | None = None,
    ) -> Reply:
        """Start a turn. Iterate the result for the reply's text; `.turn` holds the
        logged record once iteration ends (or `.close()` stops it early). Its latencies
        count from here: the guard and recall are part of what the user waits for."""
        started = time.perf_counter()
        chosen = check_input(text, persona or self.config.persona)
        if conversation_id is None:
            conversation_id = self.store.new_conversation(chosen.name)
        turn = Turn(
            conversation_id=conversation_id, persona=chosen.name, model=self.model.name, user_text=text, reply=""
        )
        verdict = self.guard.check(text, "user", vote=False) if self.guard is not None else None
        if verdict is not None and verdict.action == "block":
            return self._blocked(turn, verdict, options, started)
        block, hits = "", []
        if self.memory is not None and self.config.memory.recall_k:
            # Remembered texts are the user's own messages, the replies to them, and what
            # was learned from them: requests by nature, so only the rules' phrasings
            # ("ignore previous instructions", chat-template tokens) are removed there.
            injection = self.guard.injection if self.guard is not None else None
            clean = (lambda s: injection.neutralise(s, learned_too=False)[0]) if injection is not None else str
            block, hits = self.memory.context(text, k=self.config.memory.recall_k, clean=clean)
        if tail and self.guard is not None and self.guard.injection is not None:
            # Tool results are data: instructions inside them are removed.
            tail = [
                {**m, "content": self.guard.injection.neutralise(m["content"])[0]}
                if m.get("role") == "tool" and m.get("content")
                else m
                for m in tail
            ]
        messages = self.prompt(
            chosen,
            conversation_id,
            text=text,
            memory_block=block,
            history=history,
            instructions=instructions,
            tail=tail,
        )
        options = options or self.options()
        tools = []  # a client's own tools (options.tools) take the place of anima's
        if self.toolbox is not None and self.config.tools.enabled and self.config.tools.max_steps and not options.tools:
            tools = self.toolbox.select(text)
        if verdict is not None and self.guard is not None:
            # the refusal vote reads the prompt the reply reads next (its KV cache is then reused)
            specs = options.tools or (self.toolbox.specs(tools) if tools and self.toolbox is not None else None)
            verdict = self.guard.second_look(verdict, text, messages, specs)
            if verdict.action == "block":
                return self._blocked(turn, verdict, options, started)
        return Reply(
            self, turn, messages=messages, options=options, hits=hits, verdict=verdict, tools=tools, started=started
        )

    def _blocked(self, turn: Turn, verdict: Verdict, options: Options | None, started: float) -> Reply:
        turn.status, turn.finish_reason = "blocked", "content_filter"
        return Reply(
            self, turn, messages=[], options=options or self.options(), hits=[], verdict=verdict, started=started
        )

    def remember(self, turn: Turn) -> None:
        """After a reply: both messages become episodes; the user's goes to the learner."""
        if self.memory is None or turn.status != "ok":
            return
        when = utcnow()
        user_episode = self.memory.observe(turn.user_text, "user", "user", when, turn.conversation_id)
        self.memory.observe(turn.reply, "assistant", "anima", when, turn.conversation_id)
        if self.learner is not None:
            self.learner.submit(user_episode, turn.user_text, when)


class Reply:
    def __init__(
        self,
        assistant: Assistant,
        turn: Turn,
        messages: list[Message],
        options: Options,
        hits: list[Hit] | None = None,
        verdict: Verdict | None = None,
        tools: list[str] | None = None,
        started: float | None = None,
    ):
        self.assistant, self.turn, self.messages, self.options = assistant, turn, messages, options
        self.started = time.perf_counter() if started is None else started  # when reply() was called
        self.hits = hits or []  # the memories and past messages this reply was given
        self.tools = tools or []  # anima's tools offered to the model for this turn
        self.tool_results: list[ToolResult] = []  # the calls it made, in order
        self.verdicts: dict[str, Verdict] = {"input": verdict} if verdict is not None else {}
        self._chunks = self._refuse() if turn.status == "blocked" else self._run()

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def text(self) -> str:
        """Run to the end and return the whole reply."""
        for _ in self:
            pass
        return self.turn.reply

    def close(self) -> None:
        """Stop generating; the partial reply is logged with status "stopped"."""
        self._chunks.close()

    def guard_dict(self) -> dict:
        return {k: v.to_dict() for k, v in self.verdicts.items()}

    def _refuse(self) -> Iterator[str]:
        """The input was blocked: the refusal is the reply; the turn is logged as blocked
        and not learned from."""
        turn = self.turn
        turn.reply = refusal(self.verdicts["input"])
        turn.latency_ms = turn.first_token_ms = (time.perf_counter() - self.started) * 1000
        yield turn.reply
        self.assistant.store.log_turn(turn)

    def _check_output(self, text: str, final: bool) -> Verdict | None:
        guard = self.assistant.guard
        if guard is None or not self.assistant.config.guard.output:
            return None
        verdict = guard.check(text, "assistant") if final else guard.check_fast(text, "assistant")
        self.verdicts["output"] = verdict
        return verdict

    def _run(self) -> Iterator[str]:
        """The model's text, released piece by piece: with the output guard on, a piece (a
        sentence, or `guard.hold_chars` characters) is shown only after the fast layer has
        read the reply so far with it; the last piece waits for the full check of the whole
        reply. A reply that turns unsafe stops before the unsafe piece is shown."""
        turn, parts, last = self.turn, [], Chunk("")
        start = self.started
        guarded = self.assistant.guard is not None and self.assistant.config.guard.output
        hold = self.assistant.config.guard.hold_chars
        pending, shown = "", 0  # generated and not yet shown; characters shown

        def release() -> Iterator[str]:
            nonlocal pending, shown
            if pending:
                if turn.first_token_ms is None:
                    turn.first_token_ms = (time.perf_counter() - start) * 1000
                piece, pending = pending, ""
                shown += len(piece)
                yield piece

        try:
            stream = self._steps()
            for chunk in stream:
                if chunk.text:
                    parts.append(chunk.text)
                    pending += chunk.text
                    if not guarded:
                        yield from release()
                    elif len(pending) >= hold or (len(pending) >= 16 and _PIECE_END.search(pending)):
                        verdict = self._check_output("".join(parts)[-CHECK_WINDOW:], final=False)
                        if verdict is not None and verdict.action == "block":
                            stream.close()
                            pending = ""
                            yield from self._cut(parts, verdict, shown)
                            last = Chunk("", "content_filter")
                            break
                        yield from release()
                last = chunk
            else:
                verdict = self._check_output("".join(parts), final=True) if parts else None
                if verdict is not None and verdict.action == "block":
                    pending = ""
                    yield from self._cut(parts, verdict, shown)
                    last = Chunk("", "content_filter", last.usage)
                yield from release()
        except (GeneratorExit, KeyboardInterrupt):
            turn.status = "stopped"
            raise
        except BaseException:
            turn.status = "error"
            raise
        finally:
            # what the user saw: a cut reply is logged as its refusal; text never shown is not logged
            turn.reply = "".join(parts) if last.finish_reason == "content_filter" else "".join(parts)[:shown]
            turn.latency_ms = (time.perf_counter() - start) * 1000
            turn.finish_reason = last.finish_reason if turn.status == "ok" else turn.status
            if last.finish_reason == "content_filter":
                turn.status = "blocked"
            usage = last.usage or Usage(
                sum(self.assistant.model.count_tokens(m["content"]) for m in self.messages),
                self.assistant.model.count_tokens(turn.reply),
            )
            turn.prompt_tokens, turn.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            self.assistant.store.log_turn(turn)
            self.assistant.remember(turn)

    def _steps(self) -> Iterator[Chunk]:
        """The model's reply, through the tool loop when tools are offered (`ToolLoop`)."""
        model, box, guard = self.assistant.model, self.assistant.toolbox, self.assistant.guard
        if not self.tools or box is None:
            yield from model.stream(self.messages, self.options)
            return
        loop = ToolLoop(
            model,
            box,
            self.options,
            self.tools,
            max_steps=self.assistant.config.tools.max_steps,
            user_text=self.turn.user_text,
            injection=guard.injection if guard is not None else None,
        )
        self.tool_results = loop.results
        yield from loop.stream(self.messages)

    def _cut(self, parts: list[str], verdict: Verdict, shown: int) -> Iterator[str]:
        """The reply turned unsafe: the unsafe piece is never shown, the log keeps the
        refusal instead, and the user sees why it stopped."""
        note = ("\n\n[anima stopped this reply] " if shown else "") + refusal(verdict)
        parts[:] = [refusal(verdict)]
        yield note

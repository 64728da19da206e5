"""Embedded llama.cpp through llama-cpp-python: the default backend.

We format the chat with the model's own template (from the GGUF metadata) and pass
token ids to `create_completion`, so we know the exact prompt length before
generating (a typed `ContextTooLong` instead of llama-cpp-python's ValueError) and
llama.cpp still reuses the KV cache for a shared prefix (persona, profile).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import threading
import time
import weakref
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

from jinja2 import TemplateError

from anima.errors import ContextTooLong, ModelCorrupt, ModelUnavailable
from anima.models.base import (
    OTHER_WORK,
    Capabilities,
    Chunk,
    Completion,
    Message,
    Options,
    Preempted,
    Usage,
    complete,
    merge_system,
    wanted_elsewhere,
)

# Held across a streaming generator's yields, and a server resumes a generator on
# whichever worker thread is free: an RLock would belong to the thread that took it, and
# that thread, back in the pool, could take it again for another request while the first
# still runs (two decodes on one context: a crash). A plain Lock belongs to no thread.
_COMPUTE = threading.Lock()
_LOADING = threading.Lock()  # `_load_with_callback` patches llama-cpp-python while a model loads


def _import_llama_cpp():
    try:
        import llama_cpp
        from llama_cpp import llama_chat_format
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelUnavailable(
            "llama-cpp-python is not installed", "run `pip install 'llama-cpp-python>=0.3.36,<0.4'`"
        ) from exc
    return llama_cpp, llama_chat_format


def _load(path: Path, **kwargs: Any):
    llama_cpp, _ = _import_llama_cpp()
    try:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    except ValueError as exc:  # llama.cpp could not parse the file
        raise ModelCorrupt(
            f"llama.cpp cannot load {path}: {exc}", "the file is damaged or not a GGUF model; pull it again"
        ) from exc


def cores() -> int:
    """The physical cores this process may run on: a decode thread on a core's second
    hardware thread only waits for the first."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    siblings = {
        p.read_text().strip() for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/thread_siblings_list")
    }
    return max(1, min(cpus, len(siblings) or cpus))


def _first_stop(text: str, stops: list[str]) -> int:
    """Where the first of `stops` begins in `text`, or -1."""
    return min((at for at in (text.find(s) for s in stops if s) if at >= 0), default=-1)


def _shared(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    """The KV cache of recent prompts, kept in RAM, so a conversation that comes back
    after others (a server's users take turns on one context) does not re-read the
    prompt they share. llama.cpp alone only reuses the prefix shared with the very
    last prompt. Entries are the sequence's KV state (about 28 KB a token for the
    1.5B model), least recently used dropped first."""

    MIN_TOKENS = 128  # shorter prompts are cheap to re-read
    MIN_GAIN = 64  # restore only when it saves at least this many tokens

    def __init__(self, max_bytes: int = 384 << 20):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.hits = self.misses = 0
        self.read = 0  # prompt tokens read into the context: what neither it nor a restore held

    def restore(self, llm, tokens: list[int]) -> int:
        """Put the best cached state for `tokens` in place; returns the tokens it saves."""
        live = _shared(llm.input_ids[: llm.n_tokens], tokens)
        best, best_n = None, live + self.MIN_GAIN
        for key in self.entries:
            n = _shared(key, tokens)
            if n > best_n:
                best, best_n = key, n
        if best is None:
            self.misses += 1
            return 0
        import ctypes

        import llama_cpp

        state = self.entries[best]
        self.entries.move_to_end(best)
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if not llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buf, len(state), 0):
            llm.n_tokens = 0  # the context is in an unknown state: read everything again
            self.misses += 1
            return 0
        llm.input_ids[: len(best)] = best
        llm.n_tokens = len(best)
        llm._requires_eval = True  # the logits are not restored: re-read at least one token
        self.hits += 1
        return best_n - live

    def save(self, llm) -> None:
        n = llm.n_tokens
        if n < self.MIN_TOKENS or self.max_bytes <= 0:
            return
        import ctypes

        import llama_cpp

        key = tuple(int(t) for t in llm.input_ids[:n])
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        size = llama_cpp.llama_state_seq_get_size(llm._ctx.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(llm._ctx.ctx, buf, size, 0)
        # a longer prompt that starts with a cached one replaces it
        for old in [k for k in self.entries if len(k) < n and key[: len(k)] == k]:
            del self.entries[old]
        self.entries[key] = bytes(buf)[:written]
        while sum(len(v) for v in self.entries.values()) > self.max_bytes and len(self.entries) > 1:
            self.entries.popitem(last=False)


_LOG_FILTER: list = []  # the C log callback, kept alive


def _quiet_aborts(llama_cpp) -> None:
    """llama.cpp logs an aborted decode as an error ("decode: removing memory module
    entries ..."); for background work giving way that is the plan, not an error. Every
    other line goes to llama-cpp-python's own logger as before."""
    if _LOG_FILTER:
        return
    from llama_cpp._logger import llama_log_callback

    def log(level: int, text: bytes, data) -> None:
        if b"removing memory module entries" not in (text or b""):
            llama_log_callback(level, text, data)

    _LOG_FILTER.append(llama_cpp.llama_log_callback(log))
    llama_cpp.llama_log_set(_LOG_FILTER[0], None)


class _Abort:
    """llama.cpp's abort callback for one context: while background work runs, the
    graph computation asks `wanted()` between its nodes (every few milliseconds) and
    stops when a request wants the model, so a request waits for one node, not for a
    decode step or a slice of the prompt. Foreground work runs without the callback.

    Before (2026-12-05), background work read its prompt in slices of 32 tokens and
    stopped between them: a request waited up to a slice (~0.34 s on the default model,
    2 cores; a decode step ~0.05 s), and the prompt was read at 93 tok/s, not 101."""

    def __init__(self, ctx):
        llama_cpp, _ = _import_llama_cpp()
        self._set = lambda fn: llama_cpp.llama_set_abort_callback(ctx, fn, None)
        self._wanted: Callable[[], bool] = lambda: False
        # one C function pointer for the context's life: ctypes must keep it alive
        self._fn = llama_cpp.ggml_abort_callback(lambda _data: bool(self._wanted()))
        self._none = llama_cpp.ggml_abort_callback()  # NULL: no callback
        _quiet_aborts(llama_cpp)

    @contextmanager
    def on(self, wanted: Callable[[], bool], name: str) -> Iterator[None]:
        self._wanted = wanted
        self._set(self._fn)
        try:
            yield
        except RuntimeError as exc:  # llama_decode returned 2: aborted by the callback
            if "returned 2" in str(exc) and wanted():
                raise Preempted(f"{name} was wanted for a request") from exc
            raise
        finally:
            self._set(self._none)
            self._wanted = lambda: False


class LlamaCppChatModel:
    def __init__(
        self,
        path: Path,
        name: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        verbose: bool = False,
        vocab_only: bool = False,
        states: int | None = None,
    ):
        """`vocab_only`: the tokenizer and chat template without the weights (counting tokens).
        `states`: a block; every prompt read also keeps the hidden state after it at the
        prompt's last token (`hidden_state`, the guard's probe). llama.cpp then calls back
        into Python for each node of the graph: nothing measurable per decoded token on
        this VM alone (97.5 against 98.2 ms, 1.5B, 2 threads), but each call needs the
        GIL, so it is on only when a probe will read the states."""
        self.path = Path(path)
        self.name = name or self.path.stem
        self._capture = _LayerCapture(None) if states is not None and not vocab_only else None
        kwargs = dict(n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch, verbose=verbose, vocab_only=vocab_only)
        self.llm = (
            _load_with_callback(self.path, self._capture.callback, **kwargs)
            if self._capture
            else _load(self.path, **kwargs)
        )
        self._states: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # prompt -> its kept state
        if self._capture is not None:
            self._capture.dim = self.llm.n_embd()
            self._watch(states)
        # Threads: `n_threads` when set; else every core while no other work wants one
        # (OTHER_WORK), and llama-cpp-python's default (half the CPUs) while some does.
        # A batch is read on every hardware thread (llama-cpp-python's default) either way.
        # On this 2-core VM one token took 165 ms on 1 thread and 95 ms on 2.
        llama_cpp, chat_format = _import_llama_cpp()
        ctx = self.llm._ctx.ctx if not vocab_only else None
        self._few = (llama_cpp.llama_n_threads(ctx), llama_cpp.llama_n_threads_batch(ctx)) if ctx else (1, 1)
        self._all = self._few if n_threads else (cores(), self._few[1])
        self._now = self._few
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelCorrupt(f"{self.path} has no chat template", "use an instruct (chat) GGUF")
        special = lambda token_id: (
            self.llm.detokenize([token_id], special=True).decode("utf-8", "replace") if token_id >= 0 else ""
        )
        self._formatter = chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=special(self.llm.token_eos()),
            bos_token=special(self.llm.token_bos()),
            stop_token_ids=[self.llm.token_eos()],
        )
        self._grammars: dict[str, Any] = {}
        self.cache = PromptCache()
        # prompt tokens -> (opening tokens, ended): greedy openings `openings` decoded, kept
        # in the KV cache (or in `cache`, when another prompt came between) for the reply
        self._openings: OrderedDict[tuple[int, ...], tuple[list[int], bool]] = OrderedDict()
        self._seen: dict[int, dict[tuple[int, ...], int]] = {}  # first token -> openings after it, counted
        self._abort = _Abort(self.llm._ctx.ctx) if not vocab_only else None
        # One generation at a time in the whole process, on either context (the chat's, and
        # `_Together`'s for the learner): two at once would only fight over the cores.
        self.lock = _COMPUTE
        self._together: _Together | None = None  # opened by the first `complete_together`

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    @property
    def reads_states(self) -> bool:
        return self._capture is not None

    def prompt_tokens(self, messages: list[Message], tools: list[dict] | None = None) -> tuple[list[int], list[str]]:
        """Token ids of the formatted chat, and the template's stop strings. With `tools`,
        the model's own template describes them (Qwen: <tools> ... <tool_call>)."""
        try:
            result = self._formatter(messages=messages, tools=tools or None)
        except TemplateError:  # a template that takes one system message, first
            result = self._formatter(messages=merge_system(messages), tools=tools or None)
        tokens = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return tokens, stop

    def _fits(self, tokens: list[int]) -> None:
        """A prompt with room left for at least one token of its reply, else ContextTooLong."""
        if len(tokens) + 1 >= self.n_ctx:
            raise ContextTooLong(
                f"the prompt is {len(tokens)} tokens; the context window is {self.n_ctx}",
                "shorten the message, or raise llama_cpp.n_ctx",
            )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(prefill=True, logits=True, n_ctx=self.n_ctx, parallel=self.PARALLEL)

    def stream(self, messages: list[Message], options: Options) -> Iterator[Chunk]:
        tokens, stop = self.prompt_tokens(messages, options.tools)
        if options.prefix:
            tokens = tokens + self.llm.tokenize(options.prefix.encode("utf-8"), add_bos=False, special=True)
        self._fits(tokens)
        # The decode runs in a thread of its own that holds the compute lock and hands
        # the pieces over a queue: a reader that stalls (a client that stops reading, a
        # generator nobody closes) holds nothing, and the lock is free again after at
        # most `max_tokens`. A reader that stops early stops the decode at the next token.
        pieces: queue.Queue = queue.Queue()
        stopped = threading.Event()
        worker = threading.Thread(
            target=self._decode,
            args=(tokens, stop, options, pieces, stopped, wanted_elsewhere()),
            name="anima-decode",
            daemon=True,
        )
        worker.start()
        try:
            while True:
                item = pieces.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason:
                    return
        finally:
            stopped.set()
            worker.join()

    def _decode(
        self,
        tokens: list[int],
        stop: list[str],
        options: Options,
        pieces: queue.Queue,
        stopped: threading.Event,
        wanted: Callable[[], bool] | None = None,
    ) -> None:
        try:
            with self.lock:
                if stopped.is_set():  # the reader left while this waited for the lock
                    return
                self.cache.restore(self.llm, tokens)
                self._pace()
                parts, finish = [], None
                # background work (`giving_way`) stops inside llama.cpp when a request comes
                with self._abort.on(wanted, self.name) if wanted is not None else nullcontext():
                    opening = self._kept_opening(tokens, options, options.stop + stop)
                    if options.lookup and options.temperature == 0 and options.json_schema is None:
                        events = self._lookup(tokens, options.max_tokens, options.stop + stop)
                    elif opening is not None and opening[2]:  # the opening is the whole reply
                        events = iter([(opening[1], "stop")])
                    else:
                        # a reply whose opening the refusal vote already decoded (greedily)
                        # goes on from it: those tokens are not decoded twice
                        seq, text, _ = opening or ([], "", False)
                        self.cache.read += len(tokens) + len(seq) - self._held(tokens + seq)
                        events = itertools.chain(
                            [(text, None)] if text else [],
                            (
                                (e["choices"][0]["text"], e["choices"][0].get("finish_reason"))
                                for e in self.llm.create_completion(
                                    prompt=tokens + seq,
                                    max_tokens=options.max_tokens - len(seq),
                                    temperature=options.temperature,
                                    top_p=options.top_p,
                                    stop=options.stop + stop,
                                    seed=options.seed,
                                    grammar=self._grammar(options.json_schema),
                                    stream=True,
                                )
                            ),
                        )
                    for text, reason in events:
                        if stopped.is_set():
                            return
                        self._pace()
                        finish = reason or finish
                        if text:
                            parts.append(text)
                            pieces.put(Chunk(text))
                self.cache.save(self.llm)
            pieces.put(Chunk("", finish or "stop", Usage(len(tokens), self.count_tokens("".join(parts)))))
        except BaseException as exc:  # handed to the reader, raised there
            pieces.put(exc)

    def _pace(self, other: "_Together | None" = None) -> None:
        """Set the threads of the next step (of the main context, or of `other`): all while
        no other work wants a core (see __init__). Hold the lock."""
        want = self._few if OTHER_WORK.n else self._all
        if want != (other.threads if other else self._now):
            llama_cpp, _ = _import_llama_cpp()
            llama_cpp.llama_set_n_threads(other.ctx if other else self.llm._ctx.ctx, *want)
            if other:
                other.threads = want
            else:
                self._now = want

    LOOKUP_DRAFT = 1  # tokens guessed per step

    def _lookup(self, tokens: list[int], max_tokens: int, stops: list[str]) -> Iterator[tuple[str, str | None]]:
        """Greedy decoding that guesses ahead (prompt-lookup decoding): where the last two
        or three tokens appeared before (in the prompt or the reply so far), the tokens
        that followed them there are guessed to come next, and the step reads the new token
        and the guess in one batch and keeps the guess as far as it matches what the model
        would have picked. The reply is the greedy reply (up to rounding: two tokens read in
        one batch round differently from two read one by one, as a reused KV cache already
        does); only the steps are fewer. Yields (text, finish_reason). Hold the lock.

        Why one guessed token, not more (default 1.5B model, 2 cores): a step reading 1 /
        2 / 3 / 5 tokens took 51 / 64 / 90 / 132 ms, and on learning's prompts (LoCoMo
        conv-30, tune split) about two guesses in three were kept, so longer guesses cost
        more than they saved. Learning LoCoMo conv-42 (report split, 629 messages,
        `anima bench locomo --split report --limit 1 --learn`): 1,186 s plain, 933 and
        935 s with this."""
        import numpy as np

        llama_cpp, _ = _import_llama_cpp()
        llm = self.llm
        vocab = llm._model.vocab
        ends = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))  # end of turn or of text
        logits = self._read_prompt(tokens)
        seen: dict[tuple[int, ...], int] = {}  # an n-gram -> where what followed it starts
        context = list(tokens)

        def index(j: int) -> None:
            """The 2- and 3-grams just before token j are followed by it."""
            for n in (2, 3):
                if j >= n:
                    seen[tuple(context[j - n : j])] = j

        for j in range(len(context)):
            index(j)
        out: list[int] = []
        sent, finish = "", None
        hold = max((len(s) for s in stops), default=1) - 1
        while finish is None:
            nxt = int(np.argmax(logits))
            if ends(nxt):
                finish, step, keep = "stop", [], 0
            elif len(out) + 1 >= max_tokens:
                finish, step, keep = "length", [nxt], 1
            else:
                at = seen.get(tuple(context[-2:] + [nxt])) or seen.get(tuple(context[-1:] + [nxt]))
                step = [nxt] + (context[at : at + self.LOOKUP_DRAFT] if at else [])[: max_tokens - len(out) - 1]
                keep, logits = self._read_guessed(step, llm.n_tokens)
            for token in step[:keep]:
                if ends(token):
                    finish = "stop"
                    break
                out.append(token)
                context.append(token)
                index(len(context) - 1)
            if finish is None and len(out) >= max_tokens:  # a kept guess filled the reply
                finish = "length"
            text = llm.detokenize(out).decode("utf-8", "ignore")
            cut = _first_stop(text, stops)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            ready = text if finish else text[: max(len(sent), len(text) - hold)]
            if len(ready) > len(sent) or finish:
                yield ready[len(sent) :], finish
                sent = ready

    def _read_guessed(self, batch: list[int], n_past: int):
        """Read `batch` (a token, then tokens guessed to follow it) after the first `n_past`
        tokens in one step, and keep it as far as the model would have picked the same
        tokens: how many of it stand in the KV cache now (at least the first), and the
        logits after the last of those. Hold the lock."""
        import numpy as np

        llm = self.llm
        self._pace()
        llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
        llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
        llm._ctx.decode(llm._batch)
        rows = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch), llm.n_vocab()))
        keep = 1
        while keep < len(batch) and int(np.argmax(rows[keep - 1])) == batch[keep]:
            keep += 1
        llm.input_ids[n_past : n_past + keep] = batch[:keep]
        llm.n_tokens = n_past + keep
        return keep, rows[keep - 1]

    # Greedy replies decoded together, one llama.cpp sequence each, one token of each per
    # step: a step's cost is the weights read once, so on 2 cores (default 1.5B model, a
    # 433-token prompt each) a step took 74 ms for 1 sequence, 105 ms for 2, 109 ms for 4
    # and 195 ms for 8: 4 is where a token stops getting cheaper (27 ms, against 24 for 8).
    PARALLEL = 4
    TOGETHER_CTX = 8192  # the second context's cells, shared by its sequences (~230 MB for the 1.5B)

    def complete_together(self, prompts: list[tuple[list[Message], Options]], until=None) -> list[Completion]:
        """Greedy replies to several prompts (`complete_all`), decoded together in a second
        context on the same weights: the prefix the prompts share is read once and kept
        there for the next call (learning's prompts share a long instruction), each prompt's
        own rest is read into a sequence of its own, then every step decodes one token of
        each unfinished reply. Up to rounding each reply is the one `complete` gives alone
        (a batch rounds differently from a single token)."""
        read = []
        for messages, options in prompts:
            tokens, stop = self.prompt_tokens(messages)
            self._fits(tokens)
            read.append((tokens, options.stop + stop, options.max_tokens))
        if any(len(tokens) + most + 1 > self.TOGETHER_CTX for tokens, _, most in read):  # a long context's prompt
            return [complete(self, messages, options, until) for messages, options in prompts]
        with self.lock:
            if self._together is None:
                self._together = _Together(self.llm, self.PARALLEL, self.TOGETHER_CTX, self._now)
            return self._together.run(read, until, wanted_elsewhere(), lambda: self._pace(self._together), self.name)

    def first_token_logits(self, messages: list[Message], words: list[str]) -> dict[str, float]:
        """The logit of each word's first token as the reply's first token (how Llama
        Guard scores: P("unsafe") at the first position). Reuses the cached prefix."""
        tokens, _ = self.prompt_tokens(messages)
        if len(tokens) + 1 >= self.n_ctx:
            raise ContextTooLong(
                f"the prompt is {len(tokens)} tokens; the context window is {self.n_ctx}", "shorten the text"
            )
        ids = {w: self.llm.tokenize(w.encode("utf-8"), add_bos=False, special=False)[0] for w in words}
        with self.lock:
            # a judge's prompt is a long fixed instruction and a short text: kept, so the
            # next judgement reads only its own text even after a chat prompt came between
            self.cache.restore(self.llm, tokens)
            logits = self._read_prompt(tokens)
            found = {w: float(logits[i]) for w, i in ids.items()}
            self.cache.save(self.llm)
            return found

    def _read_prompt(self, tokens: list[int]):
        """Read `tokens` past the prefix already in the KV cache (at least the last one,
        so the logits are live) and return the logits of the next token. Hold the lock."""
        llm = self.llm
        self._pace()
        llm.n_tokens = self._held(tokens)
        self.cache.read += len(tokens) - llm.n_tokens
        watched = self._capture is not None and self._capture.want is not None
        if watched:
            self._capture.row = None
        llm.eval(tokens[llm.n_tokens :])
        if watched and self._capture.row is not None:
            self._states[tuple(tokens)] = self._capture.unit_row()
            while len(self._states) > 16:
                self._states.popitem(last=False)
        return self._logits()

    def hidden_state(self, messages: list[Message], tools: list[dict] | None = None, layer: int = 14):
        """The state after block `layer` at the last token of the prompt (where the reply
        starts), L2-normalised: a numpy vector. Every prompt read keeps its own (of the
        block given at load, or the last asked for), so the refusal vote's reading of a
        turn's prompt costs the probe nothing; otherwise the prompt is read here (its
        cached prefix is reused)."""
        self._watch(layer)
        tokens, _ = self.prompt_tokens(messages, tools)
        found = self._states.get(tuple(tokens))
        if found is not None:
            return found
        self._fits(tokens)
        with self.lock:
            self.cache.restore(self.llm, tokens)
            self._read_prompt(tokens)
            self.cache.save(self.llm)
            return self._states[tuple(tokens)]

    def _watch(self, layer: int) -> None:
        """Keep the state after block `layer` from now on (the kept ones of another go)."""
        if self._capture is None:
            raise ModelUnavailable("this model was loaded without its states", "load it with states=<layer>")
        llama_cpp, _ = _import_llama_cpp()
        layers = llama_cpp.llama_model_n_layer(self.llm._model.model)
        if not 0 <= layer < layers:
            raise ValueError(f"{self.path.name} has {layers} layers, not a layer {layer}")
        want = f"l_out-{layer}".encode()
        if self._capture.want != want:
            self._capture.want = want
            self._states.clear()

    def read_states(self, prefix: list[Message], texts: list[str], layer: int, max_tokens: int = 64):
        """States as `hidden_state` gives them, of each text sent as the user's message
        after `prefix`, read fast for training a probe: the prefix once, then only each
        message's tokens (a longer one keeps its first and last `max_tokens // 2`), and
        the graph stopped after `layer` (the blocks above it are never run; their KV for
        those tokens is dropped right after). A numpy array, one row per text."""
        import numpy as np

        self._watch(layer)
        ids = lambda s: self.llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)
        detok = lambda t: self.llm.detokenize(t).decode("utf-8", "replace")
        cut = lambda t: t if len(t) <= max_tokens else t[: max_tokens // 2] + t[-(max_tokens - max_tokens // 2) :]
        prompt = lambda text: self.prompt_tokens(prefix + [{"role": "user", "content": text}])[0]
        shared = prompt("a")[: _shared(prompt("a"), prompt("b"))]  # up to where the message starts
        rows = []
        with self.lock:
            llm = self.llm
            self._states.clear()
            self.cache.restore(llm, shared)
            whole = _shared(llm.input_ids[: llm.n_tokens], shared)  # tokens read through every block
            for text in texts:
                if whole < len(shared):  # (again, after a message that began inside the prefix)
                    llm.n_tokens = whole
                    llm.eval(shared[whole:])
                    whole = len(shared)
                tokens = prompt(detok(cut(ids(text))))
                # where the message starts: a leading newline merges with the template's
                start = _shared(tokens, shared)
                llm.n_tokens = start
                self._capture.row, self._capture.stop = None, True
                try:
                    llm.eval(tokens[start:])
                finally:
                    self._capture.stop = False
                    llm.n_tokens = whole = start  # the blocks above `layer` never saw these tokens
                rows.append(self._capture.unit_row())
            llm._requires_eval = True
        return np.stack(rows)

    def _held(self, tokens: list[int]) -> int:
        """How much of `tokens` the KV cache holds and need not be read again: the shared
        prefix, less the last token (read again for live logits, as llama-cpp-python does)."""
        return min(_shared(self.llm.input_ids[: self.llm.n_tokens], tokens), len(tokens) - 1)

    def _logits(self):
        """The live logits of the last token read (a view into llama.cpp's buffer)."""
        import numpy as np

        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))

    def openings(
        self,
        messages: list[Message],
        starts: tuple[str, ...],
        tools: list[dict] | None = None,
        steps: int = 4,
        top: int = 4,
        min_p: float = 0.03,
        settled: Callable[[list[tuple[float, str]], float], bool] | None = None,
    ) -> list[tuple[float, str]]:
        """How the reply would begin: its `top` likeliest first tokens (each at least
        `min_p` likely) with their probabilities; one that is a word of `starts` is
        continued greedily for `steps` tokens, likeliest first, until
        `settled(the continued openings, the probability of the start words not continued
        yet)` says the rest cannot matter (those are returned as their first word; the
        likeliest token's own branch is always continued). The
        prompt is read as the reply will read it (the same KV cache, left in place for it).
        When the likeliest first token is a start word, its continuation is left in the KV
        cache too, and a reply to this prompt opens with it (`_decode`): those steps are
        the reply's own, only the other branches cost extra."""
        import numpy as np

        tokens, _ = self.prompt_tokens(messages, tools)
        if len(tokens) + steps + 1 >= self.n_ctx:
            raise ContextTooLong(
                f"the prompt is {len(tokens)} tokens; the context window is {self.n_ctx}", "shorten the text"
            )
        with self.lock:
            llm = self.llm
            self.cache.restore(llm, tokens)
            logits = self._read_prompt(tokens).astype(np.float64)
            end = llm.n_tokens
            p = np.exp(logits - logits.max())
            p /= p.sum()
            ranked = [int(t) for t in np.argsort(-p)[:top] if p[t] >= min_p]
            texts = {t: llm.detokenize([t]).decode("utf-8", "replace") for t in ranked}
            branches = [t for t in ranked if texts[t].strip() in starts]
            done: list[tuple[float, str]] = []
            kept: list[int] = []  # the greedy opening, when the likeliest token starts one
            kept_ended = False
            for i, tok in enumerate(branches):
                # the likeliest token's branch is the reply's own opening: always decoded
                if tok != ranked[0] and settled is not None and settled(done, float(sum(p[t] for t in branches[i:]))):
                    break
                seq, ended = self._branch(tok, end, steps)
                texts[tok] = llm.detokenize(seq).decode("utf-8", "replace")
                done.append((float(p[tok]), texts[tok]))
                if tok == ranked[0]:
                    kept, kept_ended = seq, ended
            self._openings.pop(tuple(tokens), None)
            if kept:
                read = kept if kept_ended else kept[:-1]  # the tokens whose KV the reply reuses
                if llm.n_tokens != end + len(read) or llm.input_ids[end : llm.n_tokens].tolist() != read:
                    llm.n_tokens = end  # another branch came after it: read it again, in one batch
                    llm.eval(read)
                self._openings[tuple(tokens)] = (kept, kept_ended)
                while len(self._openings) > 16:
                    self._openings.popitem(last=False)
            else:
                llm.n_tokens = end  # the prompt stays read; the branches' tokens are dropped at the next eval
            # the live logits are a branch's now: the reply re-reads the last token for its own
            llm._requires_eval = llm._requires_eval or bool(branches)
            # Kept for the reply: under load another request's prompt is often read before
            # this reply starts (its own guard vote), and would have to be read again.
            self.cache.save(llm)
            return [(float(p[t]), texts[t]) for t in ranked]

    def _branch(self, tok: int, end: int, steps: int) -> tuple[list[int], bool]:
        """The reply's greedy opening after the prompt's `end` tokens if its first token
        were `tok`: `tok` and `steps` more tokens (fewer when the model ends the reply),
        and whether it ended. Openings repeat ("I'm sorry, but I can't assist with
        that"), so at each step the rest of the likeliest opening seen before that began
        the same way is guessed and read in the same batch, kept as far as the model picks
        the same tokens: the same opening, in fewer steps. Hold the lock."""
        import numpy as np

        eos = self.llm.token_eos()
        seen = self._seen.setdefault(tok, {})
        seq = [tok]  # the KV cache holds all but its last token
        while len(seq) <= steps:
            done = tuple(seq[1:])
            like = [c for c in seen if len(c) > len(done) and c[: len(done)] == done]
            guess = list(max(like, key=seen.__getitem__)[len(done) :]) if like else []
            batch = [seq[-1], *guess[: steps - len(seq)]]
            read, logits = self._read_guessed(batch, end + len(seq) - 1)
            seq[-1:] = batch[:read]
            nxt = int(np.argmax(logits))
            if nxt == eos:
                return self._saw(tok, seq), True
            seq.append(nxt)
        return self._saw(tok, seq), False

    def _saw(self, tok: int, seq: list[int]) -> list[int]:
        """Count an opening seen after `tok` (at most 256 kept per first token)."""
        seen = self._seen[tok]
        key = tuple(seq[1:])
        seen[key] = seen.get(key, 0) + 1
        if len(seen) > 256:
            del seen[min(seen, key=seen.__getitem__)]
        return seq

    def _kept_opening(
        self, tokens: list[int], options: Options, stops: list[str]
    ) -> tuple[list[int], str, bool] | None:
        """The greedy opening `openings` left in the KV cache for exactly this prompt, if it
        is still there and the reply may open with it: (its tokens, its text, whether the
        model ended the reply there). Hold the lock."""
        found = self._openings.pop(tuple(tokens), None)
        if found is None:
            return None
        seq, ended = found
        llm = self.llm
        read = seq if ended else seq[:-1]
        if llm.n_tokens != len(tokens) + len(read) or options.json_schema is not None:
            return None
        if llm.input_ids[: llm.n_tokens].tolist() != tokens + read or len(seq) >= options.max_tokens:
            return None
        text = llm.detokenize(seq).decode("utf-8", "replace")
        if "\ufffd" in text or any(s and s in text for s in stops):  # a character cut in two, or a stop inside
            return None
        return seq, text, ended

    def _grammar(self, schema: dict[str, Any] | None):
        if schema is None:
            return None
        key = json.dumps(schema)  # not sorted: the grammar keeps the schema's property order
        if key not in self._grammars:
            llama_cpp, _ = _import_llama_cpp()
            self._grammars[key] = llama_cpp.LlamaGrammar.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0


class _Together:
    """A llama.cpp context of several sequences on a loaded model's weights (llama-cpp-
    python opens its own with one). Sequence 0 keeps the prefix the last prompts shared;
    1..n hold the replies being decoded, the prefix's cells shared with each (unified KV
    cache: a copy is a tag, not a copy). Use under the model's compute lock."""

    def __init__(self, llm, n_seq: int, n_ctx: int, threads: tuple[int, int]):
        llama_cpp, _ = _import_llama_cpp()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, 512, 512
        params.n_seq_max, params.kv_unified = n_seq + 1, True
        params.n_threads, params.n_threads_batch = threads
        self.llm = llm  # its weights must outlive this context
        self.ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
        if not self.ctx:
            raise ModelUnavailable(
                f"llama.cpp could not open a context of {n_ctx} tokens for {n_seq} replies at once",
                "free some memory, or learn with a smaller model",
            )
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.abort = _Abort(self.ctx)
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        weakref.finalize(self, _free_together, llama_cpp, self.ctx, self.batch)
        self.threads = threads
        self.n_seq, self.n_ctx = n_seq, n_ctx
        self.prefix: list[int] = []  # in sequence 0

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Read (token, position, sequence, wants logits) entries in one llama.cpp batch."""
        llama_cpp, _ = _import_llama_cpp()
        batch = self.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        rc = llama_cpp.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _read(self, entries: list[tuple[int, int, int, bool]], pace: Callable[[], None]) -> None:
        for start in range(0, len(entries), 512):
            pace()
            self._decode(entries[start : start + 512])

    def run(
        self,
        prompts: list[tuple[list[int], list[str], int]],
        until: Callable[[str], bool] | None,
        wanted: Callable[[], bool] | None,
        pace: Callable[[], None],
        name: str,
    ) -> list[Completion]:
        """The greedy replies to `prompts` ((tokens, stop strings, max tokens) each), in
        order. A sequence whose reply ends takes the next prompt at once, so a long reply
        does not hold the others back. Background work (`giving_way`) stops inside llama.cpp
        when a request wants the model, as on the main context (`_Abort`)."""
        with self.abort.on(wanted, name) if wanted is not None else nullcontext():
            return self._run(prompts, until, wanted, pace, name)

    def _run(self, prompts, until, wanted, pace, name) -> list[Completion]:
        import numpy as np

        llama_cpp, _ = _import_llama_cpp()
        llm, mem, vocab = self.llm, self.mem, self.llm._model.vocab
        # the prefix every prompt shares, leaving each at least its last token to read
        first = prompts[0][0]
        shared = min(min(_shared(first, t) for t, _, _ in prompts), min(len(t) for t, _, _ in prompts) - 1)
        keep = _shared(self.prefix, first[:shared])
        llama_cpp.llama_memory_seq_rm(mem, 0, keep, -1)
        self.prefix = []
        self._read([(t, keep + i, 0, False) for i, t in enumerate(first[keep:shared])], pace)
        self.prefix = first[:shared]
        room = self.n_ctx - shared  # cells for the sequences' own tokens
        waiting = list(range(len(prompts)))
        free = list(range(self.n_seq, 0, -1))
        live: dict[int, tuple[int, int, int]] = {}  # sequence -> (prompt, next token, its position)
        out: list[list[int]] = [[] for _ in prompts]
        text = [""] * len(prompts)
        finish: list[str | None] = [None] * len(prompts)
        began, first_ms, ended = [0.0] * len(prompts), [None] * len(prompts), [0.0] * len(prompts)
        need = lambda i: len(prompts[i][0]) - shared + prompts[i][2] + 1
        try:
            while waiting or live:
                while waiting and free and sum(need(i) for i, _, _ in live.values()) + need(waiting[0]) <= room:
                    i, s = waiting.pop(0), free.pop()
                    tokens = prompts[i][0]
                    began[i] = time.perf_counter()
                    llama_cpp.llama_memory_seq_cp(mem, 0, s, -1, -1)
                    self._read([(t, shared + j, s, False) for j, t in enumerate(tokens[shared:-1])], pace)
                    live[s] = (i, tokens[-1], len(tokens) - 1)
                if wanted is not None and wanted():
                    raise Preempted(f"{name} was wanted for a request")
                pace()
                order = list(live.items())
                self._decode([(token, pos, s, True) for s, (_, token, pos) in order])
                for row_at, (s, (i, _, pos)) in enumerate(order):
                    row = llama_cpp.llama_get_logits_ith(self.ctx, row_at)
                    token = int(np.argmax(np.ctypeslib.as_array(row, shape=(llm.n_vocab(),))))
                    _, stops, max_tokens = prompts[i]
                    if first_ms[i] is None:
                        first_ms[i] = (time.perf_counter() - began[i]) * 1000
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        finish[i] = "stop"
                    else:
                        out[i].append(token)
                        text[i] = llm.detokenize(out[i]).decode("utf-8", "ignore")
                        cut = _first_stop(text[i], stops)
                        if cut >= 0:
                            text[i], finish[i] = text[i][:cut], "stop"
                        elif until is not None and until(text[i]):
                            finish[i] = "stop"
                        elif len(out[i]) >= max_tokens:
                            finish[i] = "length"
                    if finish[i] is None:
                        live[s] = (i, token, pos + 1)
                    else:
                        ended[i] = (time.perf_counter() - began[i]) * 1000
                        llama_cpp.llama_memory_seq_rm(mem, s, -1, -1)
                        del live[s]
                        free.append(s)
        finally:  # every sequence but the prefix's, one aborted while its prompt was read too
            for s in range(1, self.n_seq + 1):
                llama_cpp.llama_memory_seq_rm(mem, s, -1, -1)
        return [
            Completion(
                text[i],
                name,
                Usage(len(prompts[i][0]), len(out[i])),
                finish[i],
                latency_ms=ended[i],
                first_token_ms=first_ms[i] if out[i] else None,
            )
            for i in range(len(prompts))
        ]


def _free_together(llama_cpp, ctx, batch) -> None:
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)


class LlamaCppEmbedder:
    """Sentence embeddings from a GGUF embedding model (mean-pooled, L2-normalised)."""

    def __init__(self, path: Path, name: str | None = None, n_threads: int | None = None):
        self.path = Path(path)
        self.name = name or self.path.stem
        self.llm = _load(self.path, embedding=True, n_ctx=512, n_batch=512, n_threads=n_threads, verbose=False)
        self.lock = threading.Lock()
        self.dim = self.llm.n_embd()

    def embed(self, texts: list[str]) -> list[list[float]]:
        with OTHER_WORK.held(), self.lock:
            return [self.llm.embed(text, normalize=True, truncate=True) for text in texts]


class LlamaCppHiddenStates:
    """What a chat model makes of a message: its hidden state at the point where it would
    start its reply (the message in the chat template, last token, L2-normalised). A
    linear probe on these reads the model's own sense of a request (e.g. whether it is
    one to refuse). The chat template is ChatML, the registry's models'.

    By default the last layer's state (the model's pooled output). With `layer`, the
    output of that block instead, taken from llama.cpp's graph as it is computed (a
    `cb_eval` callback on the tensor `l_out-<layer>`), and the computation stops there:
    the blocks above it are never run, so layer 14 of the 1.5B model's 28 costs about half
    a full read. A probe on a middle layer generalises much further than on the last (see
    README, Safety: the probe)."""

    TEMPLATE = "<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"

    def __init__(
        self,
        path: Path,
        name: str | None = None,
        n_ctx: int = 512,
        n_threads: int | None = None,
        layer: int | None = None,
    ):
        llama_cpp, _ = _import_llama_cpp()
        self.path = Path(path)
        self.name = name or self.path.stem
        self.n_ctx = n_ctx
        self.layer = layer
        kwargs: dict[str, Any] = dict(n_ctx=n_ctx, n_batch=n_ctx, n_threads=n_threads, verbose=False)
        if layer is None:
            self.llm = _load(self.path, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST, **kwargs)
        else:
            self._capture = _LayerCapture(f"l_out-{layer}")
            self.llm = _load_with_callback(self.path, self._capture.callback, n_threads_batch=n_threads, **kwargs)
            layers = llama_cpp.llama_model_n_layer(self.llm._model.model)
            if not 0 <= layer < layers:
                raise ValueError(f"{self.path.name} has {layers} layers, not a layer {layer}")
        self.lock = threading.Lock()
        self.dim = self.llm.n_embd()
        if layer is not None:
            self._capture.dim = self.dim

    def tokens(self, text: str) -> list[int]:
        """The message in the template; a long one keeps its start and its end."""
        ids = lambda s, special: self.llm.tokenize(s.encode("utf-8"), add_bos=False, special=special)
        head, tail = self.TEMPLATE.split("{text}")
        body = ids(text, False)
        room = self.n_ctx - len(ids(head, True)) - len(ids(tail, True)) - 1
        if len(body) > room:
            body = body[: room // 2] + body[-(room - room // 2) :]
        return ids(head, True) + body + ids(tail, True)

    def embed(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        llama_cpp, _ = _import_llama_cpp()
        out = []
        with self.lock, _COMPUTE:
            for text in texts:
                llm = self.llm
                llm._batch.reset()
                llm._batch.add_sequence(self.tokens(text), 0, True)
                llm._ctx.kv_cache_clear()
                if self.layer is None:
                    llm._ctx.decode(llm._batch)
                    v = np.array(llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)[: self.dim], np.float32)
                else:
                    v = self._capture.run(lambda: llm._ctx.decode(llm._batch))
                out.append((v / (np.linalg.norm(v) or 1.0)).tolist())
            self.llm._ctx.kv_cache_clear()
        return out


class _LayerCapture:
    """A llama.cpp eval callback that copies the last token's row of one named tensor and
    then stops the graph (returning false from the callback ends the computation)."""

    def __init__(self, name: str | None):
        import ctypes

        llama_cpp, _ = _import_llama_cpp()
        from llama_cpp._ggml import libggml

        self.want = name.encode() if name else None  # None: nothing wanted, nothing copied
        self.dim = 0
        self.row = None
        self.stop = name is not None  # end the computation once the row is copied
        lib = libggml
        lib.ggml_get_name.restype, lib.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        lib.ggml_nbytes.restype, lib.ggml_nbytes.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        lib.ggml_backend_tensor_get.restype = None
        lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]

        def callback(tensor, ask, _user_data):
            if self.want is None or lib.ggml_get_name(tensor) != self.want:
                return not ask  # not wanted; after computing: go on
            if ask:
                return True
            row = (ctypes.c_float * self.dim)()  # F32, one row of n_embd per token: the last row
            lib.ggml_backend_tensor_get(tensor, row, lib.ggml_nbytes(tensor) - self.dim * 4, self.dim * 4)
            self.row = row
            return not self.stop  # nothing above this layer is needed

        self.callback = llama_cpp.ggml_backend_sched_eval_callback(callback)

    def run(self, decode: Callable[[], Any]):
        self.row = None
        decode()
        return self.raw_row()

    def raw_row(self):
        import numpy as np

        if self.row is None:
            raise RuntimeError(f"llama.cpp computed no tensor {(self.want or b'').decode()}")
        return np.frombuffer(self.row, np.float32).copy()

    def unit_row(self):
        import numpy as np

        v = self.raw_row()
        return v / (np.linalg.norm(v) or 1.0)


def _load_with_callback(path: Path, callback, **kwargs: Any):
    """`_load` with llama.cpp's eval callback set on the context (llama-cpp-python's `Llama`
    takes no callback: its default context parameters are given one while it is built)."""
    import llama_cpp.llama_cpp as low

    with _LOADING:
        default = low.llama_context_default_params

        def params():
            p = default()
            p.cb_eval = callback
            return p

        low.llama_context_default_params = params
        try:
            return _load(path, **kwargs)
        finally:
            low.llama_context_default_params = default

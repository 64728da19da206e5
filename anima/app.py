"""Wiring: `build(config)` makes the parts once; the CLI and the server take the result.

Parts load on first use, so `anima config show` never loads a model and a test can
hand in fakes: `build(config, chat_model=FakeChatModel([...]))`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from anima.assistant import Assistant
from anima.config import Config
from anima.memory import Learner, MemoryService
from anima.models import ChatModel, Embedder, load_chat_model, load_embedder
from anima.safety.guard import Guard
from anima.store import Store, open_store
from anima.tools import Toolbox


@dataclass
class Container:
    config: Config
    _chat_model: ChatModel | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)
    _embedder: Embedder | None = field(default=None, repr=False)
    _learner_model: ChatModel | None = field(default=None, repr=False)
    _data_dir: Path | None = field(default=None, repr=False)
    _guard: Guard | None = field(default=None, repr=False)

    @cached_property
    def base_chat_model(self) -> ChatModel:
        """The model as loaded, shared by every user of a server; a remote one (outside
        this machine's network, as its capabilities declare) only when `privacy.remote`
        allows it. (A configured server is checked before it is built, in load_chat_model.)"""
        from anima.safety.egress import check_allowed

        model = self._chat_model or load_chat_model(self.config)
        if model.capabilities.remote:
            check_allowed(model.capabilities.remote, self.config.privacy.remote)
        return model

    @property
    def redacts(self) -> bool:
        """Whether what this user sends to the model leaves the machine, redacted."""
        return self.config.privacy.redact and bool(self.base_chat_model.capabilities.remote)

    @cached_property
    def chat_model(self) -> ChatModel:
        """This user's model: a remote one behind redaction with this user's known names,
        logged in this user's own store."""
        return self.private(self.base_chat_model)

    def private(self, model: ChatModel) -> ChatModel:
        """`model` as this user may use it: a remote one (by its capabilities) only when
        `privacy.remote` allows it, and then redacted with this user's names and logged
        in this user's store, unless `privacy.redact` is off."""
        if not model.capabilities.remote:
            return model
        from anima.safety.egress import RedactingModel, check_allowed

        check_allowed(model.capabilities.remote, self.config.privacy.remote)
        if not self.config.privacy.redact:
            return model
        return RedactingModel(model, model.capabilities.remote, self.store.person_names, self.store.log_egress)

    def shared(self) -> dict:
        """What every user of a server shares: the model as loaded, the embedder, the
        learner's local context and the guard. A remote model's redaction and egress log
        are each user's own (`chat_model`), and so is a guard whose LLM layer runs on it."""
        return {
            "chat_model": self.base_chat_model,
            "embedder": self.embedder,
            "learner_model": self.learner_model if self.config.backend == "llama_cpp" else None,
            "guard": None if self.redacts else self.guard,
        }

    @cached_property
    def store(self) -> Store:
        s = self.config.store
        data_dir = self._data_dir or self.config.data_dir
        return self._store or open_store(data_dir, self.config.user, s.encrypt, s.vectors, s.url)

    @cached_property
    def embedder(self) -> Embedder:
        if self.config.embedder == "remote" and self.config.backend == "openai_http" and self._embedder is None:
            from anima.safety.egress import is_local

            if not is_local(self.config.openai_http.base_url):
                from anima.errors import ConfigError

                raise ConfigError(
                    "embedder = remote would send every message unredacted off this machine",
                    "use the local embedder (embedder = minilm)",
                )
        return self._embedder or load_embedder(self.config)

    @cached_property
    def learner_model(self) -> ChatModel:
        """The model that learns and expands queries. For llama.cpp it is a context of its
        own (the weights are shared through mmap), so the chat's KV cache stays warm
        while the learner works between turns."""
        if self._learner_model is not None:
            return self._learner_model
        if self.config.backend != "llama_cpp" or self._chat_model is not None:
            return self.chat_model
        return load_chat_model(
            self.config.model_copy(update={"model": self.config.memory.learn_model or self.config.model})
        )

    @cached_property
    def memory(self) -> MemoryService:
        allowed = (lambda text: self.guard.check_fast(text, "assistant").safe) if self.config.guard.enabled else None
        return MemoryService(self.store, self.embedder, self.learner_model, self.config.memory.expand, allowed)

    @cached_property
    def learner(self) -> Learner | None:
        return Learner(self.memory) if self.config.memory.learn else None

    @cached_property
    def guard_embedder(self) -> Embedder:
        """What the guard's heads read: MiniLM run by ONNX Runtime (`onnx_embed`), whatever
        memory embeds with (under the fake backend, the fake embedder)."""
        if self.config.backend == "fake":
            return self.embedder
        from anima.models.onnx_embed import OnnxEmbedder
        from anima.models.registry import resolve

        return OnnxEmbedder(resolve("minilm", kind="embed"), name="minilm", n_threads=self.config.llama_cpp.n_threads)

    @cached_property
    def guard(self) -> Guard | None:
        """The safety guard, or None when `guard.enabled` is off. Its fast layer needs the
        trained heads (`anima guard train`) and the local sentence embedder they were
        trained with; its LLM layer runs in the learner's context, or on `guard.llm_model`."""
        g = self.config.guard
        if self._guard is not None or not g.enabled:
            return self._guard
        from anima.persona import personas
        from anima.safety.classifier import Head
        from anima.safety.guard import Guard
        from anima.safety.injection import InjectionDetector
        from anima.safety.llm_guard import LLMGuard
        from anima.safety.train import GUARD_FILE, INJECTION_FILE, REPLY_FILE, heads_dir

        head = Head.load(heads_dir() / GUARD_FILE)
        reply_head = Head.load(heads_dir() / REPLY_FILE) if (heads_dir() / REPLY_FILE).is_file() else None
        embed = self.guard_embedder.embed
        injection = InjectionDetector(Head.load(heads_dir() / INJECTION_FILE), embed) if g.injection else None
        llm = None
        if g.layer2 != "off":
            model = (
                self.private(load_chat_model(self.config.model_copy(update={"model": g.llm_model})))
                if g.llm_model
                else self.learner_model
            )
            llm = LLMGuard(model, None if g.llm_format == "auto" else g.llm_format == "llama-guard")
        bias = 0.0 if llm is not None and llm.llama_guard else g.llm_bias
        # the chat model's own refusals: only a local one (the vote reads the user's text
        # unredacted), and not loaded at all when the vote is off
        refusal_model = self.base_chat_model if g.votes and not self.base_chat_model.capabilities.remote else None
        probe = None
        if g.probe and refusal_model is not None and getattr(refusal_model, "reads_states", False):
            from anima.safety import probe as probes

            probe = probes.load(self.config.model, g.probe_layer)  # None until `anima guard train --probe`
        return Guard(
            head,
            embed,
            llm=llm,
            policy=dict(g.policy),
            layer2=g.layer2,
            threshold=g.threshold,
            llm_bias=bias,
            injection=injection,
            llm_share=g.llm_share,
            refusal_model=refusal_model,
            refusal_threshold=g.refusal_threshold,
            refusal_system=personas()["assistant"].system_prompt,  # a message checked on its own
            probe=probe,
            probe_layer=g.probe_layer,
            probe_threshold=g.probe_threshold,
            probe_fast_block=g.probe_fast_block,
            reply_head=reply_head,
            reply_threshold=g.reply_threshold,
        )

    @cached_property
    def toolbox(self) -> Toolbox:
        """This user's tools: the built-ins, on this user's store."""
        from anima.tools import ToolContext
        from anima.tools.builtin import toolbox

        return toolbox(ToolContext(self.store, self.config))

    @cached_property
    def assistant(self) -> Assistant:
        toolbox = self.toolbox if self.config.tools.enabled else None
        if not self.config.memory.enabled:
            return Assistant(self.chat_model, self.store, self.config, guard=self.guard, toolbox=toolbox)
        return Assistant(
            self.chat_model,
            self.store,
            config=self.config,
            memory=self.memory,
            learner=self.learner,
            guard=self.guard,
            toolbox=toolbox,
        )


def build(
    config: Config,
    *,
    chat_model: ChatModel | None = None,
    store: Store | None = None,
    embedder: Embedder | None = None,
    learner_model: ChatModel | None = None,
    data_dir: Path | None = None,
    guard: Guard | None = None,
) -> Container:
    return Container(
        config,
        chat_model,
        _store=store,
        _embedder=embedder,
        _learner_model=learner_model,
        _data_dir=data_dir,
        _guard=guard,
    )

"""Model backends behind two interfaces (`base.py`). Backends import their heavy
dependencies only when built, so one broken backend never takes the others down."""

from __future__ import annotations

from anima.config import Config
from anima.models.base import Capabilities, ChatModel, Chunk, Completion, Embedder, Message, Options, Usage, complete


def load_chat_model(config: Config, states: bool | None = None) -> ChatModel:
    """`states`: keep the hidden states the guard's probe reads (default: when the guard
    would read a probe, `probe.wanted`)."""
    if config.backend == "fake":
        from anima.models.fake import FakeChatModel

        return FakeChatModel()
    if config.backend == "openai_http":
        from anima.models.openai_http import OpenAIChatModel

        s = config.openai_http
        return OpenAIChatModel(_servers(config), s.model, s.api_key, s.timeout)
    from anima.models.llama_cpp import LlamaCppChatModel
    from anima.models.registry import resolve
    from anima.safety.probe import wanted as probe_wanted

    s = config.llama_cpp
    if states is None:
        states = probe_wanted(config)
    return LlamaCppChatModel(
        resolve(config.model),
        name=config.model,
        n_ctx=s.n_ctx,
        n_threads=s.n_threads,
        n_batch=s.n_batch,
        verbose=s.verbose,
        states=config.guard.probe_layer if states else None,
    )


def _servers(config: Config) -> list[str]:
    """openai_http's servers, each allowed by `privacy.remote`. Redaction is decided on
    base_url, the first, so the others must be on the same side of this machine's network."""
    from anima.errors import ConfigError
    from anima.safety.egress import check_allowed, is_local

    urls = config.openai_http.urls
    for url in urls:
        check_allowed(url, config.privacy.remote)
    local = [is_local(url) for url in urls]
    if len(set(local)) > 1:
        inside, outside = urls[local.index(True)], urls[local.index(False)]
        message = f"openai_http.base_urls mixes a server on this network ({inside}) and a remote one ({outside})"
        raise ConfigError(message, "list only local or only remote servers: one privacy rule covers them all")
    return urls


def load_embedder(config: Config) -> Embedder:
    """Embeddings stay on this machine (llama.cpp) whatever the chat backend is,
    unless `embedder = "remote"` asks the OpenAI-compatible server for them."""
    if config.backend == "fake":
        from anima.models.fake import FakeEmbedder

        return FakeEmbedder()
    if config.embedder == "remote":
        from anima.models.openai_http import OpenAIEmbedder

        s = config.openai_http
        return OpenAIEmbedder(_servers(config), s.embed_model, s.api_key, s.timeout)
    from anima.models.llama_cpp import LlamaCppEmbedder
    from anima.models.registry import resolve

    return LlamaCppEmbedder(
        resolve(config.embedder, kind="embed"), name=config.embedder, n_threads=config.llama_cpp.n_threads
    )


__all__ = [
    "Capabilities",
    "ChatModel",
    "Chunk",
    "Completion",
    "Embedder",
    "Message",
    "Options",
    "Usage",
    "complete",
    "load_chat_model",
    "load_embedder",
]

"""Model backends behind two interfaces (`base.py`). Backends import their heavy
dependencies only when built, so one broken backend never takes the others down."""

from __future__ import annotations

from anima.config import Config
from anima.models.base import ChatModel, Chunk, Completion, Embedder, Message, Options, Usage, complete


def load_chat_model(config: Config) -> ChatModel:
    if config.backend == "fake":
        from anima.models.fake import FakeChatModel

        return FakeChatModel()
    if config.backend == "openai_http":
        from anima.models.openai_http import OpenAIChatModel

        s = config.openai_http
        return OpenAIChatModel(s.base_url, s.model, s.api_key, s.timeout)
    from anima.models.llama_cpp import LlamaCppChatModel
    from anima.models.registry import resolve

    s = config.llama_cpp
    return LlamaCppChatModel(resolve(config.model), name=config.model, n_ctx=s.n_ctx, n_threads=s.n_threads, n_batch=s.n_batch, verbose=s.verbose)


def load_embedder(config: Config) -> Embedder:
    """Embeddings stay on this machine (llama.cpp) whatever the chat backend is,
    unless `embedder = "remote"` asks the OpenAI-compatible server for them."""
    if config.backend == "fake":
        from anima.models.fake import FakeEmbedder

        return FakeEmbedder()
    if config.embedder == "remote":
        from anima.models.openai_http import OpenAIEmbedder

        s = config.openai_http
        return OpenAIEmbedder(s.base_url, s.embed_model, s.api_key, s.timeout)
    from anima.models.llama_cpp import LlamaCppEmbedder
    from anima.models.registry import resolve

    return LlamaCppEmbedder(resolve(config.embedder, kind="embed"), name=config.embedder, n_threads=config.llama_cpp.n_threads)


__all__ = ["ChatModel", "Chunk", "Completion", "Embedder", "Message", "Options", "Usage", "complete", "load_chat_model", "load_embedder"]

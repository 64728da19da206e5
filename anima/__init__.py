"""anima: a local-first personal assistant on open-weight language models."""

__version__ = "0.1.0"

from anima.app import Container, build
from anima.config import Config, load_config
from anima.errors import (
    AnimaError,
    BadInput,
    ConfigError,
    ContextTooLong,
    ModelCorrupt,
    ModelNotFound,
    ModelUnavailable,
    NotFound,
    StoreError,
)
from anima.models.base import ChatModel, Chunk, Completion, Embedder, Options, Usage, complete

__all__ = [
    "AnimaError",
    "BadInput",
    "ChatModel",
    "Chunk",
    "Completion",
    "Config",
    "ConfigError",
    "Container",
    "ContextTooLong",
    "Embedder",
    "ModelCorrupt",
    "ModelNotFound",
    "ModelUnavailable",
    "NotFound",
    "Options",
    "StoreError",
    "Usage",
    "__version__",
    "build",
    "complete",
    "load_config",
]

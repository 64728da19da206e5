"""Long-term memory: episodes (every message), semantic memories (distilled), recall."""

from anima.memory.retrieve import Hit
from anima.memory.service import Learner, MemoryService

__all__ = ["Hit", "Learner", "MemoryService"]

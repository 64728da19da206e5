from anima.store.store import Conversation, Store, Turn

__all__ = ["Conversation", "Store", "Turn"]

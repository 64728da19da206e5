from anima.assistant.turn import Assistant, Reply
from anima.persona import Persona, get_persona, personas

__all__ = ["Assistant", "Persona", "Reply", "get_persona", "personas"]

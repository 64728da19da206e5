from anima.persona import Persona, get_persona, personas
from anima.assistant.turn import Assistant, Reply

__all__ = ["Assistant", "Persona", "Reply", "get_persona", "personas"]

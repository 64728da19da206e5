"""`anima serve`: the OpenAI-compatible API (and, later, the web page)."""

from anima.server.app import Server, create_app

__all__ = ["Server", "create_app"]

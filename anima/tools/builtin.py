"""The tools every user has: one list, built per user (each works on that user's store)."""

from __future__ import annotations

import importlib

from anima.tools import Tool, ToolContext, Toolbox

MODULES = ["reminders", "goals", "notes", "calendar", "documents", "calc"]


def builtin_tools(ctx: ToolContext) -> list[Tool]:
    found: list[Tool] = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"anima.tools.{name}")
        except ModuleNotFoundError:
            continue
        if hasattr(module, "tools"):
            found += module.tools(ctx)
    return found


def toolbox(ctx: ToolContext) -> Toolbox:
    tools = builtin_tools(ctx)
    if ctx.config.mcp:  # the user's MCP servers start only when some are configured
        from anima.tools.mcp import mcp_tools

        tools += mcp_tools(ctx.config)
    return Toolbox(tools, timeout=ctx.config.tools.timeout_s)

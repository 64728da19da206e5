"""The tools every user has: one list, built per user (each works on that user's store)."""

from __future__ import annotations

from anima.tools import Tool, Toolbox, ToolContext, calc, calendar, documents, goals, notes, reminders


def builtin_tools(ctx: ToolContext) -> list[Tool]:
    return [tool for module in (reminders, goals, notes, calendar, documents, calc) for tool in module.tools(ctx)]


def toolbox(ctx: ToolContext) -> Toolbox:
    tools = builtin_tools(ctx)
    if ctx.config.mcp:  # the user's MCP servers start only when some are configured
        from anima.tools.mcp import mcp_tools

        tools += mcp_tools(ctx.config)
    return Toolbox(tools, timeout=ctx.config.tools.timeout_s)

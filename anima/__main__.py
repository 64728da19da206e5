"""`python -m anima ...` is the `anima` command (handy in MCP client configs)."""

from anima.cli import main

main()

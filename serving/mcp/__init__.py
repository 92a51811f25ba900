"""The MCP server: a room's knowledge as tools for external assistants (Claude Desktop, IDEs…).

``server.py`` defines the tools (thin), ``service.py`` does the work through
``knowledge.search`` and the same room checks as the graph API, ``http.py`` serves them over
streamable HTTP at ``/api/v1/mcp`` (bearer access token or the login cookie) and ``stdio.py``
over stdin/stdout for ``coagent mcp --user EMAIL``.
"""

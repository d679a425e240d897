"""Micromanager's surface: the REST API under /api/v1 and the operations the MCP tools share with it."""

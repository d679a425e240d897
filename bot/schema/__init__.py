"""JSON Schemas shipped with the bot, read with importlib.resources (package data, not code)."""

"""Helpers for tests/test_devagent.py: the bot's side (key, JWKS, push receiver) and the playbook scripts."""

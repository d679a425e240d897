"""The bridge to dev agents over A2A 1.0: the bot's signing keys and JWKS, the agent registry and
audit log, and the a2a-sdk client calls."""

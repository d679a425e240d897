"""The reference dev agent: an A2A server that runs allowlisted release playbooks."""

__version__ = "0.1.0"

"""The reference dev agent: an A2A server that runs allowlisted release playbooks."""

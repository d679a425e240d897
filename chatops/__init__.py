"""Chat surfaces (PR comments, Slack, Telegram) and the command grammar they share."""

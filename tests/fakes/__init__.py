"""Test doubles for the services the bot talks to; `github.FakeGitHub` is the GitHub REST API."""

"""Release Secretary: a GitHub App that books, verifies and runs releases from the PR thread."""

"""The bot's web pages for people: the setup page (App registration), sign-in and the dashboard."""

"""Slack front end: a slack-bolt app over the agent (HTTP mode mounted in serve, or Socket Mode)."""

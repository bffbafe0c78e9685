"""Local fake servers speaking real protocols (LLM APIs in tests.fakes.llm, Slack in tests.fakes.slack_api)."""

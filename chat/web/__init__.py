"""The Chainlit chat UI mounted into `otel-ai serve` at "/"."""

"""otel_ai package."""

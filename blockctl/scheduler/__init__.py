"""The global scheduler: routing policies (pure), the agent client and the OpenAI-compatible daemon."""

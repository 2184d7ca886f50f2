"""An emulated vLLM instance: vLLM's HTTP API and metrics over the engine model, run in real time, no GPU."""

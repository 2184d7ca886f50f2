"""Host-side programs of blockctl (installed as ``blockctl_agents``): predictor agent, emulator, profiler."""

"""Step-latency profiler: times engine steps of a model's shape with torch and fits the step-time model."""

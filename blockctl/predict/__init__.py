"""What an agent knows about its instance, turned into the engine state a what-if runs on.

One translation from in-flight requests (as a proxy in front of an engine sees them: prompt tokens, the
length it was told, tokens streamed) plus the engine's metrics (possibly seconds old) to the running and
waiting queues of the engine model. The predictor agent, the cluster simulator and the autoscaler all use it,
so the simulator sees only what a real agent sees.
"""

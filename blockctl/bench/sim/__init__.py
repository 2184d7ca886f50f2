"""The cluster simulator: N engine models in virtual time behind a routing policy, with agent-eye predictions."""

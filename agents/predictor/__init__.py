"""Predictor agent: a sidecar that proxies one engine instance and answers what-if latency predictions."""

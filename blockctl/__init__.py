"""blockctl: a cluster manager for LLM serving that balances load by prediction."""

__version__ = "0.1.0"

"""Real clusters over SSH: connection, per-host logs, bootstrap stages, remote process control."""

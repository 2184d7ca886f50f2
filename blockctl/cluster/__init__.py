"""Cluster state and lifecycle: the state file, the local cluster, remote hosts, scaling."""

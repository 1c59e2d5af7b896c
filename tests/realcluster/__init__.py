"""Tier 2: real Patroni + Raft + PostgreSQL clusters in network namespaces."""

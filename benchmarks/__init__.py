"""Peers and scripts for measuring the project that are not part of it (not installed; run from a checkout)."""

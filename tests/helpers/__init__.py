"""Helpers shared by the test modules; plain modules, not collected as tests."""

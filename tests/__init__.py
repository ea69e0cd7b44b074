"""ingle test suite."""

"""Constitutional critic harness."""

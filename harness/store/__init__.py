"""The sample cache and result rows."""

"""Tables and figures from result rows."""

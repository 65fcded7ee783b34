"""Human ratings: rating tasks, the rating web page (``harness rate``) and their result rows."""

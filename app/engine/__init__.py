"""The job engine: create, claim, results, waiting, maintenance. Knows nothing of HTTP."""

"""The job engine: create, claim, results, waiting, sweeping. Knows nothing of HTTP."""

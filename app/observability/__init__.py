"""Activity events and metrics."""

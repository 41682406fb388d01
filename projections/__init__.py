"""Read models built from the event store, each with exactly-once tracking."""

"""keyledger's domain: aggregates, events, value objects and policies.

Nothing in this package imports a framework other than eventsourcing's domain model, and nothing does I/O.
"""

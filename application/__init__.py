"""keyledger's application layer: the event-sourced Application, one function per command, ports, queries."""

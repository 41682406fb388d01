"""Entry point of ``python -m benchmarks``."""

import sys

from benchmarks.cli import main

if __name__ == "__main__":
    try:
        if sys.argv[1:2] == ["seed-audit"]:  # writes to the database itself, unlike the load scenarios
            from benchmarks.seed_audit import main as seed_audit

            sys.exit(seed_audit(sys.argv[2:]))
        sys.exit(main())
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        sys.exit(130)

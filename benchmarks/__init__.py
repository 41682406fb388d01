"""Load generator for keyledger: scenarios run against an already running server, results printed as a table.

Standard library only. Run ``python -m benchmarks --help``; see ``benchmarks/README.md``.
"""

"""Adapters: settings, PostgreSQL, Redis, crypto, HTTP, CLI and the embedded development servers."""

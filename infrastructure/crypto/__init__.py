"""Cryptographic adapters: opaque credential formats, keyed hashes, password hashing, signing keys and JWTs."""

"""Dramatiq workers: expiry sweeps, notifications and key rotation (see workers/broker.py)."""

"""OAuth 2.0 protocol concerns (RFC 6749 and friends), one module per concern."""

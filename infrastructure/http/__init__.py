"""The Litestar HTTP edge: OAuth endpoints, discovery documents and the management API."""

"""Small adapters for the application's ports: the credential minter (the clock is ``infrastructure.clock``)."""

from infrastructure.crypto import opaque
from infrastructure.crypto.opaque import CredentialType


class OpaqueCredentials:
    """keyledger's opaque credential formats (see ``infrastructure.crypto.opaque``)."""

    def client_secret(self) -> str:
        """Returns a new client secret."""
        return opaque.mint(CredentialType.CLIENT_SECRET)

    def refresh_token(self) -> str:
        """Returns a new refresh token."""
        return opaque.mint(CredentialType.REFRESH_TOKEN)

    def client_id(self) -> str:
        """Returns a new public client id."""
        return opaque.new_client_id()

    def is_client_secret(self, value: str) -> bool:
        """Whether ``value`` is a well-formed client secret."""
        return opaque.is_well_formed(value, CredentialType.CLIENT_SECRET)

    def is_refresh_token(self, value: str) -> bool:
        """Whether ``value`` is a well-formed refresh token."""
        return opaque.is_well_formed(value, CredentialType.REFRESH_TOKEN)

    def is_client_id(self, value: str) -> bool:
        """Whether ``value`` has the shape of a public client id (registered or not)."""
        return opaque.is_client_id(value)

    def hint(self, value: str) -> str:
        """Returns the prefix and last four characters."""
        return opaque.hint(value)

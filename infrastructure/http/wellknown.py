"""Discovery documents: RFC 8414 server metadata, RFC 9728 resource metadata, RFC 7517 JWKS."""

from typing import Any

import anyio
from litestar import MediaType, Response, get
from litestar.datastructures import State

from domain.scopes import SCOPES


@get("/.well-known/oauth-authorization-server", tags=["discovery"], summary="RFC 8414 metadata", sync_to_thread=False)
def server_metadata(state: State) -> dict[str, Any]:
    """RFC 8414 section 2: what this authorization server supports."""
    issuer = state.container.settings.issuer
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth2/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": ["password", "client_credentials", "refresh_token"],
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "response_types_supported": [],
        "scopes_supported": sorted(SCOPES),
        "scope_descriptions": SCOPES,
        "service_documentation": f"{issuer}/schema",
    }


@get("/.well-known/oauth-protected-resource/v1", tags=["discovery"], summary="RFC 9728 metadata", sync_to_thread=False)
def resource_metadata(state: State) -> dict[str, Any]:
    """RFC 9728 section 2: the management API as a protected resource."""
    settings = state.container.settings
    return {
        "resource": settings.audience,
        "authorization_servers": [settings.issuer],
        "jwks_uri": f"{settings.issuer}/.well-known/jwks.json",
        "scopes_supported": sorted(SCOPES),
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
    }


@get("/.well-known/jwks.json", tags=["discovery"], summary="RFC 7517 JSON Web Key Set", media_type=MediaType.JSON)
async def jwks(state: State) -> Response[bytes]:
    """The public keys that verify access tokens (short cache so rotations propagate).

    Every request reads the key ring's version (one asynchronous query, as the request gate does), so a key that
    another process pre-published or revoked shows at once; the document itself is encoded once per key snapshot,
    and a changed ring is reloaded in a thread.
    """
    keys = state.container.keys
    if not keys.observe(await state.gate.ring_version()):
        await anyio.to_thread.run_sync(keys.reload)
    return Response(keys.jwks_json(), media_type=MediaType.JSON, headers={"Cache-Control": "public, max-age=300"})

"""An OAuth error is an RFC 6749 body on /oauth2 and an RFC 9457 problem anywhere else (the management API)."""

import json

from litestar import Request

from application.oauth.errors import TemporarilyUnavailable
from infrastructure.http.errors import PROBLEM_JSON, oauth_error_handler


def request_to(path: str) -> Request:  # type: ignore[type-arg]
    return Request({"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "headers": [],
                    "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 80), "root_path": ""})


def test_an_unavailable_limiter_on_sign_up_is_a_503_problem_to_retry() -> None:
    answer = oauth_error_handler(request_to("/v1/signup"), TemporarilyUnavailable("try again shortly"))
    assert (answer.status_code, answer.media_type) == (503, PROBLEM_JSON)
    assert answer.content["status"] == 503 and answer.content["detail"] == "try again shortly"
    assert answer.headers["Retry-After"] == "1" and answer.headers["Cache-Control"] == "no-store"
    assert "error" not in answer.content


def test_the_same_error_on_the_token_endpoint_keeps_rfc_6749s_body() -> None:
    answer = oauth_error_handler(request_to("/oauth2/token"), TemporarilyUnavailable("try again shortly"))
    assert answer.status_code == 503 and answer.media_type != PROBLEM_JSON
    assert json.loads(json.dumps(answer.content)) == {"error": "temporarily_unavailable",
                                                      "error_description": "try again shortly"}

"""The README's walk-through runs verbatim (apart from the server address and a fresh email) against a live server."""

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> str:
    section = README.read_text().split("## Walk-through", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_walkthrough_works(live_server: str) -> None:
    assert shutil.which("curl"), "the walk-through uses curl"
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    script = walkthrough().replace("API=http://127.0.0.1:8000", f"API={live_server}").replace("ada@example.com", email)
    assert email in script and live_server in script
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=False, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert '"client_secret":"klcs_' in lines[0]
    assert re.search(r'"memberships":\[\{"project_id":"[0-9a-f-]{36}","role":"owner"\}\]', result.stdout)
    assert sum('"name":"Engine"' in line for line in lines) == 3  # signup, and the project read by both tokens
    assert '"keys":[' in result.stdout
    # Lifecycle: rotation works, reuse revokes the login, revocation is seen at once, bulk revocation counts.
    assert "rotated token: 200" in lines
    assert re.search(r'\{"error":"invalid_grant","error_description":"the refresh token is [a-z ]+"\}', result.stdout)
    assert "after reuse: 401" in lines
    assert sum(line.startswith('{"active":true,') for line in lines) == 1
    assert '{"active":false}' in lines
    assert "revoked key token: 401" in lines
    listing = next(line for line in lines if line.startswith('{"items":['))
    assert '"status":"revoked"' in listing
    assert '"ended_reason":"revoked by client"' in listing
    assert '{"revoked":1}' in lines

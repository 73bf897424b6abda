"""Where the tests' data lives, all inside the repository (a lone clone runs every test)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Recorded provider payloads from Kong's test suite (Apache-2.0): tests/fixtures/recorded/README.md says which is real.
KONG = ROOT / "tests" / "fixtures" / "recorded" / "kong"
# Requests recorded from real clients (Gemini CLI, ...): tests/fixtures/clients/README.md says how.
RECORDED_CLIENTS = ROOT / "tests" / "fixtures" / "clients"

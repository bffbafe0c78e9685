"""The Slack app's install pieces: the manifest matches what the app handles; `otel-ai slack` fails clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from chat.slack.mount import EVENTS_PATH
from tests.fakes.slack_api import FakeSlack
from tests.fixtures.slack import BOT_TOKEN

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_declares_what_the_app_uses() -> None:
    manifest = yaml.safe_load((ROOT / "chat" / "slack_manifest.yaml").read_text())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "app_mentions:read", "chat:write", "im:history", "reactions:write", "files:write", "commands"}
    events = manifest["settings"]["event_subscriptions"]
    assert set(events["bot_events"]) == {"app_mention", "message.im"}
    assert events["request_url"].endswith(EVENTS_PATH)
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/otel-ai" and command["url"].endswith(EVENTS_PATH)
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert "socket_mode_enabled" in manifest["settings"]


def run_slack_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    clean["OTEL_AI_CONFIG"] = str(tmp_path / "none.toml")
    return subprocess.run([sys.executable, "-m", "otel_ai", "slack", "--data", str(tmp_path / "data"), *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_socket_mode_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    done = run_slack_cli(tmp_path)
    assert done.returncode == 2
    assert "SLACK_APP_TOKEN and SLACK_BOT_TOKEN not set" in done.stderr
    done = run_slack_cli(tmp_path, SLACK_APP_TOKEN="xapp-1-A1-secretvalue")
    assert done.returncode == 2 and "SLACK_BOT_TOKEN not set" in done.stderr
    done = run_slack_cli(tmp_path, SLACK_APP_TOKEN="xoxb-wrong-kind-secretvalue", SLACK_BOT_TOKEN="xoxb-1")
    assert done.returncode == 2 and "starting with xapp-" in done.stderr
    assert "secretvalue" not in done.stderr + done.stdout


def test_socket_mode_names_the_token_slack_refused(tmp_path: Path, fake_slack: FakeSlack) -> None:
    base = {"SLACK_API_URL": fake_slack.api_url}
    done = run_slack_cli(tmp_path, "--server", "http://127.0.0.1:9", SLACK_BOT_TOKEN="xoxb-revoked-secretvalue",
                         SLACK_APP_TOKEN=fake_slack.app_token, **base)
    assert done.returncode == 2, done.stderr
    assert "Slack refused SLACK_BOT_TOKEN (invalid_auth)" in done.stderr
    done = run_slack_cli(tmp_path, "--server", "http://127.0.0.1:9", SLACK_BOT_TOKEN=BOT_TOKEN,
                         SLACK_APP_TOKEN="xapp-1-revoked-secretvalue", **base)
    assert done.returncode == 2, done.stderr
    assert "Slack refused SLACK_APP_TOKEN (invalid_auth)" in done.stderr
    assert "secretvalue" not in done.stderr + done.stdout
    assert [c.method for c in fake_slack.calls] == ["auth.test", "auth.test", "apps.connections.open"]

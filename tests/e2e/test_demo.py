"""The README's first command tells the whole story; keep it working."""

import io

from playbooks.cli import main


def test_demo_tells_the_story():
    out = io.StringIO()
    assert main(["demo"], stdout=out) == 0
    story = out.getvalue()
    assert "CONTAINED  public (critical)" in story
    assert "AWAITING_APPROVAL  cross-account (high)" in story
    assert "tickets: 2, Slack messages: 2" in story  # the replay changed nothing
    assert "*Revoked by <@U0APPROVER>*" in story
    assert "ticket SEC-2 is Done" in story
    assert "(no statements: nobody outside the account can use it)" in story

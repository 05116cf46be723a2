"""`layerguard` commands. The only place that builds real clients and wires them together."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Sequence, TextIO

from integrations.aws import AwsClients
from integrations.jira_client import JiraTickets
from integrations.slack_client import SlackChat
from integrations.state import SQLiteStateStore
from playbooks.config import Config, ConfigError, Secrets, load_config
from playbooks.layer_exposure import Services
from playbooks.runner import EXIT_BAD_INPUT, EXIT_OK, RunReport, read_input, run

log = logging.getLogger("layerguard")


class SetupError(Exception):
    """Something the command needs before it can act is missing (a secret, a file)."""


def build_services(config: Config, secrets: Secrets, dry_run: bool = False) -> Services:
    aws = AwsClients(assume_role=config.aws.assume_role, external_id=config.aws.external_id)
    if dry_run:
        return Services(aws=aws)
    if not secrets.jira_api_token:
        raise SetupError("environment variable JIRA_API_TOKEN is not set (with JIRA_EMAIL for Jira Cloud, "
                         "alone for a Server/Data Center personal access token)")
    if not secrets.slack_bot_token:
        raise SetupError("environment variable SLACK_BOT_TOKEN is not set")
    return Services(
        aws=aws,
        store=SQLiteStateStore(config.state_path),
        tickets=JiraTickets(config.jira.url, config.jira.project, config.jira.issue_type,
                            email=secrets.jira_email, api_token=secrets.jira_api_token,
                            timeout=config.jira.timeout_seconds),
        chat=SlackChat(secrets.slack_bot_token, config.slack.api_url, timeout=config.slack.timeout_seconds),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerguard", description=(
        "Respond to AWS Lambda layer versions shared with other accounts, organizations or the public."))
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(sub):
        sub.add_argument("--config", default=os.environ.get("LAYERGUARD_CONFIG", "config.yaml"),
                         help="config file (default: $LAYERGUARD_CONFIG or ./config.yaml)")
        return sub

    respond = with_config(commands.add_parser("respond", help="run the playbook on detections"))
    respond.add_argument("paths", nargs="+", metavar="PATH",
                         help="CloudTrail record/log (.json, .gz), EventBridge event, Elastic alert, JSON Lines; - for stdin")
    respond.add_argument("--dry-run", action="store_true", help="decide and report; change nothing anywhere")
    respond.add_argument("--json", action="store_true", help="one JSON object per detection")

    cases = with_config(commands.add_parser("cases", help="list cases and their status"))
    cases.add_argument("--json", action="store_true")

    commands.add_parser("demo", help="run the whole story against local AWS, Jira and Slack stand-ins")
    return parser


def main(argv: Sequence[str] | None = None, stdin=None, stdout: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    logging.basicConfig(level=os.environ.get("LAYERGUARD_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from integrations.sandbox.demo import run_demo

        return run_demo(out)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"layerguard: config error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "cases":
        return _cases(config, args.json, out)
    return _respond(config, args, stdin, out)


def _respond(config: Config, args, stdin, out: TextIO) -> int:
    intake = read_input(args.paths, stdin)
    try:
        services = build_services(config, Secrets.from_environment(), dry_run=args.dry_run)
    except SetupError as exc:
        print(f"layerguard: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = run(intake, config, services, dry_run=args.dry_run)
    _print_report(report, args.json, out)
    return report.exit_code


def _print_report(report: RunReport, as_json: bool, out: TextIO) -> None:
    for error in report.intake_errors:
        print(f"layerguard: bad input: {error}", file=sys.stderr)
    for outcome in report.outcomes:
        if as_json:
            print(json.dumps(outcome.as_json(), sort_keys=True), file=out)
            continue
        prefix = "[dry run] " if outcome.dry_run else ""
        head = f"{prefix}{outcome.decision.upper()}"
        if outcome.grant:
            head += f"  {outcome.grant} ({outcome.severity}) grant to {outcome.principal} on {outcome.layer_version_arn}"
        print(head, file=out)
        print(f"  event {outcome.event_id or '-'}  case {outcome.case_id or '-'}  ticket {outcome.ticket or '-'}", file=out)
        if outcome.removed_statements:
            print(f"  removed statements: {', '.join(outcome.removed_statements)}", file=out)
        if outcome.consumers:
            print(f"  consumers: {len(outcome.consumers)} ({', '.join(outcome.consumers[:3])}"
                  f"{', …' if len(outcome.consumers) > 3 else ''})", file=out)
        print(f"  why: {outcome.reason}", file=out)
        for error in outcome.errors:
            print(f"  ERROR: {error}", file=out)


def _cases(config: Config, as_json: bool, out: TextIO) -> int:
    if not config.state_path.exists():
        print("no cases yet (state file does not exist: " + str(config.state_path) + ")", file=out)
        return EXIT_OK
    store = SQLiteStateStore(config.state_path)
    for case in store.list_cases():
        if as_json:
            print(json.dumps({
                "case_id": case.case_id, "status": case.status, "grant": case.grant_kind, "severity": case.severity,
                "layer_version_arn": case.layer_version_arn, "grantee": case.grantee, "ticket": case.ticket_key,
                "slack_ts": case.slack_ts, "removed_statements": [s.get("Sid") for s in case.removed_statements],
                "history": [{"at": h.at, "status": h.status, "note": h.note} for h in store.history(case.case_id)],
            }, sort_keys=True), file=out)
        else:
            updated = datetime.fromtimestamp(case.updated_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
            print(f"{case.case_id}  {case.status:<18} {case.grant_kind:<20} {case.layer_version_arn}  "
                  f"{case.grantee}  ticket={case.ticket_key or '-'}  updated={updated}", file=out)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""`layerguard` commands. The only place that builds real clients and wires them together."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from typing import Sequence, TextIO

import boto3

from actions.collect_context import Investigator
from integrations.aws import AwsClients
from integrations.jira_client import JiraTickets
from integrations.slack_client import SlackChat
from integrations.state import SQLiteStateStore, StateStore
from integrations.state_dynamodb import DynamoDBStateStore
from playbooks.config import Config, ConfigError, Secrets, load_config
from playbooks.layer_exposure import Services
from playbooks.runner import EXIT_BAD_INPUT, EXIT_OK, RunReport, read_input, run

log = logging.getLogger("layerguard")


class SetupError(Exception):
    """Something the command needs before it can act is missing (a secret, a file)."""


def build_investigator(config: Config, aws: AwsClients, store=None) -> Investigator:
    return Investigator(aws, config.investigation,
                        prior_grants=store.grants_by_actor if store else (lambda arn: 0))


def open_store(config: Config, aws: AwsClients) -> StateStore:
    """The SQLite file, or the DynamoDB table shared by every process and Lambda function."""
    if not config.state_table:
        return SQLiteStateStore(config.state_path)
    return DynamoDBStateStore(aws.client("dynamodb", "", home_region(config)), config.state_table)


def home_region(config: Config) -> str:
    """Where LayerGuard's own resources (state table, queue) are: state.dynamodb_region, else the environment's."""
    region = config.state_region or boto3.session.Session().region_name
    if not region:
        raise SetupError("state.dynamodb_region is not set and no AWS region is configured (AWS_REGION)")
    return region


def build_services(config: Config, secrets: Secrets, dry_run: bool = False, aws: AwsClients | None = None) -> Services:
    aws = aws or AwsClients(assume_role=config.aws.assume_role, external_id=config.aws.external_id)
    if dry_run:
        return Services(aws=aws, investigator=build_investigator(config, aws))
    if not secrets.jira_api_token:
        raise SetupError("environment variable JIRA_API_TOKEN is not set (with JIRA_EMAIL for Jira Cloud, "
                         "alone for a Server/Data Center personal access token)")
    if not secrets.slack_bot_token:
        raise SetupError("environment variable SLACK_BOT_TOKEN is not set")
    store = open_store(config, aws)
    return Services(
        aws=aws,
        store=store,
        investigator=build_investigator(config, aws, store),
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

    serve = with_config(commands.add_parser("serve", help="Slack interactivity endpoint, detection webhook, health"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)

    with_config(commands.add_parser("expire", help="send reminders, apply approval timeouts and run pending jobs once"))
    with_config(commands.add_parser("retry", help="deliver every pending ticket, message and decision now"))

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
    if args.command == "serve":
        return _serve(config, args, out)
    if args.command in ("expire", "retry"):
        return _run_jobs(config, out, expire=args.command == "expire")
    return _respond(config, args, stdin, out)


def _serve(config: Config, args, out: TextIO) -> int:
    from playbooks.service import LayerGuardService, webhook_token_from_environment

    secrets = Secrets.from_environment()
    try:
        services = build_services(config, secrets)
        if not secrets.slack_signing_secret:
            raise SetupError("environment variable SLACK_SIGNING_SECRET is not set")
    except SetupError as exc:
        print(f"layerguard: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    token = webhook_token_from_environment()
    service = LayerGuardService(config, services, secrets.slack_signing_secret, token, args.host, args.port)
    service.start()
    print(f"layerguard serving on {service.url} (POST /slack/actions, POST /detections"
          f"{'' if token else ' [disabled: no LAYERGUARD_WEBHOOK_TOKEN]'}, GET /healthz)", file=out, flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    service.stop()
    return EXIT_OK


def _run_jobs(config: Config, out: TextIO, expire: bool) -> int:
    from playbooks.approvals import expire_due
    from playbooks.worker import Worker

    try:
        services = build_services(config, Secrets.from_environment())
    except SetupError as exc:
        print(f"layerguard: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    worker = Worker(config, services)
    if expire:
        for line in expire_due(config, services.store):
            print(line, file=out)
        ran = worker.drain()
    else:
        ran = worker.retry_all()
    pending = services.store.pending_jobs()
    print(f"ran {ran} job(s); {len(pending)} still pending", file=out)
    return EXIT_OK if not pending else 1


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
    if not config.state_table and not config.state_path.exists():
        print("no cases yet (state file does not exist: " + str(config.state_path) + ")", file=out)
        return EXIT_OK
    store = open_store(config, AwsClients())
    for case in store.list_cases():
        if as_json:
            print(json.dumps({
                "case_id": case.case_id, "status": case.status, "grant": case.grant_kind, "severity": case.severity,
                "layer_version_arn": case.layer_version_arn, "grantee": case.grantee, "ticket": case.ticket_key,
                "slack_ts": case.slack_ts, "removed_statements": [s.get("Sid") for s in case.removed_statements],
                "decision": case.decision, "decision_by": case.decision_by,
                "history": [{"at": h.at, "status": h.status, "note": h.note} for h in store.history(case.case_id)],
            }, sort_keys=True), file=out)
        else:
            updated = _utc(case.updated_at)
            print(f"{case.case_id}  {case.status:<18} {case.grant_kind:<20} {case.layer_version_arn}  "
                  f"{case.grantee}  ticket={case.ticket_key or '-'}  updated={updated}", file=out)
    for exception in store.list_exceptions():
        line = {"exception": {"layer_arn": exception.layer_arn, "grantee": exception.grantee,
                              "expires_at": _utc(exception.expires_at), "kept_by": exception.created_by,
                              "case_id": exception.case_id}}
        print(json.dumps(line, sort_keys=True) if as_json else
              f"exception  {exception.grantee} on {exception.layer_arn} trusted until {_utc(exception.expires_at)} "
              f"(kept by {exception.created_by}, case {exception.case_id})", file=out)
    for job, error in store.pending_jobs():
        line = {"pending": {"job": job.job_id, "kind": job.kind, "case_id": job.case_id, "attempts": job.attempts,
                            "last_error": error}}
        print(json.dumps(line, sort_keys=True) if as_json else
              f"pending    {job.kind} for {job.case_id} (attempts {job.attempts}{', ' + error if error else ''})",
              file=out)
    return EXIT_OK


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


if __name__ == "__main__":
    sys.exit(main())

"""Collect context (read-only): everything the seed's investigation guide asks for.

The layer version and its whole policy; the policies of its other versions; the
functions that use it in every account it may reach; the actor's profile; related
CloudTrail activity; and whether the layer content holds secrets. Each part that
fails is named in ``errors`` with what to run by hand; the rest is still returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

from actions.actor_profile import ActorProfile, profile_actor
from actions.consumers import Consumer, FunctionInventory, consumers_of_layer, find_consumers
from actions.related_activity import ActivityEvent, related_activity
from actions.scan_layer import Limits, SecretScan, scan_layer_zip
from integrations.aws import (AwsClients, LayerPolicy, download, get_layer_policy, get_layer_version,
                              list_layer_versions, organization_account_ids)
from playbooks.detection import Detection

__all__ = ["Consumer", "consumers_of_layer", "LayerContext", "Investigator", "InvestigationSettings"]


@dataclass(frozen=True)
class VersionExposure:
    version: int
    statements: tuple[dict, ...]


@dataclass(frozen=True)
class LayerContext:
    layer_version: dict | None
    policy: LayerPolicy
    consumers: tuple[Consumer, ...]
    errors: tuple[str, ...] = ()
    actor: ActorProfile | None = None
    other_versions: tuple[VersionExposure, ...] = ()
    timeline: tuple[ActivityEvent, ...] = ()
    secrets: SecretScan | None = None
    accounts_scanned: tuple[str, ...] = ()

    @property
    def consumer_arns(self) -> list[str]:
        return [c.function_arn for c in self.consumers]


@dataclass(frozen=True)
class InvestigationSettings:
    accounts: tuple[str, ...] = ()  # besides the layer's own; () = only the layer's account
    organization_accounts: bool = False
    inventory_ttl_seconds: float = 300.0
    max_concurrent_accounts: int = 8
    activity_before: timedelta = timedelta(hours=24)
    activity_after: timedelta = timedelta(hours=1)
    lookup_activity: bool = True
    scan_secrets: bool = True
    max_layer_bytes: int = 50 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)


class Investigator:
    def __init__(self, aws: AwsClients, settings: InvestigationSettings = InvestigationSettings(),
                 prior_grants: Callable[[str], int] = lambda arn: 0):
        self.aws = aws
        self.settings = settings
        self.inventory = FunctionInventory(aws, settings.inventory_ttl_seconds)
        self.prior_grants = prior_grants

    def accounts_for(self, detection: Detection, errors: list[str]) -> list[str]:
        accounts = [detection.layer_account_id, *self.settings.accounts]
        if self.settings.organization_accounts:
            try:
                accounts += organization_account_ids(self.aws.client("organizations", "", "us-east-1"))
            except Exception as exc:
                errors.append(f"organizations:ListAccounts failed ({type(exc).__name__}): only listed accounts scanned")
        return list(dict.fromkeys(accounts))

    def collect(self, detection: Detection) -> LayerContext:
        errors: list[str] = []

        def attempt(what: str, fn, default):
            try:
                return fn()
            except Exception as exc:  # context is best effort; the case goes on without it
                errors.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
                return default

        lambda_client = attempt("AWS session", lambda: self.aws.lambda_client(detection.layer_account_id,
                                                                              detection.region), None)
        if lambda_client is None:
            errors.append(_by_hand(detection))
            return LayerContext(None, LayerPolicy(exists=False), (), tuple(errors),
                                actor=profile_actor(detection, self.prior_grants(detection.actor.arn)))
        layer_version = attempt("GetLayerVersion", lambda: get_layer_version(
            lambda_client, detection.layer_arn, detection.version), None)
        policy = attempt("GetLayerVersionPolicy", lambda: get_layer_policy(
            lambda_client, detection.layer_arn, detection.version), LayerPolicy(exists=False))
        accounts = self.accounts_for(detection, errors)
        consumers, scan_errors = find_consumers(self.inventory, accounts, detection.region, detection.layer_arn,
                                                detection.version, self.settings.max_concurrent_accounts)
        errors += scan_errors
        other_versions = attempt("ListLayerVersions", lambda: self._other_versions(lambda_client, detection), ())
        timeline = ()
        if self.settings.lookup_activity:
            timeline = tuple(attempt("CloudTrail LookupEvents", lambda: related_activity(
                self.aws.client("cloudtrail", detection.account_id, detection.region), detection,
                self.settings.activity_before, self.settings.activity_after), []))
        secrets = None
        if self.settings.scan_secrets and layer_version:
            secrets = attempt("layer content scan", lambda: self._scan(layer_version), None)
        return LayerContext(
            layer_version=layer_version, policy=policy, consumers=tuple(consumers), errors=tuple(errors),
            actor=profile_actor(detection, self.prior_grants(detection.actor.arn)),
            other_versions=other_versions, timeline=timeline, secrets=secrets, accounts_scanned=tuple(accounts))

    def _other_versions(self, lambda_client, detection: Detection) -> tuple[VersionExposure, ...]:
        return tuple(
            VersionExposure(version, get_layer_policy(lambda_client, detection.layer_arn, version).statements)
            for version in list_layer_versions(lambda_client, detection.layer_arn) if version != detection.version)

    def _scan(self, layer_version: dict) -> SecretScan | None:
        location = (layer_version.get("Content") or {}).get("Location", "")
        if not location.startswith(("https://", "http://")):
            return SecretScan((), 0, (f"no downloadable content location ({location[:40]!r})",))
        return scan_layer_zip(download(location, self.settings.max_layer_bytes), self.settings.limits)


def _by_hand(detection: Detection) -> str:
    return (f"Run by hand with credentials for {detection.layer_account_id}: aws lambda get-layer-version-policy "
            f"--layer-name {detection.layer_arn} --version-number {detection.version} --region {detection.region}; "
            f"aws lambda list-functions --function-version ALL --region {detection.region}")

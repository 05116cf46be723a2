"""Collect context (read-only): everything the seed's investigation guide asks for.

The layer version and its whole policy; the policies of its other versions; the
functions that use it in every account it may reach; the actor's profile; related
CloudTrail activity; and whether the layer content holds secrets. Each part that
fails is named in ``errors`` with what to run by hand; the rest is still returned.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

from actions.actor_profile import ActorProfile, profile_actor
from actions.consumers import Consumer, FunctionInventory, consumers_of_layer, find_consumers
from actions.related_activity import ActivityEvent, related_activity
from actions.scan_layer import Limits, SecretScan, scan_layer_zip
from integrations.aws import (AwsClients, LayerPolicy, download, get_layer_policy, get_layer_version,
                              list_layer_versions)
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
                accounts += self.inventory.organization_accounts()
            except Exception as exc:
                errors.append(f"organizations:ListAccounts failed ({type(exc).__name__}): only listed accounts scanned")
        return list(dict.fromkeys(accounts))

    def collect(self, detection: Detection) -> LayerContext:
        try:
            lambda_client = self.aws.lambda_client(detection.layer_account_id, detection.region)
        except Exception as exc:  # context is best effort; the case goes on without it
            failed = [_failure("AWS session", exc), _by_hand(detection)]
            return LayerContext(None, LayerPolicy(exists=False), (), tuple(failed),
                                actor=profile_actor(detection, self.prior_grants(detection.actor.arn)))
        errors: list[str] = []
        accounts = self.accounts_for(detection, errors)
        settings = self.settings
        # The parts are independent. The consumer scan is the long pole (ListFunctions pages
        # are sequential within an account) and CloudTrail allows 2 lookups a second, so
        # everything else is gathered while they run: one detection costs its slowest part.
        with ThreadPoolExecutor(max_workers=6, thread_name_prefix="investigate") as pool:
            consumers = pool.submit(find_consumers, self.inventory, accounts, detection.region, detection.layer_arn,
                                    detection.version, settings.max_concurrent_accounts)
            parts: dict[str, Callable[[], object]] = {
                "GetLayerVersion": lambda: get_layer_version(lambda_client, detection.layer_arn, detection.version),
                "GetLayerVersionPolicy": lambda: get_layer_policy(lambda_client, detection.layer_arn,
                                                                  detection.version),
                "ListLayerVersions": lambda: self._other_versions(lambda_client, detection),
            }
            if settings.lookup_activity:
                parts["CloudTrail LookupEvents"] = lambda: tuple(related_activity(
                    self.aws.client("cloudtrail", detection.account_id, detection.region), detection,
                    settings.activity_before, settings.activity_after))
            running = {what: pool.submit(_attempt, what, part) for what, part in parts.items()}
            layer_version = running["GetLayerVersion"].result()[0]
            if settings.scan_secrets and layer_version:
                running["layer content scan"] = pool.submit(_attempt, "layer content scan",
                                                            lambda: self._scan(layer_version))
            found, scan_errors = consumers.result()
            results = {what: future.result() for what, future in running.items()}
        errors += scan_errors + [error for _, error in results.values() if error]

        def result(what: str, default=None):
            return (results.get(what) or (None, None))[0] or default

        return LayerContext(
            layer_version=layer_version, policy=result("GetLayerVersionPolicy", LayerPolicy(exists=False)),
            consumers=tuple(found), errors=tuple(errors),
            actor=profile_actor(detection, self.prior_grants(detection.actor.arn)),
            other_versions=result("ListLayerVersions", ()), timeline=result("CloudTrail LookupEvents", ()),
            secrets=result("layer content scan"), accounts_scanned=tuple(accounts))

    def _other_versions(self, lambda_client, detection: Detection) -> tuple[VersionExposure, ...]:
        return tuple(
            VersionExposure(version, get_layer_policy(lambda_client, detection.layer_arn, version).statements)
            for version in list_layer_versions(lambda_client, detection.layer_arn) if version != detection.version)

    def _scan(self, layer_version: dict) -> SecretScan | None:
        location = (layer_version.get("Content") or {}).get("Location", "")
        if not location.startswith(("https://", "http://")):
            return SecretScan((), 0, (f"no downloadable content location ({location[:40]!r})",))
        return scan_layer_zip(download(location, self.settings.max_layer_bytes), self.settings.limits)


def _attempt(what: str, part: Callable[[], object]) -> tuple[object, str | None]:
    """(value, None), or (None, what failed and why): one part failing never stops the others."""
    try:
        return part(), None
    except Exception as exc:  # context is best effort; the case goes on without it
        return None, _failure(what, exc)


def _failure(what: str, exc: Exception) -> str:
    return f"{what}: {type(exc).__name__}: {str(exc)[:200]}"


def _by_hand(detection: Detection) -> str:
    return (f"Run by hand with credentials for {detection.layer_account_id}: aws lambda get-layer-version-policy "
            f"--layer-name {detection.layer_arn} --version-number {detection.version} --region {detection.region}; "
            f"aws lambda list-functions --function-version ALL --region {detection.region}")

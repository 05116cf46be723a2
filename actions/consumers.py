"""Find every function that uses a layer: in the layer's account and in every account it
may be shared with, always in the layer's region (a function only uses layers of its own
region).

``ListFunctions`` pages (50 functions each) are sequential within one account, so
accounts are scanned concurrently (bounded), no call is made per function (aliases are
listed only for functions that use the layer), and each account's inventory is kept for
a while so a burst of detections scans once.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

from integrations.aws import AwsClients, iter_function_configurations, list_aliases, organization_account_ids


@dataclass(frozen=True)
class Consumer:
    function_arn: str
    function_name: str
    version: str
    layer_version_arn: str
    pins_granted_version: bool
    account_id: str = ""
    aliases: tuple[str, ...] = ()


def consumers_of_layer(functions: Iterable[dict], layer_arn: str, version: int, account_id: str = "") -> list[Consumer]:
    """Functions whose configuration references any version of ``layer_arn`` (pure)."""
    granted = f"{layer_arn}:{version}"
    found = []
    for function in functions:
        for layer in function.get("Layers") or []:
            arn = layer.get("Arn", "")
            if arn.rsplit(":", 1)[0] == layer_arn:
                found.append(Consumer(
                    function_arn=function.get("FunctionArn", ""),
                    function_name=function.get("FunctionName", ""),
                    version=str(function.get("Version", "$LATEST")),
                    layer_version_arn=arn,
                    pins_granted_version=arn == granted,
                    account_id=account_id or _account_of(function.get("FunctionArn", "")),
                ))
    return found


def _account_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


class FunctionInventory:
    """Function configurations per (account, region), and the organization's accounts,
    kept ``ttl_seconds``. Concurrent requests for the same entry wait for one load."""

    def __init__(self, aws: AwsClients, ttl_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.aws = aws
        self.ttl = ttl_seconds
        self.clock = clock
        self._entries: dict[tuple[str, str], tuple[float, list]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.scans = 0

    def functions(self, account_id: str, region: str) -> list[dict]:
        def scan() -> list[dict]:
            self.scans += 1
            return list(iter_function_configurations(self.aws.lambda_client(account_id, region)))
        return self._kept((account_id, region), scan)

    def organization_accounts(self) -> list[str]:
        return self._kept(("organization", ""), lambda: organization_account_ids(
            self.aws.client("organizations", "", "us-east-1")))

    def _kept(self, key: tuple[str, str], load: Callable[[], list]) -> list:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            entry = self._entries.get(key)
            if entry and self.clock() - entry[0] < self.ttl:
                return entry[1]
            value = load()
            self._entries[key] = (self.clock(), value)
            return value


def find_consumers(inventory: FunctionInventory, accounts: list[str], region: str, layer_arn: str, version: int,
                   max_concurrent: int = 8) -> tuple[list[Consumer], list[str]]:
    """Consumers across ``accounts`` (scanned concurrently) and what could not be scanned."""

    def scan(account_id: str) -> list[Consumer]:
        consumers = consumers_of_layer(inventory.functions(account_id, region), layer_arn, version, account_id)
        return _with_aliases(inventory.aws.lambda_client(account_id, region), consumers)

    found: list[Consumer] = []
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(max_concurrent, len(accounts)))) as pool:
        futures = [(account, pool.submit(scan, account)) for account in accounts]
        for account, future in futures:
            try:
                found += future.result()
            except Exception as exc:
                errors.append(
                    f"account {account}: functions could not be listed ({type(exc).__name__}: {str(exc)[:160]}). "
                    f"By hand, with credentials for {account}: aws lambda list-functions --function-version ALL "
                    f"--region {region} --query \"Functions[?Layers[?starts_with(Arn, '{layer_arn}:')]].FunctionArn\"")
    return found, errors


def _with_aliases(lambda_client, consumers: list[Consumer]) -> list[Consumer]:
    """Aliases pointing at consumer versions: one ListAliases per consuming function only."""
    names = sorted({c.function_name for c in consumers if c.version != "$LATEST"})
    by_version: dict[tuple[str, str], list[str]] = {}
    for name in names:
        for alias in list_aliases(lambda_client, name):
            by_version.setdefault((name, str(alias.get("FunctionVersion"))), []).append(alias.get("Name", ""))
    return [Consumer(**{**c.__dict__, "aliases": tuple(sorted(by_version.get((c.function_name, c.version), [])))})
            for c in consumers]

"""The one place that decides how each external system is retried.

Each client's own retry loop is switched off (botocore ``max_attempts=1``, the
``jira`` client's ``max_retries=0``, slack_sdk without retry handlers) so tenacity
alone owns the attempt count. Calls that create something (a ticket, a message) are
retried only when the service said it did not act (429/503 or a refused connection).
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, Callable

import botocore.config
import botocore.exceptions
import requests
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

AWS_THROTTLING_CODES = frozenset({
    "TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded",
    "ServiceUnavailableException", "ServiceException", "InternalFailure",
    "ProvisionedThroughputExceededException",  # DynamoDB
})

BOTOCORE_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "total_max_attempts": 1},
    connect_timeout=5,
    read_timeout=20,
)


def aws_error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _aws_retryable(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return aws_error_code(exc) in AWS_THROTTLING_CODES or status >= 500
    return isinstance(exc, (botocore.exceptions.EndpointConnectionError,
                            botocore.exceptions.ConnectTimeoutError))


def _retry_after_or_backoff(exc_of: Callable[[BaseException], float | None], backoff) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = exc_of(exc) if exc else None
        return min(hinted, 30.0) if hinted is not None else backoff(state)
    return wait


def _parse_retry_after(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        parsed = email.utils.parsedate_to_datetime(str(value)) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


# ----------------------------------------------------------------------------- AWS

aws_retry = retry(
    retry=retry_if_exception(_aws_retryable),
    wait=wait_exponential(multiplier=0.2, max=5) + wait_random(0, 0.2),
    stop=stop_after_attempt(6) | stop_after_delay(30),
    reraise=True,
)


# ----------------------------------------------------------------------------- Jira

def _jira_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None and isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
    return status


def never_sent(exc: BaseException) -> bool:
    """True when the request cannot have reached the server (refused, or no connection in time).

    A connection dropped or timed out after sending is uncertain: the server may have
    acted, so that is not retried blindly.
    """
    import urllib3.exceptions

    if isinstance(exc, (requests.ConnectTimeout, ConnectionRefusedError)):
        return True
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                                ConnectionRefusedError)):
            return True
        pending += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        pending += [e for e in (getattr(current, "reason", None), current.__cause__, current.__context__)
                    if isinstance(e, BaseException)]
    return False


def _jira_retryable(exc: BaseException) -> bool:
    if isinstance(exc, requests.ConnectionError):
        return never_sent(exc)
    return _jira_status(exc) in (429, 503)


def _jira_retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    return _parse_retry_after(headers.get("Retry-After"))


jira_retry = retry(
    retry=retry_if_exception(_jira_retryable),
    wait=_retry_after_or_backoff(_jira_retry_after, wait_exponential(multiplier=0.5, max=10) + wait_random(0, 0.5)),
    stop=stop_after_attempt(4) | stop_after_delay(60),
    reraise=True,
)


# ----------------------------------------------------------------------------- Slack

def _slack_retryable(exc: BaseException) -> bool:
    from slack_sdk.errors import SlackApiError

    if isinstance(exc, SlackApiError):
        return exc.response.status_code == 429 or exc.response.get("error") == "ratelimited"
    return never_sent(exc)


def _slack_retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    lowered = {str(k).lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after")
    if isinstance(value, list):
        value = value[0] if value else None
    return _parse_retry_after(value)


slack_retry = retry(
    retry=retry_if_exception(_slack_retryable),
    wait=_retry_after_or_backoff(_slack_retry_after, wait_exponential(multiplier=0.5, max=10) + wait_random(0, 0.5)),
    stop=stop_after_attempt(4) | stop_after_delay(60),
    reraise=True,
)

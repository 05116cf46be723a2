"""Who made the grant, with what, and from where (pure, from the event alone)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from playbooks.detection import Detection

IDENTITY_TYPES = {
    "IAMUser": "IAM user",
    "AssumedRole": "assumed role",
    "Root": "root user of the account",
    "FederatedUser": "federated user",
    "AWSService": "AWS service",
    "AWSAccount": "another AWS account",
    "IdentityCenterUser": "IAM Identity Center user",
}

# Most specific first: IaC tools run on SDKs, so they are recognised before the SDK.
_TOOLS: tuple[tuple[str, str], ...] = (
    (r"(?i)terraform", "Terraform"),
    (r"(?i)cloudformation\.amazonaws\.com|AWSCloudFormation", "CloudFormation"),
    (r"(?i)aws-cdk|\bcdk/", "AWS CDK"),
    (r"(?i)pulumi", "Pulumi"),
    (r"(?i)^(?:\[)?(?:S3Console|console\.amazonaws\.com|signin\.amazonaws\.com)|AWS Internal", "AWS console"),
    (r"(?i)^aws-cli/", "AWS CLI"),
    (r"(?i)^aws-sdk-js|aws-sdk-nodejs|lang/js", "AWS SDK for JavaScript"),
    (r"(?i)^Boto3/|^botocore/", "AWS SDK for Python (boto3)"),
    (r"(?i)^aws-sdk-go", "AWS SDK for Go"),
    (r"(?i)^aws-sdk-java", "AWS SDK for Java"),
    (r"(?i)^aws-sdk-dotnet|aws-sdk-net", "AWS SDK for .NET"),
    (r"(?i)^aws-sdk-ruby", "AWS SDK for Ruby"),
    (r"(?i)^aws-sdk-rust", "AWS SDK for Rust"),
    (r"(?i)^aws-sdk-php", "AWS SDK for PHP"),
    (r"(?i)\.amazonaws\.com$", "an AWS service"),
)


_PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


@dataclass(frozen=True)
class ActorProfile:
    identity: str
    arn: str
    session_issuer: str
    mfa: str
    tool: str
    source: str
    prior_grants: int = 0


def tool_from_user_agent(user_agent: str) -> str:
    for pattern, tool in _TOOLS:
        if re.search(pattern, user_agent or ""):
            return tool
    return "unknown tool" if user_agent else "no user agent"


def source_kind(source_ip: str) -> str:
    if not source_ip:
        return "unknown"
    if source_ip.endswith(".amazonaws.com") or source_ip == "AWS Internal":
        return f"an AWS service ({source_ip})"
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return f"not an IP address ({source_ip[:60]})"
    if address.is_global:
        return f"public address {source_ip}"
    if any(address in network for network in _PRIVATE_NETWORKS) or address.is_loopback or address.is_link_local:
        return f"private address {source_ip} (VPC endpoint or internal network)"
    return f"reserved address {source_ip} (documentation, test or special-purpose range)"


def profile_actor(detection: Detection, prior_grants: int = 0) -> ActorProfile:
    actor = detection.actor
    identity = IDENTITY_TYPES.get(actor.type, actor.type or "unknown identity type")
    if actor.type == "AWSService" and actor.invoked_by:
        identity += f" ({actor.invoked_by})"
    mfa = {True: "yes", False: "no", None: "not reported"}[actor.mfa_authenticated]
    return ActorProfile(identity=identity, arn=actor.arn or actor.invoked_by or "-",
                        session_issuer=actor.session_issuer_arn or "-", mfa=mfa,
                        tool=tool_from_user_agent(detection.user_agent), source=source_kind(detection.source_ip),
                        prior_grants=prior_grants)

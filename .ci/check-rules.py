#!/usr/bin/env python3
"""Checks template.yaml's parameter constraints and Rules against parameter sets.

CloudFormation evaluates Rules (and AllowedPattern, AllowedValues, ...) only
when a stack is created or updated; no offline tool here does it:
`sam validate --lint` runs cfn-lint, and cfn-lint 1.x, even with
`--parameters K=V`, neither evaluates Rules nor AllowedPattern (on a SAM
template it does not check AllowedValues either). So this script evaluates
them itself, following the CloudFormation semantics of the functions the
template uses (Ref, Fn::Equals/Not/And/Or, Fn::Contains, Fn::EachMemberEquals,
Fn::EachMemberIn); any other function makes it fail loudly rather than guess.

Each case is a parameter set (defaults + overrides) and the exact set of rule
and parameter names it must be rejected by (empty: accepted). The first case
is samconfig.toml's parameter_overrides as shipped: docs/deploy.md's checklist with
its blanks still blank, so rejected only for those.

Then the template as CloudFormation receives it: SAM's transform applied (by
the samtranslator that SAM CLI brings), and cfn-lint run on the result.
cfn-lint 1.58 checks a SAM resource only against its own SAM schema; this
checks what SAM makes of it (the AWS::Lambda::CapacityProvider and its
operator role, and the GetAtt the function makes on it) against
CloudFormation's schemas. Run:
    python3 .ci/check-rules.py [template.yaml]
"""

from __future__ import annotations

import json
import os
import re
import sys

from cfnlint.decode import cfn_yaml  # installed with aws-sam-cli

VPC = "vpc-0123456789abcdef0"
SUBNETS = "subnet-0123456789abcdef0,subnet-0fedcba9876543210"
JWT = {"JwtIssuer": "https://issuer.example.com/", "JwtAudience": "orders-api"}
EXISTING = "rediss://my-cache.abc123.use1.cache.amazonaws.com:6379"
SG = "sg-0123456789abcdef0"
MANAGED = {"ComputeMode": "managed-instances"}

CASES: list[tuple[str, dict[str, str], set[str]]] = [
    # Rejected: the defaults alone have no Redis setup and no JWT issuer.
    ("defaults", {}, {"CreatedCacheNeedsANetwork", "JwtNeedsIssuerAndAudience"}),
    ("no RedisUrl, no SubnetIds/VpcId", {**JWT}, {"CreatedCacheNeedsANetwork"}),
    ("no RedisUrl, VpcId but no SubnetIds", {"VpcId": VPC, **JWT}, {"CreatedCacheNeedsANetwork"}),
    ("no RedisUrl, SubnetIds but no VpcId", {"SubnetIds": SUBNETS, **JWT}, {"CreatedCacheNeedsANetwork"}),
    ("empty entry in SubnetIds", {"VpcId": VPC, "SubnetIds": "subnet-0123456789abcdef0,", **JWT},
     {"CreatedCacheNeedsANetwork"}),
    ("AuthMode=jwt without issuer", {"VpcId": VPC, "SubnetIds": SUBNETS, "JwtAudience": "orders-api"},
     {"JwtNeedsIssuerAndAudience"}),
    ("AuthMode=jwt without audience", {"VpcId": VPC, "SubnetIds": SUBNETS,
                                        "JwtIssuer": "https://issuer.example.com/"},
     {"JwtNeedsIssuerAndAudience"}),
    ("JWT issuer not https", {"VpcId": VPC, "SubnetIds": SUBNETS, "JwtIssuer": "http://x/",
                              "JwtAudience": "a"}, {"JwtIssuer"}),
    ("password in RedisUrl", {"RedisUrl": "rediss://app:secret@my-cache:6379", **JWT}, {"RedisUrl"}),
    ("RedisUrl not a redis URL", {"RedisUrl": "my-cache:6379", **JWT}, {"RedisUrl"}),
    ("existing endpoint in a VPC without security groups", {"RedisUrl": EXISTING, "SubnetIds": SUBNETS, **JWT},
     {"ExistingEndpointInAVpcNeedsSecurityGroups"}),
    ("IAM user without cache name", {"RedisUrl": EXISTING, "RedisIamUser": "orders-app", **JWT},
     {"ExistingEndpointIamNeedsBoth"}),
    ("IAM user given for the created cache", {"VpcId": VPC, "SubnetIds": SUBNETS, "RedisIamUser": "x",
                                              "RedisIamCacheName": "y", **JWT},
     {"CreatedCacheHasItsOwnIamUser"}),
    ("WAIT asked of the created serverless cache", {"VpcId": VPC, "SubnetIds": SUBNETS,
                                                    "RedisMinReplicas": "1", **JWT},
     {"ServerlessCacheHasNoWait"}),
    ("WAIT asked of a cluster-mode endpoint", {"RedisUrl": EXISTING, "RedisCluster": "true",
                                               "RedisMinReplicas": "2", **JWT},
     {"ClusterEndpointHasNoReplicaAcknowledgement"}),
    ("upper-case cache name", {"VpcId": VPC, "SubnetIds": SUBNETS, "CacheName": "Orders", **JWT},
     {"CacheName"}),
    ("cache name ending in a hyphen", {"VpcId": VPC, "SubnetIds": SUBNETS, "CacheName": "orders-", **JWT},
     {"CacheName"}),
    ("bad snapshot time", {"VpcId": VPC, "SubnetIds": SUBNETS, "DailySnapshotTime": "25:00", **JWT},
     {"DailySnapshotTime"}),
    ("snapshot retention 0", {"VpcId": VPC, "SubnetIds": SUBNETS, "SnapshotRetentionLimit": "0", **JWT},
     {"SnapshotRetentionLimit"}),
    ("unknown AuthMode", {"VpcId": VPC, "SubnetIds": SUBNETS, "AuthMode": "open"}, {"AuthMode"}),
    ("empty metrics namespace", {"VpcId": VPC, "SubnetIds": SUBNETS, "MetricsNamespace": "", **JWT},
     {"MetricsNamespace"}),
    ("API 5xx alarm at 0 %", {"VpcId": VPC, "SubnetIds": SUBNETS, "Api5xxAlarmPercent": "0", **JWT},
     {"Api5xxAlarmPercent"}),
    ("negative reserved concurrency", {"VpcId": VPC, "SubnetIds": SUBNETS, "ReservedConcurrency": "-1", **JWT},
     {"ReservedConcurrency"}),
    ("unknown ComputeMode", {"VpcId": VPC, "SubnetIds": SUBNETS, "ComputeMode": "ec2", **JWT}, {"ComputeMode"}),
    ("managed-instances, existing endpoint, no SubnetIds", {"RedisUrl": EXISTING, **MANAGED, **JWT},
     {"ManagedInstancesRunInSubnets"}),
    ("managed-instances, no network at all", {**MANAGED, **JWT},
     {"CreatedCacheNeedsANetwork", "ManagedInstancesRunInSubnets"}),
    ("managed-instances, empty entry in SubnetIds", {"RedisUrl": EXISTING, "SubnetIds": "subnet-0123456789abcdef0,",
                                                     "SecurityGroupIds": SG, **MANAGED, **JWT},
     {"ManagedInstancesRunInSubnets"}),
    ("managed-instances, existing endpoint in subnets without security groups",
     {"RedisUrl": EXISTING, "SubnetIds": SUBNETS, **MANAGED, **JWT}, {"ExistingEndpointInAVpcNeedsSecurityGroups"}),
    ("managed-instances with reserved concurrency", {"VpcId": VPC, "SubnetIds": SUBNETS, "ReservedConcurrency": "50",
                                                     **MANAGED, **JWT},
     {"ManagedInstancesHaveNoReservedConcurrency"}),
    ("managed-instances, concurrency 0", {"VpcId": VPC, "SubnetIds": SUBNETS, "ManagedConcurrency": "0",
                                          **MANAGED, **JWT}, {"ManagedConcurrency"}),
    ("managed-instances, concurrency above 1600", {"VpcId": VPC, "SubnetIds": SUBNETS, "ManagedConcurrency": "1601",
                                                   **MANAGED, **JWT}, {"ManagedConcurrency"}),
    ("managed-instances, at most 2 environments", {"VpcId": VPC, "SubnetIds": SUBNETS, "ManagedMaxEnvironments": "2",
                                                   **MANAGED, **JWT}, {"ManagedMaxEnvironmentsAtLeastThree"}),
    ("lambda mode with a managed environment limit", {"VpcId": VPC, "SubnetIds": SUBNETS,
                                                      "ManagedMaxEnvironments": "10", **JWT},
     {"ManagedMaxEnvironmentsInManagedModeOnly"}),
    ("managed-instances, environments above 15000", {"VpcId": VPC, "SubnetIds": SUBNETS,
                                                     "ManagedMaxEnvironments": "15001", **MANAGED, **JWT},
     {"ManagedMaxEnvironments"}),
    # Accepted.
    ("created cache, jwt", {"VpcId": VPC, "SubnetIds": SUBNETS, **JWT}, set()),
    ("created cache, iam", {"VpcId": VPC, "SubnetIds": SUBNETS, "AuthMode": "iam"}, set()),
    ("created cache, none (anonymous)", {"VpcId": VPC, "SubnetIds": SUBNETS, "AuthMode": "none"}, set()),
    ("existing endpoint, no VPC, no auth", {"RedisUrl": EXISTING, "RedisCluster": "true", **JWT}, set()),
    ("existing node-based endpoint with one replica acknowledging", {"RedisUrl": EXISTING,
                                                                     "RedisMinReplicas": "1", **JWT}, set()),
    ("existing endpoint in a VPC, IAM auth", {
        "RedisUrl": EXISTING, "SubnetIds": SUBNETS, "SecurityGroupIds": SG,
        "RedisIamUser": "orders-app", "RedisIamCacheName": "my-cache", "RedisIamServerless": "true",
        "AuthMode": "iam"}, set()),
    ("created cache, lambda, 50 reserved", {"VpcId": VPC, "SubnetIds": SUBNETS, "ReservedConcurrency": "50", **JWT},
     set()),
    ("created cache, managed-instances", {"VpcId": VPC, "SubnetIds": SUBNETS, **MANAGED, **JWT}, set()),
    ("existing endpoint in a VPC, managed-instances at concurrency 64", {
        "RedisUrl": EXISTING, "SubnetIds": SUBNETS, "SecurityGroupIds": SG, "ManagedConcurrency": "64",
        "AuthMode": "iam", **MANAGED}, set()),
    ("created cache, managed-instances, at most 3 environments", {"VpcId": VPC, "SubnetIds": SUBNETS,
                                                                  "ManagedMaxEnvironments": "3", **MANAGED, **JWT},
     set()),
]

RULE_FUNCTIONS = {"Ref", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Fn::Contains",
                  "Fn::EachMemberEquals", "Fn::EachMemberIn"}


def values(params: dict, overrides: dict[str, str]) -> dict[str, object]:
    unknown = set(overrides) - set(params)
    if unknown:
        raise SystemExit(f"check-rules: unknown parameter(s) in a case: {sorted(unknown)}")
    out: dict[str, object] = {}
    for name, spec in params.items():
        raw = overrides.get(name, spec.get("Default"))
        if raw is None:
            raise SystemExit(f"check-rules: {name} has no Default and the case gives no value")
        raw = str(raw)
        out[name] = raw.split(",") if "List" in spec["Type"] else raw
    return out


def parameter_errors(params: dict, vals: dict[str, object]) -> set[str]:
    """AllowedValues, AllowedPattern (a full match, as CloudFormation does), lengths, bounds."""
    bad = set()
    for name, spec in params.items():
        items = vals[name] if isinstance(vals[name], list) else [vals[name]]
        for v in items:
            if "AllowedValues" in spec and v not in [str(a) for a in spec["AllowedValues"]]:
                bad.add(name)
            if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], v):
                bad.add(name)
            if "MaxLength" in spec and len(v) > int(spec["MaxLength"]):
                bad.add(name)
            if "MinLength" in spec and len(v) < int(spec["MinLength"]):
                bad.add(name)
            if spec["Type"] == "Number":
                try:
                    n = float(v)
                except ValueError:
                    bad.add(name)
                    continue
                if "MinValue" in spec and n < float(spec["MinValue"]):
                    bad.add(name)
                if "MaxValue" in spec and n > float(spec["MaxValue"]):
                    bad.add(name)
    return bad


def ev(node, vals):
    if isinstance(node, (str, int, float, bool)):
        return str(node) if not isinstance(node, bool) else node
    if isinstance(node, list):
        return [ev(n, vals) for n in node]
    if not (isinstance(node, dict) and len(node) == 1):
        raise SystemExit(f"check-rules: cannot evaluate {node!r}")
    (fn, arg), = node.items()
    if fn not in RULE_FUNCTIONS:
        raise SystemExit(f"check-rules: {fn} is not evaluated here; extend .ci/check-rules.py")
    if fn == "Ref":
        if arg not in vals:
            raise SystemExit(f"check-rules: Rules may only Ref parameters, not {arg}")
        return vals[arg]
    args = [ev(a, vals) for a in arg]
    if fn == "Fn::Equals":
        return args[0] == args[1]
    if fn == "Fn::Not":
        return not args[0]
    if fn == "Fn::And":
        return all(args)
    if fn == "Fn::Or":
        return any(args)
    if fn == "Fn::Contains":  # [list_of_strings, string]
        return args[1] in args[0]
    if fn == "Fn::EachMemberEquals":  # [list_of_strings, string]
        return all(v == args[1] for v in args[0])
    if fn == "Fn::EachMemberIn":  # [strings_to_check, strings_to_match]
        return all(v in args[1] for v in args[0])
    raise AssertionError(fn)


def rule_errors(rules: dict, vals) -> dict[str, list[str]]:
    failed: dict[str, list[str]] = {}
    for name, rule in rules.items():
        if "RuleCondition" in rule and not ev(rule["RuleCondition"], vals):
            continue
        for assertion in rule["Assertions"]:
            if not ev(assertion["Assert"], vals):
                failed.setdefault(name, []).append(" ".join(str(assertion["AssertDescription"]).split()))
    return failed


def samconfig_case(path: str) -> tuple[str, dict[str, str], set[str]] | None:
    """samconfig.toml's deploy overrides, as shipped (docs/deploy.md's checklist with the blanks
    still blank): every name a template parameter, and rejected only for the blanks."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return None
    from samcli.cli.types import CfnParameterOverridesType

    with open(path, "rb") as f:
        raw = tomllib.load(f)["default"]["deploy"]["parameters"]["parameter_overrides"]
    raw = tuple(raw) if isinstance(raw, list) else (raw,)
    overrides = CfnParameterOverridesType().convert(raw, None, None)
    return ("samconfig.toml as shipped", overrides, {"CreatedCacheNeedsANetwork", "JwtNeedsIssuerAndAudience"})


def translated_lint(path: str) -> int:
    """cfn-lint on the template after SAM's transform; returns the number of findings."""
    from cfnlint.api import ManualArgs, lint
    from samtranslator.translator.transform import transform

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the transform wants one; no AWS call
    template = cfn_yaml.load(path)
    for resource in template["Resources"].values():
        # E1010 is ignored in the source only where cfn-lint's SAM schema
        # lacks a GetAtt; here every GetAtt is checked.
        ignored = resource.get("Metadata", {}).get("cfn-lint", {}).get("config", {}).get("ignore_checks", [])
        if "E1010" in ignored:
            ignored.remove("E1010")
        code = resource.get("Properties", {}).get("Code")
        if resource["Type"] == "AWS::Lambda::Function" and isinstance(code, str):
            # What `sam package` makes of the local path.
            resource["Properties"]["Code"] = {"S3Bucket": "bucket", "S3Key": "bootstrap.zip"}

    class NoManagedPolicies:  # the template names no managed policy by name
        def load(self) -> dict:
            return {}

    translated = transform(template, {}, NoManagedPolicies())
    # W1030: SubnetIds' and SecurityGroupIds' "" defaults, which the Rules keep
    # from the resources that use them (the cases above show it).
    config = ManualArgs(regions=["us-east-1"], ignore_checks=["W1030"])
    findings = lint(json.dumps(translated), config=config)
    for finding in findings:
        print(f"FAIL translated template: {finding}")
    kinds = sorted({r["Type"] for r in translated["Resources"].values()} - {r["Type"] for r in template["Resources"].values()})
    print(f"{'ok  ' if not findings else 'FAIL'} translated template (SAM made: {', '.join(kinds)}): "
          f"{len(findings)} cfn-lint finding(s)")
    return len(findings)


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    template = cfn_yaml.load(path)
    params, rules = template["Parameters"], template.get("Rules", {})
    problems = 0
    case = samconfig_case(os.path.join(os.path.dirname(os.path.abspath(path)), "samconfig.toml"))
    if case:
        CASES.insert(0, case)
    # Structure: every assertion explains itself.
    for name, rule in rules.items():
        for assertion in rule.get("Assertions", []):
            if not str(assertion.get("AssertDescription", "")).strip():
                print(f"FAIL structure: rule {name} has an assertion without AssertDescription")
                problems += 1
    for label, overrides, expected in CASES:
        vals = values(params, overrides)
        failed = rule_errors(rules, vals)
        got = parameter_errors(params, vals) | set(failed)
        if got == expected:
            verdict = "rejected by " + ", ".join(sorted(got)) if got else "accepted"
            print(f"ok   {label}: {verdict}")
            for name in sorted(failed):
                for message in failed[name]:
                    print(f"       {name}: {message}")
        else:
            problems += 1
            print(f"FAIL {label}: expected {sorted(expected) or 'accepted'}, got {sorted(got) or 'accepted'}")
    print(f"check-rules: {len(CASES) - problems} of {len(CASES)} parameter sets as expected")
    problems += translated_lint(path)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

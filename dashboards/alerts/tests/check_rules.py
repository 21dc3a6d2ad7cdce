#!/usr/bin/env python3
"""Checks of dashboards/alerts/azflow.rules.yaml beyond `promtool check rules`, run by
agent/tests/deploy_alerts.rs:

  - every alert has a severity (critical, warning, info), a summary, a description and a runbook_url
    of the form docs/runbooks.md#ANCHOR, where ANCHOR is a heading of docs/runbooks.md;
  - every alert has, in dashboards/alerts/tests/*.test.yaml, at least one promtool case where it
    fires and one where it is expected silent;
  - the alerts the deployment promises exist.

Prints one line per alert; exits 1 with the reasons when something is missing.
"""

import glob
import os
import re
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
RULES = os.path.join(ROOT, "dashboards", "alerts", "azflow.rules.yaml")
TESTS = os.path.join(ROOT, "dashboards", "alerts", "tests")
RUNBOOKS = os.path.join(ROOT, "docs", "runbooks.md")
REQUIRED = [
    "AzflowCrossAzCostOverBudget",   # cross-AZ cost over a budget
    "AzflowCrossAzTrafficSpike",     # cross-AZ bytes against the same hour yesterday
    "AzflowAzAffinityDropping",      # same-AZ share dropping
    "AzflowCrossAzRttHigh",          # cross-AZ RTT p99 high
    "AzflowAgentDown",               # agent down
    "AzflowExportsFailing",          # exports failing
    "AzflowTopologyStale",           # topology stale
    "AzflowUnmappedTrafficGrowing",  # unmapped traffic growing
    "AzflowWorkloadCrossAzCostOverBudget",  # a workload's cross-AZ cost over its budget
    "AzflowWorkloadAzAffinityDropping",     # a workload's same-AZ share dropping
]


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def main():
    problems = []
    with open(RULES) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r]
    with open(RUNBOOKS) as f:
        anchors = {slug(line.lstrip("#")) for line in f if line.startswith("#")}
    cases = {}
    for path in sorted(glob.glob(os.path.join(TESTS, "*.test.yaml"))):
        with open(path) as f:
            for test in yaml.safe_load(f)["tests"]:
                for case in test.get("alert_rule_test", []):
                    fired = bool(case.get("exp_alerts"))
                    cases.setdefault(case["alertname"], set()).add(fired)

    names = [r["alert"] for r in rules]
    for name in REQUIRED:
        if name not in names:
            problems.append(f"{name}: missing from the rules")
    for r in rules:
        name = r["alert"]
        labels, ann = r.get("labels", {}), r.get("annotations", {})
        if labels.get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity {labels.get('severity')!r}")
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key, "").strip():
                problems.append(f"{name}: no {key}")
        url = ann.get("runbook_url", "")
        anchor = url.split("#", 1)[1] if "#" in url else ""
        if not url.startswith("docs/runbooks.md#") or anchor not in anchors:
            problems.append(f"{name}: runbook_url {url!r} is not a heading of docs/runbooks.md")
        seen = cases.get(name, set())
        if True not in seen:
            problems.append(f"{name}: no promtool case where it fires")
        if False not in seen:
            problems.append(f"{name}: no promtool case where it stays silent")
        print(f"{name}: severity={labels.get('severity')} fires-case={True in seen} silent-case={False in seen} runbook=#{anchor}")
    unknown = sorted(set(cases) - set(names))
    if unknown:
        problems.append(f"tests name alerts that do not exist: {unknown}")
    for p in problems:
        print(f"FAIL: {p}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

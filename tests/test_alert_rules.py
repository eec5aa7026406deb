"""The Prometheus alerting rules (``manifests/components/monitoring/prometheusrule.yaml``).

The production overlay is rendered with the pinned kubectl (as in ``tests/test_manifests.py``)
and each PrometheusRule's ``spec.groups`` is written out as a Prometheus rule file, then checked
with **promtool**, Prometheus' own rule checker: ``promtool check rules`` parses every PromQL
expression and annotation template and lints the groups, and ``promtool test rules`` runs the
unit tests in ``tests/alert_rules/`` on the monitoring group: synthetic series in, the alerts
(labels and rendered annotations) that must and must not fire out. promtool comes from Debian's
``prometheus`` package (2.42): ``make install`` unpacks only that binary into
``.venv-tools/prometheus/bin`` (nothing is installed system-wide, no server starts).

The monitor's metric names come from the monitor step (``components.monitor.MONITOR_METRICS``);
a rule that misspelt one would never fire, so every ``perucast_*`` name the rules use is checked
against them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_manifests import MANIFESTS, REPO, _kustomize

from components.monitor import METRIC_PREFIX
from components.monitor import MONITOR_METRICS as MONITOR_GAUGES

PROMTOOL = REPO / ".venv-tools" / "prometheus" / "bin" / "promtool"
UNIT_TESTS = Path(__file__).resolve().parent / "alert_rules"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
RUNBOOK_BASE = "https://github.com/perucast/perucast/blob/main/docs/deploy.md#"
SEVERITIES = {"critical", "warning", "info"}

# The monitor step's gauges (pushed with job="perucast-monitor", grouping key model), from the
# code that writes them, and the model server's counter.
MONITOR_METRICS = {METRIC_PREFIX + name for name in MONITOR_GAUGES}
SERVING_METRICS = {"perucast_serving_prediction_log_dropped_total"}
MONITORING_ALERTS = {
    "PerucastFeatureDrift",
    "PerucastAccuracyDecay",
    "PerucastCoverageDrop",
    "PerucastRetrainRecommended",
    "PerucastMonitorStale",
    "PerucastPushgatewayDown",
    "PerucastPredictionLogDrops",
}


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(
            f"{PROMTOOL} is missing: run `make install` (promtool from Debian's prometheus)"
        )
    return subprocess.run(
        [str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    """The PrometheusRules of the production overlay, by name."""
    docs = yaml.safe_load_all(_kustomize(MANIFESTS / "overlays" / "production"))
    return {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "PrometheusRule"}


@pytest.fixture(scope="module")
def rule_dir(rules: dict[str, dict[str, Any]], tmp_path_factory) -> Path:
    """A directory with ``<name>.rules.yaml`` per PrometheusRule and the unit tests beside them."""
    where = tmp_path_factory.mktemp("rules")
    for name, rule in rules.items():
        text = yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False)
        (where / f"{name}.rules.yaml").write_text(text)
    for test in UNIT_TESTS.glob("*.test.yaml"):
        shutil.copy(test, where / test.name)
    return where


def _monitoring_rules(rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    (group,) = rules["perucast-monitoring"]["spec"]["groups"]
    assert group["name"] == "perucast-monitoring"
    return group["rules"]


def test_promtool_is_the_unpacked_one() -> None:
    done = _promtool("--version", cwd=REPO)
    assert done.returncode == 0, done.stderr
    found = re.search(r"promtool, version (\d+)\.(\d+)\.(\d+)", done.stdout + done.stderr)
    assert found, done.stdout
    # absent_over_time (2.16), present_over_time (2.29), sortByLabel in templates (2.x)
    assert tuple(int(x) for x in found.groups()) >= (2, 42, 0)
    print(found.group(0))


def test_every_rule_group_passes_promtool_check(
    rules: dict[str, dict[str, Any]], rule_dir: Path
) -> None:
    assert set(rules) == {"perucast-serving", "perucast-monitoring"}
    for name, rule in rules.items():
        done = _promtool("check", "rules", f"{name}.rules.yaml", cwd=rule_dir)
        assert done.returncode == 0, f"promtool check rules {name}:\n{done.stdout}{done.stderr}"
        count = sum(len(g["rules"]) for g in rule["spec"]["groups"])
        assert f"SUCCESS: {count} rules found" in done.stdout


def test_promtool_check_rejects_bad_promql(tmp_path: Path) -> None:
    bad = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "rate(x[5m] > 1"}]}]}
    (tmp_path / "bad.rules.yaml").write_text(yaml.safe_dump(bad))
    done = _promtool("check", "rules", "bad.rules.yaml", cwd=tmp_path)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_monitoring_alerts_pass_their_unit_tests(rule_dir: Path) -> None:
    tests = sorted(p.name for p in rule_dir.glob("*.test.yaml"))
    assert tests == ["perucast-monitoring-stale.test.yaml", "perucast-monitoring.test.yaml"]
    done = _promtool("test", "rules", *tests, cwd=rule_dir)
    assert done.returncode == 0, f"promtool test rules:\n{done.stdout}{done.stderr}"
    assert done.stdout.count("SUCCESS") == len(tests)


def test_unit_tests_cover_every_monitoring_alert_firing_and_quiet(
    rules: dict[str, dict[str, Any]],
) -> None:
    alerts = {r["alert"] for r in _monitoring_rules(rules)}
    assert alerts == MONITORING_ALERTS
    fires: set[str] = set()
    quiet: set[str] = set()
    for test_file in UNIT_TESTS.glob("*.test.yaml"):
        spec = yaml.safe_load(test_file.read_text())
        assert spec["rule_files"] == ["perucast-monitoring.rules.yaml"]
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case["exp_alerts"] else quiet).add(case["alertname"])
                for alert in case["exp_alerts"]:
                    # Every expected alert spells out its rendered annotations (templates tested).
                    assert set(alert["exp_annotations"]) == {
                        "summary",
                        "description",
                        "runbook_url",
                    }
    assert fires == alerts
    assert quiet == alerts


def test_a_rule_that_ignores_the_margin_fails_the_unit_tests(
    rules: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The unit tests have teeth: drop the configured margin and the decay fires at 1.1 vs 1.0."""
    groups = [dict(g) for g in rules["perucast-monitoring"]["spec"]["groups"]]
    broken = []
    for rule in groups[0]["rules"]:
        if rule["alert"] == "PerucastAccuracyDecay":
            assert "(1 + perucast_monitor_accuracy_margin" in rule["expr"]
            expr = rule["expr"].replace("(1 + perucast_", "(1 + 0 * perucast_")
            rule = {**rule, "expr": expr}
        broken.append(rule)
    groups[0]["rules"] = broken
    text = yaml.safe_dump({"groups": groups}, sort_keys=False)
    (tmp_path / "perucast-monitoring.rules.yaml").write_text(text)
    shutil.copy(UNIT_TESTS / "perucast-monitoring.test.yaml", tmp_path)
    done = _promtool("test", "rules", "perucast-monitoring.test.yaml", cwd=tmp_path)
    report = done.stdout + done.stderr
    assert done.returncode != 0
    assert "accuracy decay fires at realized MASE 1.3 vs 1.0 x (1 + 0.2), not at 1.1" in report
    assert 'model="fish_stock"' in report  # the 1.1 that must stay quiet


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_monitoring_alerts_are_labelled_and_documented(rules: dict[str, dict[str, Any]]) -> None:
    anchors = _github_anchors(DEPLOY_DOC.read_text())
    for rule in _monitoring_rules(rules):
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert "for" in rule, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        if name != "PerucastPushgatewayDown":  # the others are per model
            assert "$labels.model" in notes["summary"], name
        assert notes["runbook_url"] == RUNBOOK_BASE + name.lower(), name
        assert name.lower() in anchors, f"docs/deploy.md has no section {name}"
    severity = {r["alert"]: r["labels"]["severity"] for r in _monitoring_rules(rules)}
    assert severity["PerucastRetrainRecommended"] == "info"


def test_rules_use_only_the_agreed_metric_names(rules: dict[str, dict[str, Any]]) -> None:
    used: set[str] = set()
    for rule in _monitoring_rules(rules):
        text = rule["expr"] + " " + " ".join(rule["annotations"].values())
        used |= set(re.findall(r"\bperucast_[a-z_]+", text))
    assert used <= MONITOR_METRICS | SERVING_METRICS, used - MONITOR_METRICS - SERVING_METRICS
    # The decisions the alerts take from the monitor, not from constants of their own.
    assert {
        "perucast_monitor_accuracy_margin",
        "perucast_monitor_coverage_margin",
        "perucast_monitor_evaluation_mase",
        "perucast_monitor_evaluation_coverage",
        "perucast_monitor_drifted_features",
        "perucast_monitor_actuals",
    } <= used

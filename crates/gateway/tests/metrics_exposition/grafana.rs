//! Reading a Grafana dashboard's queries.

use serde_json::Value;
use std::collections::BTreeSet;

/// Every PromQL expression: panel targets, and template variables' queries
/// (`label_values(metric, label)` is read as `metric{label}`).
pub fn queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .or(var["definition"].as_str())
            .unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {q}: not label_values(metric, label)"));
        let (metric, label) = inner.rsplit_once(',').unwrap();
        out.push(format!("{}{{{}=~\".*\"}}", metric.trim(), label.trim()));
    }
    out
}

fn walk(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(targets) = map.get("targets").and_then(Value::as_array) {
                for t in targets {
                    let expr = t["expr"]
                        .as_str()
                        .unwrap_or_else(|| panic!("a target without expr: {t}"));
                    out.push(expr.to_owned());
                }
            }
            for (k, child) in map {
                if k != "targets" {
                    walk(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
        _ => {}
    }
}

/// What an import needs: a title and uid, unique panel ids, each panel placed on the grid,
/// and every query on the dashboard's Prometheus data source variable.
pub fn check_structure(d: &Value) {
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        d["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    assert!(d["schemaVersion"].as_u64().is_some());
    assert!(
        d.get("id").is_none_or(Value::is_null),
        "an id ties the JSON to one Grafana"
    );
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "no Prometheus data source variable"
    );
    let mut ids = BTreeSet::new();
    let mut panels = 0;
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id twice: {p}");
        for k in ["x", "y", "w", "h"] {
            assert!(
                p["gridPos"][k].is_u64(),
                "panel without gridPos.{k}: {}",
                p["title"]
            );
        }
        assert!(p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24);
        if p["type"] == "row" {
            continue;
        }
        panels += 1;
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "refId twice in {}",
                p["title"]
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    assert!(panels >= 12, "{panels} panels");
}

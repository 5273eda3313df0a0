//! The Kubernetes manifests in `deploy/`, checked offline: every overlay renders with
//! `kubectl kustomize`; every core object validates against the Kubernetes schemas
//! (`kubernetes-validate --strict`); the custom resources we use (Strimzi `KafkaTopic`,
//! Prometheus Operator `ServiceMonitor`) are checked here field by field, and any other
//! kind without a schema fails the test; every container's environment is accepted, names
//! and values, by the binary itself (`cxgap <service> --check-config`); and the pieces
//! agree with each other (topic names and partitions, probes, ports, Secret keys).
//! `.ci/run` installs kubectl and kubernetes-validate when missing.

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const KUBERNETES: &str = "1.30.0";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn render(overlay: &str) -> Vec<Value> {
    let dir = deploy().join("overlays").join(overlay);
    let out = Command::new("kubectl")
        .args(["kustomize", dir.to_str().unwrap()])
        .output()
        .expect("kubectl (Debian's kubectl package; .ci/run installs it)");
    assert!(out.status.success(), "kustomize {overlay}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).collect()
}

use serde::Deserialize;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    s(v, path).and_then(Value::as_str).unwrap_or_else(|| panic!("{path:?} missing in {v:?}"))
}

fn kind(v: &Value) -> &str {
    str_at(v, &["kind"])
}

fn name(v: &Value) -> &str {
    str_at(v, &["metadata", "name"])
}

/// The objects a schema exists for, validated by kubernetes-validate in strict mode.
fn validate_core(overlay: &str, objects: &[&Value]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{overlay}.yaml"));
    let text: String = objects.iter().map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap())).collect();
    std::fs::write(&file, text).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", KUBERNETES, "--quiet", file.to_str().unwrap()])
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate; .ci/run installs it)");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "{overlay} against Kubernetes {KUBERNETES}:\n{report}");
}

/// Strimzi KafkaTopic (kafka.strimzi.io/v1beta2): the fields Strimzi requires, with types.
fn check_kafka_topic(t: &Value, topics: &mut BTreeMap<String, (u64, u64)>) {
    assert_eq!(str_at(t, &["apiVersion"]), "kafka.strimzi.io/v1beta2", "{t:?}");
    assert!(s(t, &["metadata", "labels", "strimzi.io/cluster"]).and_then(Value::as_str).is_some(), "{t:?}");
    let spec = s(t, &["spec"]).and_then(Value::as_mapping).expect("spec");
    for k in spec.keys() {
        let k = k.as_str().unwrap();
        assert!(["topicName", "partitions", "replicas", "config"].contains(&k), "KafkaTopic spec has no field {k}");
    }
    let partitions = s(t, &["spec", "partitions"]).and_then(Value::as_u64).expect("spec.partitions: integer");
    let replicas = s(t, &["spec", "replicas"]).and_then(Value::as_u64).expect("spec.replicas: integer");
    assert!(partitions >= 1 && (1..=32767).contains(&replicas), "{t:?}");
    if let Some(config) = s(t, &["spec", "config"]) {
        for (k, v) in config.as_mapping().expect("spec.config: object") {
            assert!(v.is_string() || v.is_number() || v.is_bool(), "config {k:?} must be a scalar");
        }
        let isr = s(config, &["min.insync.replicas"]).and_then(Value::as_str).map(|v| v.parse::<u64>().unwrap());
        assert!(isr.is_none_or(|isr| isr <= replicas), "min.insync.replicas above replicas in {t:?}");
    }
    let topic = s(t, &["spec", "topicName"]).and_then(Value::as_str).unwrap_or_else(|| name(t));
    topics.insert(topic.to_string(), (partitions, replicas));
}

/// Prometheus Operator ServiceMonitor (monitoring.coreos.com/v1): endpoints name a port
/// the selected Services have.
fn check_service_monitor(m: &Value, services: &[&Value]) {
    assert_eq!(str_at(m, &["apiVersion"]), "monitoring.coreos.com/v1");
    let values: Vec<&str> = s(m, &["spec", "selector", "matchExpressions"])
        .and_then(Value::as_sequence)
        .expect("selector")
        .iter()
        .flat_map(|e| e["values"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()))
        .collect();
    let endpoints = s(m, &["spec", "endpoints"]).and_then(Value::as_sequence).expect("endpoints");
    for want in &values {
        let svc = services
            .iter()
            .find(|s| str_at(s, &["metadata", "labels", "app.kubernetes.io/name"]) == *want)
            .unwrap_or_else(|| panic!("ServiceMonitor selects {want}, no such Service"));
        for e in endpoints {
            let port = e["port"].as_str().unwrap();
            let ports = s(svc, &["spec", "ports"]).and_then(Value::as_sequence).unwrap();
            assert!(ports.iter().any(|p| p["name"].as_str() == Some(port)), "{want} has no port {port}");
        }
    }
}

/// What the container would see as its environment: ConfigMap data (envFrom), literal
/// values, and Secret values from the overlay's generated Secret or a valid stand-in.
fn container_env(c: &Value, config_maps: &BTreeMap<String, BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in s(c, &["envFrom"]).and_then(Value::as_sequence).into_iter().flatten() {
        let cm = str_at(from, &["configMapRef", "name"]);
        env.extend(config_maps.get(cm).unwrap_or_else(|| panic!("envFrom names a missing ConfigMap {cm}")).clone());
    }
    for e in s(c, &["env"]).and_then(Value::as_sequence).into_iter().flatten() {
        let n = str_at(e, &["name"]).to_string();
        let v = if let Some(v) = e.get("value") {
            v.as_str().expect("env values are strings").to_string()
        } else if let Some(r) = s(e, &["valueFrom", "secretKeyRef"]) {
            match str_at(r, &["key"]) {
                "database-url" => "postgres://cxgap@db.example:5432/cxgap".into(),
                "api-key-pepper" => "a-stand-in-pepper-of-enough-length".into(),
                other => panic!("unknown Secret key {other}"),
            }
        } else if let Some(r) = s(e, &["valueFrom", "configMapKeyRef"]) {
            let cm = config_maps.get(str_at(r, &["name"])).cloned().unwrap_or_default();
            match cm.get(str_at(r, &["key"])) {
                Some(v) => v.clone(),
                None if s(r, &["optional"]).and_then(Value::as_bool) == Some(true) => continue,
                None => panic!("{n}: missing ConfigMap key"),
            }
        } else {
            panic!("env {n}: only value, secretKeyRef and configMapKeyRef are used");
        };
        env.insert(n, v);
    }
    env
}

fn check_overlay(overlay: &str) {
    let objects = render(overlay);
    let known_crds = ["KafkaTopic", "ServiceMonitor"];
    let core: Vec<&Value> = objects.iter().filter(|o| !known_crds.contains(&kind(o))).collect();
    validate_core(overlay, &core);
    let by_kind = |k: &str| objects.iter().filter(|o| kind(o) == k).collect::<Vec<_>>();

    let mut topics = BTreeMap::new();
    for t in by_kind("KafkaTopic") {
        check_kafka_topic(t, &mut topics);
    }
    for m in by_kind("ServiceMonitor") {
        check_service_monitor(m, &by_kind("Service"));
    }
    let config_maps: BTreeMap<String, BTreeMap<String, String>> = by_kind("ConfigMap")
        .iter()
        .map(|cm| {
            let data = s(cm, &["data"])
                .and_then(Value::as_mapping)
                .map(|m| m.iter().map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into())).collect())
                .unwrap_or_default();
            (name(cm).to_string(), data)
        })
        .collect();
    let shared = &config_maps["cxgap-config"];

    // Each topic the binary uses exists with the partitions the services are told about.
    let partitions: u64 = shared["CXGAP_TOPIC_PARTITIONS"].parse().unwrap();
    for t in ["cxgap.feedback.v1", "cxgap.feedback.dlq.v1", "cxgap.signals.v1", "cxgap.alerts.v1"] {
        assert!(topics.contains_key(t), "{overlay}: no KafkaTopic for {t}");
    }
    assert_eq!(topics["cxgap.feedback.v1"].0, partitions, "{overlay}: feedback partitions = CXGAP_TOPIC_PARTITIONS");
    assert_eq!(
        topics["cxgap.feedback.v1"].1,
        shared["CXGAP_TOPIC_REPLICATION"].parse::<u64>().unwrap(),
        "{overlay}: replicas = CXGAP_TOPIC_REPLICATION"
    );
    let hpa_max = |n: &str| {
        by_kind("HorizontalPodAutoscaler").into_iter().find(|h| name(h) == n).map(|h| h["spec"]["maxReplicas"].as_u64())
    };
    let analytics_max = hpa_max("cxgap-analytics").flatten().expect("an HPA for analytics");
    assert!(analytics_max <= partitions, "{overlay}: analytics HPA max {analytics_max} > {partitions} partitions");
    assert!(hpa_max("cxgap-ingest").is_some(), "{overlay}: an HPA for ingest");

    // Secrets the pods reference exist in the overlay or are documented as created by hand.
    let secrets: BTreeSet<String> = by_kind("Secret").iter().map(|s| name(s).to_string()).collect();
    if overlay == "dev" {
        assert!(secrets.contains("cxgap-secrets"), "dev generates its Secret");
    }

    // Every workload: the binary accepts its environment, and it is locked down.
    let mut services_seen = BTreeSet::new();
    let workloads: Vec<&Value> = objects.iter().filter(|o| ["Deployment", "Job"].contains(&kind(o))).collect();
    for w in &workloads {
        let pod = s(w, &["spec", "template", "spec"]).unwrap();
        assert_eq!(s(pod, &["securityContext", "runAsNonRoot"]).and_then(Value::as_bool), Some(true), "{}", name(w));
        for c in pod["containers"].as_sequence().unwrap() {
            let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{}", name(w));
            assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false), "{}", name(w));
            assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"), "{}", name(w));
            assert!(s(c, &["resources", "requests", "memory"]).is_some(), "{}: resources", name(w));
            let env = container_env(c, &config_maps);
            let command = args[0];
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxgap"));
            cmd.env_clear().envs(&env);
            match command {
                "ingest" | "analytics" | "alerting" => {
                    services_seen.insert(command);
                    cmd.args([command, "--check-config"]);
                    let out = cmd.output().unwrap();
                    assert!(
                        out.status.success(),
                        "{overlay}/{}: cxgap {command} refuses its environment:\n{}",
                        name(w),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let grace: u64 = env["CXGAP_SHUTDOWN_GRACE_SECONDS"].parse().unwrap();
                    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
                    assert!(termination > grace, "{}: termination grace {termination} <= drain {grace}", name(w));
                    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                        let port = s(c, &[probe, "httpGet", "port"]).and_then(Value::as_str);
                        assert_eq!(port, Some("http"), "{}: {probe}", name(w));
                    }
                    assert_eq!(str_at(c, &["readinessProbe", "httpGet", "path"]), "/readyz");
                    // The container listens where its ports say.
                    let http = env["CXGAP_HTTP_ADDR"].rsplit(':').next().unwrap().parse::<u64>().unwrap();
                    let ports = c["ports"].as_sequence().unwrap();
                    assert!(ports.iter().any(|p| p["name"] == "http" && p["containerPort"].as_u64() == Some(http)));
                    let annotated = s(w, &["spec", "template", "metadata", "annotations", "prometheus.io/port"]);
                    assert_eq!(annotated.and_then(Value::as_str), Some(http.to_string().as_str()), "{}", name(w));
                }
                "migrate" => {
                    assert_eq!(env.keys().collect::<Vec<_>>(), ["CXGAP_DATABASE_URL"], "migrate reads only the URL");
                }
                other => panic!("{}: unknown cxgap command {other}", name(w)),
            }
            // Every name is one of the binary's settings.
            let out =
                Command::new(env!("CARGO_BIN_EXE_cxgap")).args(["settings", "--format", "json"]).output().unwrap();
            let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let known: BTreeSet<&str> = all
                .as_object()
                .unwrap()
                .values()
                .flat_map(|l| l.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()))
                .collect();
            for k in env.keys() {
                assert!(known.contains(k.as_str()), "{overlay}/{}: {k} is not a setting of cxgap", name(w));
            }
        }
    }
    assert_eq!(services_seen.len(), 3, "{overlay}: a Deployment per service");
    for svc in ["ingest", "analytics", "alerting"] {
        let n = format!("cxgap-{svc}");
        assert!(by_kind("Service").iter().any(|s| name(s) == n), "{overlay}: Service {n}");
        assert!(by_kind("PodDisruptionBudget").iter().any(|s| name(s) == n), "{overlay}: PDB {n}");
    }
    assert!(by_kind("NetworkPolicy").iter().any(|p| name(p) == "default-deny"), "{overlay}: default deny");
    assert!(by_kind("Job").iter().any(|j| name(j) == "cxgap-migrate"), "{overlay}: migration Job");
}

#[test]
fn dev_overlay_renders_validates_and_matches_the_binary() {
    check_overlay("dev");
}

#[test]
fn production_overlay_renders_validates_and_matches_the_binary() {
    check_overlay("production");
    assert!(render("production").iter().any(|o| kind(o) == "ServiceMonitor"), "production is scraped");
}

#[test]
fn an_unknown_setting_in_a_manifest_would_be_caught() {
    // The check above is only worth something if the binary refuses what it does not know.
    let out = Command::new(env!("CARGO_BIN_EXE_cxgap"))
        .args(["analytics", "--check-config"])
        .env_clear()
        .env("CXGAP_KAFKA_BROKERS", "k:9092")
        .env("CXGAP_DATABASE_URL", "postgres://x@y/z")
        .env("CXGAP_API_KEY_PEPPER", "a-stand-in-pepper-of-enough-length")
        .env("CXGAP_TOPIC_PARTITION", "12")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CXGAP_TOPIC_PARTITION is not a setting"));
}

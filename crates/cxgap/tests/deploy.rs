//! The Kubernetes manifests in `deploy/`, checked offline: every overlay renders with
//! `kubectl kustomize`; every core object validates against the Kubernetes schemas
//! (`kubernetes-validate --strict`); the custom resources we use (Strimzi `KafkaTopic`,
//! Prometheus Operator `ServiceMonitor`) are checked here field by field, and any other
//! kind without a schema fails the test; every container's environment is accepted, names
//! and values, by the binary itself (`cxgap <service> --check-config`); and the pieces
//! agree with each other (topic names and partitions, probes, ports, Secret keys).
//! `.ci/run` installs kubectl and kubernetes-validate when missing.

use cxgap_testkit::tls::{Pair, Pki};
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

/// cert-manager (cert-manager.io/v1): every `Issuer` is self-signed or a CA whose Secret a
/// CA `Certificate` writes; every `Certificate` names an `Issuer` of the overlay, uses only
/// cert-manager's fields and usages, and renews before it expires. Returns the
/// certificates by the Secret each writes.
fn check_cert_manager<'a>(certificates: &[&'a Value], issuers: &[&Value]) -> BTreeMap<String, &'a Value> {
    let mut by_secret = BTreeMap::new();
    for c in certificates {
        assert_eq!(str_at(c, &["apiVersion"]), "cert-manager.io/v1", "{}", name(c));
        let spec = s(c, &["spec"]).and_then(Value::as_mapping).expect("spec");
        for k in spec.keys() {
            let k = k.as_str().unwrap();
            let known = ["secretName", "issuerRef", "dnsNames", "commonName", "isCA", "usages", "duration"];
            let known2 = ["renewBefore", "privateKey", "subject", "ipAddresses"];
            assert!(known.contains(&k) || known2.contains(&k), "Certificate {}: no field {k}", name(c));
        }
        let secret = str_at(c, &["spec", "secretName"]).to_string();
        let issuer = str_at(c, &["spec", "issuerRef", "name"]);
        let issuer_kind = s(c, &["spec", "issuerRef", "kind"]).and_then(Value::as_str).unwrap_or("Issuer");
        assert_eq!(issuer_kind, "Issuer", "Certificate {}: the overlay's own Issuers only", name(c));
        assert!(issuers.iter().any(|i| name(i) == issuer), "Certificate {} names a missing Issuer {issuer}", name(c));
        let usages = ["server auth", "client auth", "digital signature", "key encipherment", "cert sign"];
        for u in s(c, &["spec", "usages"]).and_then(Value::as_sequence).into_iter().flatten() {
            assert!(usages.contains(&u.as_str().unwrap()), "Certificate {}: unknown usage {u:?}", name(c));
        }
        let algorithm = s(c, &["spec", "privateKey", "algorithm"]).and_then(Value::as_str).unwrap_or("RSA");
        assert!(["RSA", "ECDSA", "Ed25519"].contains(&algorithm), "Certificate {}: {algorithm}", name(c));
        let hours = |k: &str| {
            s(c, &["spec", k]).and_then(Value::as_str).map(|d| {
                d.strip_suffix('h').and_then(|h| h.parse::<u64>().ok()).unwrap_or_else(|| panic!("{k} {d}: hours"))
            })
        };
        // cert-manager's defaults: 90 days, renewed at two thirds of that.
        let (duration, renew) = (hours("duration").unwrap_or(2160), hours("renewBefore").unwrap_or(720));
        assert!(renew < duration, "Certificate {}: renewBefore {renew}h >= duration {duration}h", name(c));
        let is_ca = s(c, &["spec", "isCA"]).and_then(Value::as_bool) == Some(true);
        assert!(is_ca || s(c, &["spec", "usages"]).is_some(), "Certificate {}: say what it is for", name(c));
        assert!(by_secret.insert(secret.clone(), *c).is_none(), "two Certificates write Secret {secret}");
    }
    for i in issuers {
        assert_eq!(str_at(i, &["apiVersion"]), "cert-manager.io/v1", "{}", name(i));
        let spec = s(i, &["spec"]).and_then(Value::as_mapping).expect("spec");
        assert_eq!(spec.len(), 1, "Issuer {}: one kind of issuer", name(i));
        if let Some(secret) = s(i, &["spec", "ca", "secretName"]).and_then(Value::as_str) {
            let ca =
                by_secret.get(secret).unwrap_or_else(|| panic!("Issuer {}: no Certificate writes {secret}", name(i)));
            assert_eq!(s(ca, &["spec", "isCA"]).and_then(Value::as_bool), Some(true), "Issuer {}: not a CA", name(i));
        } else {
            assert!(s(i, &["spec", "selfSigned"]).is_some(), "Issuer {}: selfSigned or ca", name(i));
        }
    }
    by_secret
}

fn usages(c: &Value) -> Vec<&str> {
    s(c, &["spec", "usages"]).and_then(Value::as_sequence).into_iter().flatten().map(|u| u.as_str().unwrap()).collect()
}

/// The file a container's TLS setting points at: in a mounted Secret that a Certificate
/// writes, under the key cert-manager gives that part. Returns the Certificate and the key.
fn certificate_file<'a>(
    pod: &Value,
    c: &Value,
    path: &str,
    certificates: &BTreeMap<String, &'a Value>,
) -> (&'a Value, String) {
    let mount = s(c, &["volumeMounts"])
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .find(|m| path.starts_with(&format!("{}/", str_at(m, &["mountPath"]))))
        .unwrap_or_else(|| panic!("{path} is on no mounted volume"));
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {:?}", mount["name"]));
    let secret = str_at(volume, &["secret", "secretName"]);
    let cert = certificates.get(secret).unwrap_or_else(|| panic!("{path}: no Certificate writes Secret {secret}"));
    let key = path.rsplit('/').next().unwrap().to_string();
    (cert, key)
}

/// The Secret key a ServiceMonitor's TLS part reads, and that a Certificate writes it.
fn tls_secret<'a>(tls: &Value, part: &[&str], certificates: &BTreeMap<String, &'a Value>) -> (&'a Value, String) {
    let r = s(tls, part).unwrap_or_else(|| panic!("tlsConfig has no {part:?}"));
    let secret = str_at(r, &["name"]);
    let cert = certificates.get(secret).unwrap_or_else(|| panic!("tlsConfig {part:?}: no Certificate writes {secret}"));
    (cert, str_at(r, &["key"]).to_string())
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
    let known_crds = ["KafkaTopic", "ServiceMonitor", "Certificate", "Issuer"];
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
    let certificates = check_cert_manager(&by_kind("Certificate"), &by_kind("Issuer"));
    // The files a mounted certificate Secret would hold, made once per overlay when needed.
    let pki_dir = tempfile::tempdir().unwrap();
    let mut pki: Option<(Pki, Pair)> = None;
    // Service name → its serving Certificate, and whether it asks clients for one.
    let mut serving: BTreeMap<String, (&Value, bool)> = BTreeMap::new();
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
            let mut env = container_env(c, &config_maps);
            let command = args[0];
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxgap"));
            cmd.env_clear();
            match command {
                "ingest" | "analytics" | "alerting" => {
                    services_seen.insert(command);
                    let tls = env.get("CXGAP_TLS_CERT_FILE").is_some_and(|v| !v.is_empty());
                    let scheme = if tls { "HTTPS" } else { "HTTP" };
                    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                        let got = s(c, &[probe, "httpGet", "scheme"]).and_then(Value::as_str).unwrap_or("HTTP");
                        assert_eq!(got, scheme, "{overlay}/{}: {probe} against a service with TLS {tls}", name(w));
                    }
                    let annotated = s(w, &["spec", "template", "metadata", "annotations", "prometheus.io/scheme"]);
                    assert_eq!(annotated.and_then(Value::as_str).unwrap_or("http"), scheme.to_lowercase());
                    if tls {
                        let (ca, server) = pki.get_or_insert_with(|| {
                            let ca = Pki::new(pki_dir.path(), "deploy").unwrap();
                            let server = ca.server("pod").unwrap();
                            (ca, server)
                        });
                        let svc = name(w);
                        let dns = format!("{svc}.{}.svc", str_at(w, &["metadata", "namespace"]));
                        let mut served = None;
                        for (var, part, made) in [
                            ("CXGAP_TLS_CERT_FILE", "tls.crt", &server.cert),
                            ("CXGAP_TLS_KEY_FILE", "tls.key", &server.key),
                            ("CXGAP_TLS_CLIENT_CA_FILE", "ca.crt", &ca.ca().to_path_buf()),
                        ] {
                            let Some(path) = env.get(var).cloned() else { continue };
                            let (cert, key) = certificate_file(pod, c, &path, &certificates);
                            assert_eq!(key, part, "{overlay}/{svc}: {var} is the Secret's {key}, not its {part}");
                            if part != "ca.crt" {
                                assert!(usages(cert).contains(&"server auth"), "{}: not for serving", name(cert));
                                let names = s(cert, &["spec", "dnsNames"]).and_then(Value::as_sequence).unwrap();
                                assert!(names.iter().any(|n| n == &dns), "{}: does not name {dns}", name(cert));
                                served = Some(cert);
                            }
                            // The binary reads the files at start: give it real ones there.
                            env.insert(var.to_string(), made.to_str().unwrap().to_string());
                        }
                        let mutual = env.contains_key("CXGAP_TLS_CLIENT_CA_FILE");
                        serving.insert(svc.to_string(), (served.expect("a serving certificate"), mutual));
                    }
                    cmd.envs(&env);
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
    // Prometheus scrapes a service that serves TLS over TLS, trusting the CA that issued
    // its certificate, and under mutual TLS with a client certificate of that CA.
    for m in by_kind("ServiceMonitor") {
        let selected = s(m, &["spec", "selector", "matchExpressions"]).and_then(Value::as_sequence).unwrap();
        let selected = selected.iter().flat_map(|e| e["values"].as_sequence().unwrap().iter());
        for svc in selected.filter_map(|v| serving.get(v.as_str().unwrap())) {
            let (served, mutual) = *svc;
            let issuer = str_at(served, &["spec", "issuerRef", "name"]);
            for e in s(m, &["spec", "endpoints"]).and_then(Value::as_sequence).unwrap() {
                assert_eq!(e["scheme"].as_str(), Some("https"), "{overlay}: {} scrapes TLS in the clear", name(m));
                let tls = &e["tlsConfig"];
                let (ca, key) = tls_secret(tls, &["ca", "secret"], &certificates);
                assert_eq!((key.as_str(), str_at(ca, &["spec", "issuerRef", "name"])), ("ca.crt", issuer));
                let server_name = tls["serverName"].as_str().expect("pods are scraped by IP: a serverName");
                let names = s(served, &["spec", "dnsNames"]).and_then(Value::as_sequence).unwrap();
                assert!(names.iter().any(|n| n == server_name), "{server_name} is not on {}", name(served));
                if mutual {
                    let (cert, key) = tls_secret(tls, &["cert", "secret"], &certificates);
                    let (cert_of_key, key_key) = tls_secret(tls, &["keySecret"], &certificates);
                    assert_eq!((key.as_str(), key_key.as_str()), ("tls.crt", "tls.key"));
                    assert_eq!(name(cert), name(cert_of_key), "the client certificate and its key");
                    assert!(usages(cert).contains(&"client auth"), "{}: not a client certificate", name(cert));
                    assert_eq!(str_at(cert, &["spec", "issuerRef", "name"]), issuer, "a client the pods trust");
                }
            }
        }
    }
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
fn production_tls_overlay_serves_mutual_tls_from_cert_manager_certificates() {
    check_overlay("production-tls");
    let objects = render("production-tls");
    let tls_env = |d: &Value| {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|e| e["name"].as_str().unwrap().starts_with("CXGAP_TLS_"))
            .count()
    };
    let deployments: Vec<&Value> = objects.iter().filter(|o| kind(o) == "Deployment").collect();
    assert_eq!(deployments.len(), 3);
    for d in deployments {
        assert_eq!(tls_env(d), 3, "{}: certificate, key and client CA", name(d));
    }
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

//! Reading a service's settings from one map (environment variables and flags merged,
//! flags winning), so loaders are tested without touching the process environment. Every
//! problem is collected and reported at once, before anything binds.

use std::collections::BTreeMap;

/// A setting: (environment variable, default, meaning). Services list theirs in one table
/// that the deployment manifests and the README use too.
pub type Setting = (&'static str, Option<&'static str>, &'static str);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

/// How every service connects to Kafka beyond the broker list: TLS, SASL or both. Shared
/// by the three services, so one Secret serves them all; plaintext by default.
pub const KAFKA_SECURITY: &[Setting] = &[
    ("CXGAP_KAFKA_SECURITY_PROTOCOL", Some("plaintext"), "plaintext, ssl, sasl_plaintext or sasl_ssl"),
    ("CXGAP_KAFKA_SASL_MECHANISM", Some("SCRAM-SHA-512"), "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (sasl_* only)"),
    ("CXGAP_KAFKA_SASL_USERNAME", Some(""), "SASL user (required with sasl_*)"),
    ("CXGAP_KAFKA_SASL_PASSWORD", Some(""), "SASL password (required with sasl_*; keep it in a Secret)"),
    (
        "CXGAP_KAFKA_SSL_CA_LOCATION",
        Some(""),
        "PEM file of the CAs that sign the brokers' certificates; empty: the system's",
    ),
    ("CXGAP_KAFKA_SSL_CERTIFICATE_LOCATION", Some(""), "client certificate (PEM) for mutual TLS"),
    ("CXGAP_KAFKA_SSL_KEY_LOCATION", Some(""), "client private key (PEM) for mutual TLS"),
    ("CXGAP_KAFKA_SSL_KEY_PASSWORD", Some(""), "passphrase of that key, when it is encrypted"),
];

/// TLS on a service's own gRPC and HTTP ports ([`crate::tls`]). Shared by the three
/// services; off by default, since TLS usually ends at the ingress.
pub const SERVER_TLS: &[Setting] = &[
    ("CXGAP_TLS_CERT_FILE", Some(""), "certificate chain (PEM) of the service's gRPC and HTTP ports; empty: no TLS"),
    ("CXGAP_TLS_KEY_FILE", Some(""), "private key (PEM) of CXGAP_TLS_CERT_FILE"),
    (
        "CXGAP_TLS_CLIENT_CA_FILE",
        Some(""),
        "CAs (PEM) whose client certificates the ports require (mutual TLS); empty: none asked",
    ),
];

/// The settings every service reads besides its own.
fn shared<'a>() -> impl Iterator<Item = &'a Setting> {
    KAFKA_SECURITY.iter().chain(SERVER_TLS)
}

/// librdkafka properties for [`KAFKA_SECURITY`]. Its `Debug` hides the SASL password, so a
/// logged configuration never carries it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if k.ends_with(".password") { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaSecurity").field("properties", &shown).finish()
    }
}

#[derive(Debug)]
pub struct Settings<'a> {
    values: &'a BTreeMap<String, String>,
    known: &'a [Setting],
    errors: Vec<String>,
}

impl<'a> Settings<'a> {
    /// Flags every `CXGAP_*` key that is not one of `known`: a typo must not pass silently.
    pub fn new(values: &'a BTreeMap<String, String>, known: &'a [Setting], service: &str) -> Self {
        let mut errors = Vec::new();
        for key in values.keys().filter(|k| k.starts_with("CXGAP_")) {
            if !known.iter().chain(shared()).any(|(k, _, _)| k == key) {
                errors.push(format!("{key} is not a setting of the {service} service"));
            }
        }
        Settings { values, known, errors }
    }

    /// The value, else the default; a required setting without either is an error.
    pub fn raw(&mut self, key: &str) -> Option<String> {
        let default = self.known.iter().chain(shared()).find(|(k, _, _)| *k == key).and_then(|(_, d, _)| *d);
        match self.values.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            Some(v) => Some(v.to_string()),
            None if default.is_some() => default.map(str::to_string),
            None => {
                self.errors.push(format!("{key} is required"));
                None
            }
        }
    }

    pub fn parse<T: std::str::FromStr>(&mut self, key: &str, what: &str, ok: impl Fn(&T) -> bool) -> Option<T> {
        let raw = self.raw(key)?;
        match raw.parse::<T>() {
            Ok(v) if ok(&v) => Some(v),
            _ => {
                self.errors.push(format!("{key}={raw:?} is not {what}"));
                None
            }
        }
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    /// `value` if every setting was good, else every problem.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(ConfigError(self.errors)),
        }
    }

    /// The database URL rule every service shares.
    pub fn database_url(&mut self, key: &str) -> Option<String> {
        let url = self.raw(key)?;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:") {
            Some(url)
        } else {
            self.errors.push(format!("{key} must start with postgres://, postgresql:// or sqlite:"));
            None
        }
    }

    /// `key` (the connections in each of the service's database pools) for the database at
    /// `url`: 1 to 256 on PostgreSQL; on SQLite one, as SQLite allows one writer, and any
    /// other value set there is an error rather than a setting silently ignored.
    pub fn database_pool_size(&mut self, key: &str, url: Option<&str>) -> Option<u32> {
        let size = self.parse::<u32>(key, "a number of connections from 1 to 256", |n| (1..=256).contains(n))?;
        let sqlite = url.is_some_and(|u| u.starts_with("sqlite:"));
        let set = self.values.get(key).is_some_and(|v| !v.trim().is_empty());
        match (sqlite, set) {
            (true, true) if size != 1 => {
                self.errors.push(format!(
                    "{key}={size} cannot apply to a SQLite database, which takes one writer: leave it unset or 1"
                ));
                None
            }
            (true, _) => Some(1),
            (false, _) => Some(size),
        }
    }

    /// The [`KAFKA_SECURITY`] settings as librdkafka properties. Every mismatch is an
    /// error: SASL credentials or TLS files under plaintext would otherwise be ignored and
    /// the service would talk to the broker unprotected. Files must be readable now, not
    /// at the first connection.
    pub fn kafka_security(&mut self) -> Option<KafkaSecurity> {
        let protocol = self.raw("CXGAP_KAFKA_SECURITY_PROTOCOL")?.to_ascii_lowercase();
        let get = |s: &mut Self, key: &str| s.raw(key).unwrap_or_default();
        let mechanism = get(self, "CXGAP_KAFKA_SASL_MECHANISM").to_ascii_uppercase();
        let user = get(self, "CXGAP_KAFKA_SASL_USERNAME");
        let password = get(self, "CXGAP_KAFKA_SASL_PASSWORD");
        let key_password = get(self, "CXGAP_KAFKA_SSL_KEY_PASSWORD");
        // The mechanism has a default, so only a value given is a mismatch under non-SASL.
        let mechanism_given = self.values.get("CXGAP_KAFKA_SASL_MECHANISM").is_some_and(|v| !v.trim().is_empty());
        let files = [
            ("CXGAP_KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
            ("CXGAP_KAFKA_SSL_CERTIFICATE_LOCATION", "ssl.certificate.location"),
            ("CXGAP_KAFKA_SSL_KEY_LOCATION", "ssl.key.location"),
        ]
        .map(|(key, property)| (key, property, get(self, key)));
        let (sasl, tls) = match protocol.as_str() {
            "plaintext" => (false, false),
            "ssl" => (false, true),
            "sasl_plaintext" => (true, false),
            "sasl_ssl" => (true, true),
            other => {
                self.error(format!(
                    "CXGAP_KAFKA_SECURITY_PROTOCOL={other:?} is not plaintext, ssl, sasl_plaintext or sasl_ssl"
                ));
                return None;
            }
        };
        let before = self.errors.len();
        let mut properties = Vec::new();
        if protocol != "plaintext" {
            properties.push(("security.protocol".to_string(), protocol.clone()));
        }
        if sasl {
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&mechanism.as_str()) {
                self.error(format!(
                    "CXGAP_KAFKA_SASL_MECHANISM={mechanism:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                ));
            }
            for (key, value) in [("CXGAP_KAFKA_SASL_USERNAME", &user), ("CXGAP_KAFKA_SASL_PASSWORD", &password)] {
                if value.is_empty() {
                    self.error(format!("{key} is required with CXGAP_KAFKA_SECURITY_PROTOCOL={protocol}"));
                }
            }
            properties.push(("sasl.mechanism".into(), mechanism));
            properties.push(("sasl.username".into(), user));
            properties.push(("sasl.password".into(), password));
        } else if !user.is_empty() || !password.is_empty() || mechanism_given {
            self.error(format!(
                "SASL credentials are set but CXGAP_KAFKA_SECURITY_PROTOCOL={protocol} would not use them \
                 (sasl_ssl or sasl_plaintext)"
            ));
        }
        for (key, property, path) in files {
            if path.is_empty() {
                continue;
            }
            if !tls {
                self.error(format!(
                    "{key} is set but CXGAP_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS (ssl or sasl_ssl)"
                ));
            } else if let Err(e) = std::fs::File::open(&path) {
                self.error(format!("{key}={path:?} cannot be read: {e}"));
            }
            properties.push((property.to_string(), path));
        }
        if !key_password.is_empty() {
            if !properties.iter().any(|(k, _)| k == "ssl.key.location") {
                self.error("CXGAP_KAFKA_SSL_KEY_PASSWORD is set without CXGAP_KAFKA_SSL_KEY_LOCATION");
            }
            properties.push(("ssl.key.password".into(), key_password));
        }
        let has = |p: &str| properties.iter().any(|(k, _)| k == p);
        if has("ssl.certificate.location") != has("ssl.key.location") {
            self.error(
                "CXGAP_KAFKA_SSL_CERTIFICATE_LOCATION and CXGAP_KAFKA_SSL_KEY_LOCATION go together (mutual TLS)",
            );
        }
        (self.errors.len() == before).then_some(KafkaSecurity { properties })
    }

    /// The [`SERVER_TLS`] settings: `Some(None)` without TLS, `None` when they are wrong
    /// (a certificate without its key, a client CA without a certificate, a file that
    /// cannot be read or is not what it should be).
    pub fn server_tls(&mut self) -> Option<Option<crate::tls::ServerTls>> {
        let [cert, key, ca] = ["CXGAP_TLS_CERT_FILE", "CXGAP_TLS_KEY_FILE", "CXGAP_TLS_CLIENT_CA_FILE"]
            .map(|k| self.raw(k).unwrap_or_default());
        if cert.is_empty() && key.is_empty() {
            if !ca.is_empty() {
                self.error("CXGAP_TLS_CLIENT_CA_FILE is set without CXGAP_TLS_CERT_FILE and CXGAP_TLS_KEY_FILE: mutual TLS needs TLS");
                return None;
            }
            return Some(None);
        }
        if cert.is_empty() || key.is_empty() {
            self.error("CXGAP_TLS_CERT_FILE and CXGAP_TLS_KEY_FILE go together");
            return None;
        }
        let mut read = |name: &str, path: &str| match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) => {
                self.error(format!("{name}={path:?} cannot be read: {e}"));
                None
            }
        };
        let (cert_pem, key_pem) = (read("CXGAP_TLS_CERT_FILE", &cert), read("CXGAP_TLS_KEY_FILE", &key));
        let ca_pem = if ca.is_empty() { Some(None) } else { read("CXGAP_TLS_CLIENT_CA_FILE", &ca).map(Some) };
        match crate::tls::ServerTls::from_pem(cert_pem?, key_pem?, ca_pem?) {
            Ok(tls) => Some(Some(tls)),
            Err(e) => {
                self.error(format!(
                    "server TLS ({cert:?}, {key:?}{}): {e}",
                    if ca.is_empty() { String::new() } else { format!(", {ca:?}") }
                ));
                None
            }
        }
    }

    pub fn log_format(&mut self, key: &str) -> Option<crate::telemetry::LogFormat> {
        let raw = self.raw(key)?;
        let f = crate::telemetry::LogFormat::parse(&raw);
        if f.is_none() {
            self.errors.push(format!("{key}={raw:?} is not json or plain"));
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(pairs: &[(&str, &str)]) -> Result<KafkaSecurity, ConfigError> {
        let values: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut s = Settings::new(&values, &[], "test");
        let v = s.kafka_security();
        s.finish(v)
    }

    fn pool_size(pairs: &[(&str, &str)], url: &str) -> Result<u32, ConfigError> {
        let values: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let known = [("CXGAP_DATABASE_POOL_SIZE", Some("8"), "")];
        let mut s = Settings::new(&values, &known, "test");
        let v = s.database_pool_size("CXGAP_DATABASE_POOL_SIZE", Some(url));
        s.finish(v)
    }

    #[test]
    fn the_pool_size_is_bounded_and_one_on_sqlite() {
        let pg = "postgres://db/cxgap";
        assert_eq!(pool_size(&[], pg).unwrap(), 8, "the default");
        assert_eq!(pool_size(&[("CXGAP_DATABASE_POOL_SIZE", "20")], pg).unwrap(), 20);
        assert_eq!(pool_size(&[], "sqlite:x.db").unwrap(), 1, "SQLite's one writer, unless told");
        assert_eq!(pool_size(&[("CXGAP_DATABASE_POOL_SIZE", "1")], "sqlite:x.db").unwrap(), 1);
        for bad in ["0", "257", "-1", "eight"] {
            let e = pool_size(&[("CXGAP_DATABASE_POOL_SIZE", bad)], pg).unwrap_err().to_string();
            assert!(e.contains(&format!("CXGAP_DATABASE_POOL_SIZE={bad:?} is not a number of connections")), "{e}");
        }
        let e = pool_size(&[("CXGAP_DATABASE_POOL_SIZE", "4")], "sqlite:x.db").unwrap_err().to_string();
        assert!(e.contains("CXGAP_DATABASE_POOL_SIZE=4 cannot apply to a SQLite database"), "{e}");
    }

    #[test]
    fn kafka_security_becomes_librdkafka_properties() {
        assert_eq!(security(&[]).unwrap().properties, [], "plaintext by default: nothing set");
        let ca = std::env::temp_dir().join("cxgap-settings-test-ca.pem");
        std::fs::write(&ca, "not checked here, only readable").unwrap();
        let ca = ca.to_str().unwrap();
        let s = security(&[
            ("CXGAP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("CXGAP_KAFKA_SASL_MECHANISM", "scram-sha-256"),
            ("CXGAP_KAFKA_SASL_USERNAME", "cxgap"),
            ("CXGAP_KAFKA_SASL_PASSWORD", "s3cret"),
            ("CXGAP_KAFKA_SSL_CA_LOCATION", ca),
        ])
        .unwrap();
        let want: Vec<(String, String)> = [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "cxgap"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.location", ca),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert_eq!(s.properties, want);
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret") && shown.contains("<redacted>"), "{shown}");
        // Mutual TLS with an encrypted key: its passphrase is hidden too.
        let s = security(&[
            ("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"),
            ("CXGAP_KAFKA_SSL_CERTIFICATE_LOCATION", ca),
            ("CXGAP_KAFKA_SSL_KEY_LOCATION", ca),
            ("CXGAP_KAFKA_SSL_KEY_PASSWORD", "k3y-pass"),
        ])
        .unwrap();
        let keys: Vec<&str> = s.properties.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["security.protocol", "ssl.certificate.location", "ssl.key.location", "ssl.key.password"]);
        assert!(!format!("{s:?}").contains("k3y-pass"));
    }

    #[test]
    fn kafka_security_mismatches_are_named() {
        let errors = |pairs: &[(&str, &str)]| security(pairs).unwrap_err().0.join("\n");
        let e = errors(&[("CXGAP_KAFKA_SECURITY_PROTOCOL", "tls")]);
        assert!(e.contains("\"tls\" is not plaintext, ssl"), "{e}");
        let e = errors(&[("CXGAP_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"), ("CXGAP_KAFKA_SASL_MECHANISM", "GSSAPI")]);
        assert!(e.contains("\"GSSAPI\" is not PLAIN"), "{e}");
        assert!(e.contains("CXGAP_KAFKA_SASL_USERNAME is required") && e.contains("PASSWORD is required"), "{e}");
        let e = errors(&[("CXGAP_KAFKA_SASL_USERNAME", "cxgap")]);
        assert!(e.contains("SASL credentials are set but CXGAP_KAFKA_SECURITY_PROTOCOL=plaintext"), "{e}");
        let e = errors(&[("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SASL_MECHANISM", "PLAIN")]);
        assert!(e.contains("CXGAP_KAFKA_SECURITY_PROTOCOL=ssl would not use them"), "{e}");
        let e = errors(&[("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_KEY_PASSWORD", "pw")]);
        assert!(e.contains("CXGAP_KAFKA_SSL_KEY_PASSWORD is set without"), "{e}");
        let e = errors(&[("CXGAP_KAFKA_SSL_CA_LOCATION", "/etc/hostname")]);
        assert!(e.contains("does not use TLS"), "{e}");
        let e = errors(&[("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_CA_LOCATION", "/no/such/ca.pem")]);
        assert!(e.contains("\"/no/such/ca.pem\" cannot be read"), "{e}");
        let e = errors(&[("CXGAP_KAFKA_SECURITY_PROTOCOL", "ssl"), ("CXGAP_KAFKA_SSL_KEY_LOCATION", "/etc/hostname")]);
        assert!(e.contains("go together"), "{e}");
    }

    fn server_tls(pairs: &[(&str, &str)]) -> Result<Option<crate::tls::ServerTls>, String> {
        let values: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut s = Settings::new(&values, &[], "test");
        let v = s.server_tls();
        s.finish(v).map_err(|e| e.to_string())
    }

    #[test]
    fn server_tls_mismatches_are_named() {
        assert!(server_tls(&[]).unwrap().is_none(), "no TLS unless told");
        let e = server_tls(&[("CXGAP_TLS_CERT_FILE", "/etc/hostname")]).unwrap_err();
        assert!(e.contains("CXGAP_TLS_CERT_FILE and CXGAP_TLS_KEY_FILE go together"), "{e}");
        let e = server_tls(&[("CXGAP_TLS_CLIENT_CA_FILE", "/etc/hostname")]).unwrap_err();
        assert!(e.contains("CXGAP_TLS_CLIENT_CA_FILE is set without CXGAP_TLS_CERT_FILE"), "{e}");
        let e =
            server_tls(&[("CXGAP_TLS_CERT_FILE", "/no/such.pem"), ("CXGAP_TLS_KEY_FILE", "/no/such.key")]).unwrap_err();
        assert!(e.contains("CXGAP_TLS_CERT_FILE=\"/no/such.pem\" cannot be read"), "{e}");
        assert!(e.contains("CXGAP_TLS_KEY_FILE=\"/no/such.key\" cannot be read"), "{e}");
        let not_pem = std::env::temp_dir().join("cxgap-settings-test-not-pem.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let not_pem = not_pem.to_str().unwrap();
        let e = server_tls(&[("CXGAP_TLS_CERT_FILE", not_pem), ("CXGAP_TLS_KEY_FILE", not_pem)]).unwrap_err();
        assert!(e.contains("server TLS") && e.contains("the certificate file holds no certificate"), "{e}");
    }
}

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
            if !known.iter().any(|(k, _, _)| k == key) {
                errors.push(format!("{key} is not a setting of the {service} service"));
            }
        }
        Settings { values, known, errors }
    }

    /// The value, else the default; a required setting without either is an error.
    pub fn raw(&mut self, key: &str) -> Option<String> {
        let default = self.known.iter().find(|(k, _, _)| *k == key).and_then(|(_, d, _)| *d);
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

    pub fn log_format(&mut self, key: &str) -> Option<crate::telemetry::LogFormat> {
        let raw = self.raw(key)?;
        let f = crate::telemetry::LogFormat::parse(&raw);
        if f.is_none() {
            self.errors.push(format!("{key}={raw:?} is not json or plain"));
        }
        f
    }
}

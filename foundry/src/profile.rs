//! Environment profiles: the telemetry settings and the services' addresses of each environment
//! (`[profiles.dev]`, `[profiles.staging]`, `[profiles.prod]` of `logos.toml`), layered between the
//! environment variables and the built-in defaults.
//!
//! A service finds the file at `LOGOS_CONFIG` when that is set, else as `logos.toml` in its working
//! directory; with none, the `dev` profile is empty and every setting keeps its built-in default.
//! `--env` (every binary, every command), else `LOGOS_ENV`, else `dev` picks the profile.
//! Precedence, highest first: command-line flag, environment variable, profile, built-in default.
//!
//! Each key of a profile stands for one variable (the table `SETTINGS`): a value means the same in the file
//! as in the environment and goes through the same parser ([`TelemetryConfig::from_lookup`], the
//! services' clap flags). figment reads the file, focuses each profile and names the key at fault;
//! toml_edit (the parser under the toml crate) gives that key's line. A bad file, key or value is a
//! [`ProfileError`] naming the file, the key and the line.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
};

use clap::{ArgMatches, Command, CommandFactory, FromArgMatches, parser::ValueSource};
use figment::{
    Figment,
    providers::{Format, Toml},
};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Deserialize;

use crate::{
    config::{ConfigError, TelemetryConfig},
    url::{parse_service_url, without_userinfo},
};

/// The file's name, looked for in the working directory.
pub(crate) const CONFIG_FILE: &str = "logos.toml";
/// The variable that says where the file is instead.
pub(crate) const CONFIG_VARIABLE: &str = "LOGOS_CONFIG";
/// The variable that picks the profile (the `--env` flag wins over it).
pub(crate) const ENV_VARIABLE: &str = "LOGOS_ENV";
/// The profile when neither `--env` nor `LOGOS_ENV` names one: the services as they always were.
pub(crate) const DEFAULT_PROFILE: &str = "dev";
/// The clap id of the `--env` flag that [`parse`] adds to a binary's command line.
const ENV_ARG: &str = "logos_env";

/// One setting of a service: the variable that sets it, the profile key that may set it, and its
/// built-in default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Setting {
    /// The service it belongs to; `None`: every service (the telemetry settings).
    pub service: Option<&'static str>,
    /// Its key in a profile, below `[profiles.<name>]`; `None`: the environment only (secrets,
    /// switches).
    pub key: Option<&'static str>,
    /// The environment variable (and the flag's `env`).
    pub variable: &'static str,
    /// The built-in default; `None`: unset. `{service}` stands for the service's name.
    pub default: Option<&'static str>,
    /// Whether its value is redacted when shown.
    pub secret: bool,
}

const fn setting(
    service: Option<&'static str>,
    key: Option<&'static str>,
    variable: &'static str,
    default: Option<&'static str>,
) -> Setting {
    Setting {
        service,
        key,
        variable,
        default,
        secret: false,
    }
}

const fn secret(service: Option<&'static str>, variable: &'static str) -> Setting {
    Setting {
        service,
        key: None,
        variable,
        default: None,
        secret: true,
    }
}

/// The three services, in the order of the call chain's entry.
pub(crate) const SERVICES: [&str; 3] = ["sophia", "hermes", "apollo"];

/// Every setting of every service, in the order `apollo config` shows them. The services'
/// defaults are those of their clap flags (a test in apollo compares them).
#[rustfmt::skip]
pub(crate) const SETTINGS: &[Setting] = &[
    // Telemetry (foundry::config): every service.
    setting(None, None, "OTEL_SDK_DISABLED", Some("false")),
    setting(None, Some("telemetry.endpoint"), "OTEL_EXPORTER_OTLP_ENDPOINT", None),
    setting(None, Some("telemetry.protocol"), "OTEL_EXPORTER_OTLP_PROTOCOL", Some("grpc")),
    secret(None, "OTEL_EXPORTER_OTLP_HEADERS"),
    setting(None, Some("telemetry.export_timeout_ms"), "OTEL_EXPORTER_OTLP_TIMEOUT", Some("10000")),
    setting(None, None, "OTEL_SERVICE_NAME", Some("{service}")),
    setting(None, Some("telemetry.resource_attributes"), "OTEL_RESOURCE_ATTRIBUTES", None),
    setting(None, Some("telemetry.sampler"), "OTEL_TRACES_SAMPLER", Some("parentbased_always_on")),
    setting(None, Some("telemetry.sampler_arg"), "OTEL_TRACES_SAMPLER_ARG", None),
    setting(None, Some("telemetry.metric_export_interval_ms"), "OTEL_METRIC_EXPORT_INTERVAL", Some("60000")),
    setting(None, Some("telemetry.batch.max_queue_size"), "OTEL_BSP_MAX_QUEUE_SIZE", Some("16384")),
    setting(None, Some("telemetry.batch.max_export_batch_size"), "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", Some("512")),
    setting(None, Some("telemetry.batch.schedule_delay_ms"), "OTEL_BSP_SCHEDULE_DELAY", Some("5000")),
    setting(None, None, "OTEL_EXPORT_CONSOLE", Some("false")),
    setting(None, None, "OTEL_EXPORTER_OTLP_COMPRESSION", Some("none")),
    setting(None, None, "OTEL_TRACES_EXPORTER", None),
    setting(None, None, "OTEL_METRICS_EXPORTER", None),
    setting(None, None, "OTEL_LOGS_EXPORTER", None),
    setting(None, None, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None),
    setting(None, None, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", None),
    secret(None, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
    setting(None, None, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", None),
    setting(None, None, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", None),
    setting(None, None, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", None),
    setting(None, None, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", None),
    secret(None, "OTEL_EXPORTER_OTLP_METRICS_HEADERS"),
    setting(None, None, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", None),
    setting(None, None, "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", None),
    setting(None, None, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", None),
    setting(None, None, "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", None),
    secret(None, "OTEL_EXPORTER_OTLP_LOGS_HEADERS"),
    setting(None, None, "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", None),
    setting(None, None, "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", None),
    setting(None, None, "OTEL_PROPAGATORS", Some("tracecontext,baggage")),
    setting(None, None, "OTEL_BSP_EXPORT_TIMEOUT", Some("30000")),
    setting(None, None, "OTEL_METRIC_EXPORT_TIMEOUT", Some("30000")),
    setting(None, None, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", Some("128")),
    setting(None, None, "RUST_LOG", Some("info")),
    setting(None, None, "LOG_FORMAT", Some("text")),
    // Sophia.
    setting(Some("sophia"), Some("sophia.host"), "SOPHIA_HOST", Some("127.0.0.1")),
    setting(Some("sophia"), Some("sophia.port"), "SOPHIA_PORT", Some("47000")),
    setting(Some("sophia"), Some("hermes.url"), "HERMES_URL", Some("http://127.0.0.1:17000")),
    setting(Some("sophia"), None, "SOPHIA_HERMES_TIMEOUT_MS", Some("10000")),
    setting(Some("sophia"), None, "SOPHIA_HCG_CAPACITY", Some("100000")),
    secret(Some("sophia"), "SOPHIA_API_TOKEN"),
    // Hermes.
    setting(Some("hermes"), Some("hermes.host"), "HERMES_HOST", Some("127.0.0.1")),
    setting(Some("hermes"), Some("hermes.port"), "HERMES_PORT", Some("17000")),
    setting(Some("hermes"), None, "HERMES_LLM_PROVIDER", Some("echo")),
    secret(Some("hermes"), "HERMES_LLM_API_KEY"),
    setting(Some("hermes"), None, "HERMES_LLM_BASE_URL", Some("https://api.openai.com/v1")),
    setting(Some("hermes"), None, "HERMES_LLM_MODEL", Some("gpt-4o-mini")),
    setting(Some("hermes"), None, "HERMES_LLM_TIMEOUT_MS", Some("55000")),
    setting(Some("hermes"), None, "HERMES_VECTOR_CAPACITY", Some("10000")),
    // Apollo (the CLI, and `apollo serve`).
    setting(Some("apollo"), Some("apollo.host"), "APOLLO_HOST", Some("127.0.0.1")),
    setting(Some("apollo"), Some("apollo.port"), "APOLLO_PORT", Some("27000")),
    setting(Some("apollo"), Some("sophia.url"), "SOPHIA_URL", Some("http://127.0.0.1:47000")),
    setting(Some("apollo"), Some("hermes.url"), "HERMES_URL", Some("http://127.0.0.1:17000")),
    secret(Some("apollo"), "SOPHIA_API_KEY"),
    setting(Some("apollo"), None, "APOLLO_TIMEOUT_MS", Some("30000")),
    // `apollo trace` / `traces` ask `apollo serve` here; `serve` keeps the diagnostics window.
    setting(Some("apollo"), Some("apollo.url"), "APOLLO_URL", Some("http://127.0.0.1:27000")),
    setting(Some("apollo"), None, "APOLLO_DIAGNOSTICS_MAX_SPANS", Some("100000")),
    setting(Some("apollo"), None, "APOLLO_JAEGER_URL", None),
    setting(Some("apollo"), None, "APOLLO_GRAFANA_URL", None),
];

/// What a profile may hold: `[profiles.<name>]` with these tables, each key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileKeys {
    #[serde(default)]
    telemetry: TelemetryKeys,
    #[serde(default)]
    sophia: ServiceKeys,
    #[serde(default)]
    hermes: ServiceKeys,
    #[serde(default)]
    apollo: ServiceKeys,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryKeys {
    endpoint: Option<String>,
    protocol: Option<String>,
    export_timeout_ms: Option<u64>,
    sampler: Option<String>,
    sampler_arg: Option<f64>,
    resource_attributes: Option<BTreeMap<String, String>>,
    metric_export_interval_ms: Option<u64>,
    #[serde(default)]
    batch: BatchKeys,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchKeys {
    max_queue_size: Option<u64>,
    max_export_batch_size: Option<u64>,
    schedule_delay_ms: Option<u64>,
}

/// A service's address: where it listens (`host`, `port`) and where the others reach it (`url`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceKeys {
    host: Option<String>,
    port: Option<u16>,
    url: Option<String>,
}

/// The top level of `logos.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    #[serde(default)]
    profiles: BTreeMap<String, figment::value::Value>,
}

/// One value a profile gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileValue {
    /// Its full key, e.g. `profiles.prod.telemetry.sampler`.
    pub key: String,
    /// As its variable would hold it.
    pub value: String,
    /// Its line in the file.
    pub line: Option<usize>,
}

/// A profile that cannot be used. Every variant names the file; a key's names the key and line.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A key that is unknown, of the wrong type, or whose value is invalid.
    #[error("{file}{}: {key}: {reason}", at_line(*.line))]
    Key {
        /// The file.
        file: String,
        /// The full key, e.g. `profiles.prod.telemetry.sampler`.
        key: String,
        /// Its line.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A file that cannot be read or is not TOML (the parser's message says where).
    #[error("{file}: {reason}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The profile asked for is not in the file.
    #[error(
        "{file}: no [profiles.{name}] (it has: {available}); pick one with --env or {ENV_VARIABLE}"
    )]
    UnknownProfile {
        /// The file.
        file: String,
        /// The profile asked for.
        name: String,
        /// The profiles it has.
        available: String,
    },
    /// A profile other than `dev` was asked for, and there is no file to take it from.
    #[error(
        "profile {name:?} asked for, but there is no {CONFIG_FILE} in {dir} and {CONFIG_VARIABLE} is unset"
    )]
    NoFile {
        /// The profile asked for.
        name: String,
        /// The working directory.
        dir: String,
    },
    /// An environment variable's value, as foundry::config reports it.
    #[error(transparent)]
    Variable(#[from] ConfigError),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(", line {line}"))
        .unwrap_or_default()
}

/// The chosen profile's values, by variable. Empty for `dev` without a file (the default).
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    name: String,
    file: Option<PathBuf>,
    values: BTreeMap<&'static str, ProfileValue>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            name: DEFAULT_PROFILE.to_owned(),
            file: None,
            values: BTreeMap::new(),
        }
    }
}

/// Where an effective value came from, highest precedence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The profile in `logos.toml`.
    Profile,
    /// The built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "flag",
            Self::Env => "env",
            Self::Profile => "profile",
            Self::Default => "default",
        })
    }
}

/// One setting of one service as it takes effect, secrets redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Effective {
    /// The setting.
    pub setting: Setting,
    /// Its value (`***` for a secret that is set); `None`: unset.
    pub value: Option<String>,
    /// Where the value came from.
    pub source: Source,
    /// The profile key that gave it, when it came from the profile.
    pub key: Option<String>,
}

/// Every service's settings as they take effect in one profile: what `apollo config` shows,
/// as tables ([`fmt::Display`]) or JSON ([`Report::to_json`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    profile: String,
    file: Option<PathBuf>,
    services: Vec<(&'static str, Vec<Effective>)>,
}

impl Report {
    /// `{"profile", "file", "services": {"<service>": [{"variable", "key", "value", "source",
    /// "profile_key"}, ...]}}`, each service's settings in order.
    pub fn to_json(&self) -> serde_json::Value {
        let services: serde_json::Map<String, serde_json::Value> = self
            .services
            .iter()
            .map(|(service, settings)| {
                let settings: Vec<serde_json::Value> = settings
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "variable": e.setting.variable,
                            "key": e.setting.key,
                            "value": e.value,
                            "source": e.source.to_string(),
                            "profile_key": e.key,
                        })
                    })
                    .collect();
                ((*service).to_owned(), serde_json::Value::from(settings))
            })
            .collect();
        serde_json::json!({
            "profile": self.profile,
            "file": self.file.as_ref().map(|f| f.display().to_string()),
            "services": services,
        })
    }
}

/// The profile, then one table per service: variable, value, source (and the profile key a
/// value came from).
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_ref().map_or_else(
            || format!("no {CONFIG_FILE}: built-in defaults"),
            |file| file.display().to_string(),
        );
        writeln!(f, "profile: {} ({file})", self.profile)?;
        for (service, settings) in &self.services {
            writeln!(f, "\n{service}")?;
            for e in settings {
                let value = e.value.as_deref().unwrap_or("(unset)");
                let from = match &e.key {
                    Some(key) => format!("{} ({key})", e.source),
                    None => e.source.to_string(),
                };
                writeln!(f, "  {:<32} {:<34} {from}", e.setting.variable, value)?;
            }
        }
        Ok(())
    }
}

impl Profile {
    /// The profile `flag` names (else `LOGOS_ENV`, else `dev`), from the file `LOGOS_CONFIG` names,
    /// else `logos.toml` in the working directory.
    pub fn load(flag: Option<&str>) -> Result<Self, ProfileError> {
        let dir = std::env::current_dir().unwrap_or_default();
        Self::load_with(flag, |name| std::env::var(name).ok(), &dir)
    }

    /// [`Profile::load`] with the environment read through `env` and `dir` as the working
    /// directory, so tests need not touch the process.
    pub(crate) fn load_with(
        flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        dir: &Path,
    ) -> Result<Self, ProfileError> {
        let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let name = flag
            .map(str::to_owned)
            .or_else(|| set(ENV_VARIABLE))
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        let file = match set(CONFIG_VARIABLE) {
            Some(path) => Some(PathBuf::from(path.trim())),
            None => Some(dir.join(CONFIG_FILE)).filter(|file| file.is_file()),
        };
        match file {
            Some(file) => Self::from_file(&file, &name),
            None if name == DEFAULT_PROFILE => Ok(Self::default()),
            None => Err(ProfileError::NoFile {
                name,
                dir: dir.display().to_string(),
            }),
        }
    }

    /// Profile `name` of `file`. Every profile of the file is checked, so that a mistake in one
    /// environment shows in all of them.
    pub fn from_file(file: &Path, name: &str) -> Result<Self, ProfileError> {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|error| ProfileError::File {
            file: shown.clone(),
            reason: format!("cannot read it: {error}"),
        })?;
        let figment = Figment::from(Toml::string(&text));
        let key_error = |prefix: &[&str], error: figment::Error| {
            let mut path: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
            path.extend(error.path.iter().cloned());
            if let figment::error::Kind::UnknownField(field, _) = &error.kind
                && path.last() != Some(field)
            {
                path.push(field.clone());
            }
            if path.is_empty() {
                // Not about a key: the file is not TOML (the message says where).
                return ProfileError::File {
                    file: shown.clone(),
                    reason: error.kind.to_string(),
                };
            }
            ProfileError::Key {
                file: shown.clone(),
                line: line_of(&text, &path),
                key: path.join("."),
                reason: error.kind.to_string(),
            }
        };
        let top: FileKeys = figment.extract().map_err(|e| key_error(&[], e))?;

        let mut chosen = None;
        for (profile, value) in &top.profiles {
            // Read from the value itself: a name with a dot is a key of its own, not a path.
            let keys: ProfileKeys = value
                .deserialize()
                .map_err(|e| key_error(&["profiles", profile], e))?;
            let values = values(&keys)
                .into_iter()
                .map(|(variable, key, value)| {
                    let path: Vec<String> = ["profiles", profile.as_str()]
                        .into_iter()
                        .chain(key.split('.'))
                        .map(str::to_owned)
                        .collect();
                    let value = ProfileValue {
                        key: path.join("."),
                        line: line_of(&text, &path),
                        value,
                    };
                    (variable, value)
                })
                .collect();
            let candidate = Self {
                name: profile.clone(),
                file: Some(file.to_path_buf()),
                values,
            };
            candidate.check()?;
            if profile == name {
                chosen = Some(candidate);
            }
        }
        chosen.ok_or_else(|| ProfileError::UnknownProfile {
            file: shown,
            name: name.to_owned(),
            available: top.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it came from; `None`: no file (built-in defaults).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// What the profile gives `variable`, if anything.
    pub fn get(&self, variable: &str) -> Option<&ProfileValue> {
        self.values.get(variable)
    }

    /// The telemetry settings of `service`: each variable from the process environment, else from
    /// this profile, else its default.
    pub fn telemetry(&self, service: &str, version: &str) -> Result<TelemetryConfig, ProfileError> {
        self.telemetry_with(service, version, |name| std::env::var(name).ok())
    }

    /// [`Profile::telemetry`] with the environment read through `env`.
    pub(crate) fn telemetry_with(
        &self,
        service: &str,
        version: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<TelemetryConfig, ProfileError> {
        let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        TelemetryConfig::from_lookup(service, version, |name| {
            set(name).or_else(|| self.get(name).map(|v| v.value.clone()))
        })
        .map_err(|error| match self.get(error.variable) {
            Some(value) if set(error.variable).is_none() => self.key_error(value, &error),
            _ => ProfileError::Variable(error),
        })
    }

    /// Every service's settings as they take effect, `flags` being
    /// those of `service`'s own command line (the others would take theirs).
    pub fn report(
        &self,
        service: &str,
        flags: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Report {
        let none = BTreeMap::new();
        Report {
            profile: self.name.clone(),
            file: self.file.clone(),
            services: SERVICES
                .iter()
                .map(|other| {
                    let flags = if *other == service { flags } else { &none };
                    (*other, self.effective(other, flags, &env))
                })
                .collect(),
        }
    }

    /// Every setting of `service` as it takes effect: `flags` (variable to value, from the command
    /// line), else the environment, else this profile, else the default; secrets redacted.
    pub(crate) fn effective(
        &self,
        service: &str,
        flags: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Vec<Effective> {
        SETTINGS
            .iter()
            .filter(|s| s.service.is_none_or(|owner| owner == service))
            .map(|setting| {
                // Unset, the service name is a `service.name` in OTEL_RESOURCE_ATTRIBUTES, if any
                // (as the exported resource has it), before the service's own.
                let found = self.lookup(setting.variable, flags, &env).or_else(|| {
                    (setting.variable == "OTEL_SERVICE_NAME")
                        .then(|| self.lookup("OTEL_RESOURCE_ATTRIBUTES", flags, &env))
                        .flatten()
                        .and_then(|(attributes, source, key)| {
                            let attributes = crate::config::parse_key_values(
                                "OTEL_RESOURCE_ATTRIBUTES",
                                &attributes,
                            )
                            .ok()?;
                            let (_, name) =
                                attributes.into_iter().find(|(k, _)| k == "service.name")?;
                            Some((name, source, key))
                        })
                });
                let (value, source, key) = match found {
                    Some((value, source, key)) => (Some(value), source, key),
                    None => {
                        let default = setting.default.map(|d| d.replace("{service}", service));
                        (default, Source::Default, None)
                    }
                };
                let value = value.map(|value| {
                    if setting.secret {
                        "***".to_owned()
                    } else {
                        without_userinfo(&value)
                    }
                });
                Effective {
                    setting: *setting,
                    value,
                    source,
                    key,
                }
            })
            .collect()
    }

    /// A variable's value by precedence: flag, environment, then this profile (with its key).
    fn lookup(
        &self,
        variable: &str,
        flags: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<(String, Source, Option<String>)> {
        if let Some(flag) = flags.get(variable) {
            return Some((flag.clone(), Source::Flag, None));
        }
        if let Some(value) = env(variable).filter(|v| !v.trim().is_empty()) {
            return Some((value, Source::Env, None));
        }
        self.get(variable).map(|value| {
            (
                value.value.clone(),
                Source::Profile,
                Some(value.key.clone()),
            )
        })
    }

    /// Checks each value with the parser its variable goes through.
    fn check(&self) -> Result<(), ProfileError> {
        TelemetryConfig::from_lookup("logos", "0", |name| self.get(name).map(|v| v.value.clone()))
            .map_err(|error| match self.get(error.variable) {
                Some(value) => self.key_error(value, &error),
                None => ProfileError::Variable(error),
            })?;
        for (variable, value) in &self.values {
            let reason = if variable.ends_with("_URL") {
                parse_service_url(&value.value).err()
            } else if variable.ends_with("_HOST") && value.value.trim().is_empty() {
                Some("expected a host name or address".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(self.key_error(value, &reason));
            }
        }
        Ok(())
    }

    fn key_error(&self, value: &ProfileValue, reason: &dyn fmt::Display) -> ProfileError {
        ProfileError::Key {
            file: self
                .file
                .as_deref()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            key: value.key.clone(),
            line: value.line,
            reason: reason.to_string(),
        }
    }
}

/// `key=value` members of `OTEL_RESOURCE_ATTRIBUTES`: what would end a member or start an escape
/// is percent-encoded, as the specification's format asks.
const ATTRIBUTE_VALUE: &AsciiSet = &CONTROLS.add(b',').add(b'=').add(b'%').add(b' ');

/// A profile's values as (variable, key below the profile, value as the variable would hold it).
fn values(keys: &ProfileKeys) -> Vec<(&'static str, &'static str, String)> {
    let t = &keys.telemetry;
    let mut out: Vec<(&'static str, &'static str, Option<String>)> = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "telemetry.endpoint",
            t.endpoint.clone(),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "telemetry.protocol",
            t.protocol.clone(),
        ),
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "telemetry.export_timeout_ms",
            t.export_timeout_ms.map(|v| v.to_string()),
        ),
        (
            "OTEL_TRACES_SAMPLER",
            "telemetry.sampler",
            t.sampler.clone(),
        ),
        (
            "OTEL_TRACES_SAMPLER_ARG",
            "telemetry.sampler_arg",
            t.sampler_arg.map(|v| v.to_string()),
        ),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "telemetry.resource_attributes",
            t.resource_attributes.as_ref().map(|attributes| {
                attributes
                    .iter()
                    .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, ATTRIBUTE_VALUE)))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        ),
        (
            "OTEL_METRIC_EXPORT_INTERVAL",
            "telemetry.metric_export_interval_ms",
            t.metric_export_interval_ms.map(|v| v.to_string()),
        ),
        (
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "telemetry.batch.max_queue_size",
            t.batch.max_queue_size.map(|v| v.to_string()),
        ),
        (
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "telemetry.batch.max_export_batch_size",
            t.batch.max_export_batch_size.map(|v| v.to_string()),
        ),
        (
            "OTEL_BSP_SCHEDULE_DELAY",
            "telemetry.batch.schedule_delay_ms",
            t.batch.schedule_delay_ms.map(|v| v.to_string()),
        ),
    ];
    for (keys, [host, port, url], [host_key, port_key, url_key]) in [
        (
            &keys.sophia,
            ["SOPHIA_HOST", "SOPHIA_PORT", "SOPHIA_URL"],
            ["sophia.host", "sophia.port", "sophia.url"],
        ),
        (
            &keys.hermes,
            ["HERMES_HOST", "HERMES_PORT", "HERMES_URL"],
            ["hermes.host", "hermes.port", "hermes.url"],
        ),
        (
            &keys.apollo,
            ["APOLLO_HOST", "APOLLO_PORT", "APOLLO_URL"],
            ["apollo.host", "apollo.port", "apollo.url"],
        ),
    ] {
        out.push((host, host_key, keys.host.clone()));
        out.push((port, port_key, keys.port.map(|p| p.to_string())));
        out.push((url, url_key, keys.url.clone()));
    }
    out.into_iter()
        .filter_map(|(variable, key, value)| Some((variable, key, value?)))
        .collect()
}

/// The line of the key at `path` in `text` (1-based), or of its closest parent with a position.
fn line_of(text: &str, path: &[String]) -> Option<usize> {
    let document = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = document.as_table();
    let mut found = None;
    for (i, segment) in path.iter().enumerate() {
        let Some((key, item)) = table.get_key_value(segment) else {
            break;
        };
        found = key.span().or(found);
        if i + 1 < path.len() {
            match item.as_table_like() {
                Some(next) => table = next,
                None => break,
            }
        }
    }
    found.map(|span| text[..span.start].matches('\n').count() + 1)
}

/// A binary's parsed command line with its profile applied, and which variables were given as
/// flags.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The binary's own configuration.
    pub config: T,
    /// The profile, for [`Profile::telemetry`].
    pub profile: Profile,
    /// The settings given on the command line, by variable.
    pub flags: BTreeMap<String, String>,
}

/// Parses the process's command line as `T` does, with a global `--env PROFILE` (env
/// `LOGOS_ENV`) added, and the chosen profile's values as the defaults of the flags whose `env`
/// they set, so a flag beats its variable, which beats the profile, which beats the default. Help,
/// version and usage errors print and exit as clap's `parse` does.
pub fn parse<T: CommandFactory + FromArgMatches>() -> Result<Loaded<T>, ProfileError> {
    parse_from(std::env::args_os())
}

/// [`parse`] with the given arguments (the first is the binary's name).
pub(crate) fn parse_from<T, I, A>(args: I) -> Result<Loaded<T>, ProfileError>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let dir = std::env::current_dir().unwrap_or_default();
    parse_with(args, |name| std::env::var(name).ok(), &dir)
}

/// [`parse_from`] with the profile's environment read through `env` and `dir` as the working
/// directory (clap itself still reads the flags' variables from the process).
pub(crate) fn parse_with<T, I, A>(
    args: I,
    env: impl Fn(&str) -> Option<String>,
    dir: &Path,
) -> Result<Loaded<T>, ProfileError>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = T::command().arg(
        clap::Arg::new(ENV_ARG)
            .long("env")
            .value_name("PROFILE")
            .global(true)
            .help("The environment's profile in logos.toml: dev (the default), staging, prod [env: LOGOS_ENV]"),
    );
    // First pass: only which profile (a usage error shows in the second).
    let flag = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(args.clone())
        .ok()
        .and_then(|matches| matches.get_one::<String>(ENV_ARG).cloned());
    let profile = Profile::load_with(flag.as_deref(), &env, dir)?;

    let mut command = with_profile_defaults(command, &profile);
    let matches = command
        .try_get_matches_from_mut(args)
        .unwrap_or_else(|error| error.exit());
    let config = T::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let mut flags = BTreeMap::new();
    given_flags(&command, &matches, &mut flags);
    Ok(Loaded {
        config,
        profile,
        flags,
    })
}

/// `command` with each flag whose variable the profile sets defaulting to the profile's value.
fn with_profile_defaults(mut command: Command, profile: &Profile) -> Command {
    let defaults: Vec<(String, String)> = command
        .get_arguments()
        .filter_map(|arg| {
            let variable = arg.get_env()?.to_str()?;
            let value = profile.get(variable)?;
            Some((arg.get_id().to_string(), value.value.clone()))
        })
        .collect();
    for (id, value) in defaults {
        command = command.mut_arg(id, |arg| arg.default_value(value));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |sub| with_profile_defaults(sub, profile));
    }
    command
}

/// The variables of the flags given on the command line, with their values.
fn given_flags(command: &Command, matches: &ArgMatches, out: &mut BTreeMap<String, String>) {
    for arg in command.get_arguments() {
        let Some(variable) = arg.get_env().and_then(|v| v.to_str()) else {
            continue;
        };
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        if let Ok(Some(raw)) = matches.try_get_raw(id) {
            let value: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
            out.insert(variable.to_owned(), value.join(","));
        }
    }
    if let Some((name, sub)) = matches.subcommand()
        && let Some(subcommand) = command.find_subcommand(name)
    {
        given_flags(subcommand, sub, out);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;
    use crate::config::SamplerConfig;

    const FILE: &str = r#"# Profiles for the tests.
[profiles.dev]

[profiles.staging.telemetry]
endpoint = "http://collector:4317"
sampler = "parentbased_traceidratio"
sampler_arg = 0.25
resource_attributes = { "deployment.environment.name" = "staging", "team" = "a,b" }
batch = { max_queue_size = 4096 }

[profiles.staging.sophia]
host = "0.0.0.0"
port = 47001

[profiles.staging.hermes]
url = "http://hermes:17000"
"#;

    /// A directory of its own under the temp dir, with `logos.toml` holding `text`.
    fn dir_with(text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "foundry-profile-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join(CONFIG_FILE), text).expect("write logos.toml");
        dir
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    /// The error of `text` loaded as profile `dev`.
    fn error_of(text: &str) -> ProfileError {
        let dir = dir_with(text);
        Profile::load_with(None, no_env, &dir).expect_err(text)
    }

    #[test]
    fn without_a_file_dev_is_the_built_in_defaults() {
        // Arrange
        let empty = std::env::temp_dir();
        let dir = empty.join(format!("foundry-profile-none-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");

        // Act
        let profile = Profile::load_with(None, no_env, &dir).expect("dev needs no file");
        let telemetry = profile
            .telemetry_with("sophia", "1", no_env)
            .expect("valid");

        // Assert
        assert_eq!(profile.name(), DEFAULT_PROFILE);
        assert_eq!(profile.file(), None);
        assert_eq!(
            telemetry,
            TelemetryConfig::from_lookup("sophia", "1", no_env).expect("defaults")
        );
        let error = Profile::load_with(Some("prod"), no_env, &dir).expect_err("prod needs one");
        assert!(matches!(error, ProfileError::NoFile { .. }), "{error}");
    }

    #[test]
    fn a_profile_sets_the_variables_its_keys_stand_for() {
        // Arrange
        let dir = dir_with(FILE);

        // Act
        let profile =
            Profile::load_with(None, env_of(&[(ENV_VARIABLE, "staging")]), &dir).expect("staging");
        let telemetry = profile
            .telemetry_with("sophia", "1", no_env)
            .expect("valid");

        // Assert
        assert_eq!(profile.name(), "staging");
        assert_eq!(
            profile.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(|v| v.line),
            Some(Some(5))
        );
        assert_eq!(
            telemetry.otlp.expect("exporting").endpoint,
            "http://collector:4317"
        );
        assert_eq!(
            telemetry.sampler,
            SamplerConfig::ParentBasedTraceIdRatio(0.25)
        );
        assert_eq!(telemetry.span_queue_size, 4096);
        assert_eq!(
            telemetry.resource_attributes,
            vec![
                (
                    "deployment.environment.name".to_owned(),
                    "staging".to_owned()
                ),
                ("team".to_owned(), "a,b".to_owned()),
            ]
        );
        assert_eq!(
            profile.get("SOPHIA_PORT").map(|v| v.value.as_str()),
            Some("47001")
        );
        assert_eq!(
            profile.get("HERMES_URL").map(|v| v.key.as_str()),
            Some("profiles.staging.hermes.url")
        );
    }

    #[test]
    fn the_environment_wins_over_the_profile_and_dev_changes_nothing() {
        // Arrange
        let dir = dir_with(FILE);
        let staging = Profile::load_with(Some("staging"), no_env, &dir).expect("staging");
        let dev = Profile::load_with(None, no_env, &dir).expect("dev");
        let env = env_of(&[("OTEL_TRACES_SAMPLER", "always_off")]);

        // Act
        let telemetry = staging.telemetry_with("sophia", "1", &env).expect("valid");
        let effective = staging.effective("sophia", &BTreeMap::new(), &env);
        let source = |variable: &str| {
            effective
                .iter()
                .find(|e| e.setting.variable == variable)
                .map(|e| (e.source, e.value.clone()))
        };

        // Assert
        assert_eq!(telemetry.sampler, SamplerConfig::AlwaysOff);
        assert_eq!(
            source("OTEL_TRACES_SAMPLER"),
            Some((Source::Env, Some("always_off".into())))
        );
        assert_eq!(
            source("OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some((Source::Profile, Some("http://collector:4317".into())))
        );
        assert_eq!(
            source("OTEL_SERVICE_NAME"),
            Some((Source::Default, Some("sophia".into())))
        );
        assert_eq!(
            dev.telemetry_with("sophia", "1", no_env).expect("valid"),
            TelemetryConfig::from_lookup("sophia", "1", no_env).expect("defaults")
        );
    }

    #[test]
    fn the_service_name_shown_is_the_one_exported() {
        let profile = Profile::default();
        let cases = [
            (vec![], "sophia", Source::Default),
            (
                vec![(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "a=1,service.name=sophia%2Deu%20x",
                )],
                "sophia-eu x",
                Source::Env,
            ),
            (
                vec![
                    ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored"),
                    ("OTEL_SERVICE_NAME", "sophia-us"),
                ],
                "sophia-us",
                Source::Env,
            ),
        ];
        for (variables, name, source) in cases {
            let env = env_of(&variables);
            let exported = profile.telemetry_with("sophia", "1", &env).expect("valid");
            let shown = profile
                .effective("sophia", &BTreeMap::new(), &env)
                .into_iter()
                .find(|e| e.setting.variable == "OTEL_SERVICE_NAME")
                .expect("listed");
            assert_eq!(exported.service_name, name, "{variables:?}");
            assert_eq!((shown.value.as_deref(), shown.source), (Some(name), source));
        }
    }

    #[test]
    fn secrets_and_credentials_are_redacted() {
        // Arrange
        let profile = Profile::default();
        let env = env_of(&[
            ("SOPHIA_API_TOKEN", "t0ken"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://user:pa55@collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret"),
        ]);

        // Act
        let shown = format!("{:?}", profile.effective("sophia", &BTreeMap::new(), env));

        // Assert
        for secret in ["t0ken", "pa55", "s3cret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("***@collector:4317"), "{shown}");
    }

    #[test]
    fn bad_keys_and_values_name_the_file_the_key_and_the_line() {
        let cases: &[(&str, &str, usize)] = &[
            // An unknown key.
            (
                "[profiles.prod.telemetry]\nendpoint = \"http://c:4317\"\nsamplr = \"always_on\"\n",
                "profiles.prod.telemetry.samplr",
                3,
            ),
            // A value of the wrong type.
            (
                "[profiles.prod.sophia]\n\nport = \"forty\"\n",
                "profiles.prod.sophia.port",
                3,
            ),
            // A value its variable's parser refuses.
            (
                "[profiles.dev]\n[profiles.prod.telemetry]\nsampler = \"sometimes\"\n",
                "profiles.prod.telemetry.sampler",
                3,
            ),
            (
                "[profiles.prod.telemetry]\nprotocol = \"grpc\"\nendpoint = \"localhost:4317\"\n",
                "profiles.prod.telemetry.endpoint",
                3,
            ),
            (
                "[profiles.prod]\napollo = { url = \"nowhere\" }\n",
                "profiles.prod.apollo.url",
                2,
            ),
            // A profile whose name holds a dot is read as that one profile, and checked.
            (
                "[profiles.\"qa.eu\".telemetry]\nendpoint = \"http://c:4317\"\nsampler = \"sometimes\"\n",
                "profiles.qa.eu.telemetry.sampler",
                3,
            ),
            // A table the file does not know.
            ("[profile.prod]\n", "profile", 1),
        ];
        for (text, key, line) in cases {
            // Arrange / Act
            let error = error_of(text);

            // Assert
            let ProfileError::Key {
                file,
                key: found,
                line: found_line,
                ..
            } = &error
            else {
                panic!("{text}: {error}");
            };
            assert!(file.ends_with(CONFIG_FILE), "{error}");
            assert_eq!(found, key, "{error}");
            assert_eq!(*found_line, Some(*line), "{error}");
            let message = error.to_string();
            assert!(
                message.contains(CONFIG_FILE)
                    && message.contains(key)
                    && message.contains(&format!("line {line}")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_file_that_is_not_toml_or_lacks_the_profile_is_an_error() {
        // Arrange
        let broken = dir_with("[profiles.dev\n");
        let without = dir_with(FILE);

        // Act
        let syntax = Profile::load_with(None, no_env, &broken).expect_err("not TOML");
        let missing = Profile::load_with(Some("qa"), no_env, &without).expect_err("no qa");

        // Assert
        assert!(matches!(syntax, ProfileError::File { .. }), "{syntax}");
        assert!(syntax.to_string().contains("line 1"), "{syntax}");
        assert!(
            missing.to_string().contains("no [profiles.qa]")
                && missing.to_string().contains("dev, staging"),
            "{missing}"
        );
    }

    /// A binary's command line, as the services declare theirs.
    #[derive(Debug, Parser)]
    struct Demo {
        #[arg(long, env = "SOPHIA_HOST", default_value = "127.0.0.1")]
        host: String,
        #[arg(long, env = "SOPHIA_PORT", default_value_t = 47000)]
        port: u16,
        #[arg(long, env = "HERMES_URL", default_value = "http://127.0.0.1:17000")]
        hermes_url: String,
    }

    #[test]
    fn a_flag_beats_the_profile_which_beats_the_default() {
        // Arrange
        let dir = dir_with(FILE);
        let args = ["demo", "--env", "staging", "--port", "1234"];

        // Act
        let loaded: Loaded<Demo> = parse_with(args, no_env, &dir).expect("valid");
        let dev: Loaded<Demo> = parse_with(["demo"], no_env, &dir).expect("valid");

        // Assert
        assert_eq!(loaded.profile.name(), "staging");
        assert_eq!(loaded.config.port, 1234, "the flag");
        assert_eq!(loaded.config.host, "0.0.0.0", "the profile");
        assert_eq!(
            loaded.config.hermes_url, "http://hermes:17000",
            "the profile"
        );
        assert_eq!(
            loaded.flags,
            BTreeMap::from([("SOPHIA_PORT".to_owned(), "1234".to_owned())])
        );
        assert_eq!(
            (dev.config.host.as_str(), dev.config.port),
            ("127.0.0.1", 47000),
            "dev: the defaults"
        );
    }
}

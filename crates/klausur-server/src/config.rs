//! Configuration: defaults, then a TOML file, then `KLAUSUR_*` environment variables, then
//! command-line flags. Everything is parsed into a validated [`Config`] at start; an invalid
//! value stops the start with a message naming the key and the problem.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A problem with the configuration, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The file format. Every field is optional; unknown keys are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub media: RawMedia,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub security: RawSecurity,
    #[serde(default)]
    pub identity: RawIdentity,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub web_root: Option<PathBuf>,
    pub danger_plain_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMedia {
    pub listen: Option<String>,
    pub public_ip: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    pub session_hours: Option<i64>,
    pub invitation_hours: Option<i64>,
    pub login_attempts_per_15min: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub ca_key_file: Option<PathBuf>,
    pub guest_credentials_per_15min: Option<u32>,
    pub remote_url: Option<String>,
    pub remote_token_file: Option<PathBuf>,
    pub remote_tls_ca_cert: Option<PathBuf>,
}

/// Overrides from the command line (highest precedence).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub media_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub web_root: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub public_url: Option<String>,
    pub danger_plain_http: bool,
    pub identity_remote_url: Option<String>,
    pub identity_remote_token_file: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub tls: Option<TlsFiles>,
    pub web_root: Option<PathBuf>,
    pub danger_plain_http: bool,
    pub media_listen: SocketAddr,
    /// The address announced to browsers as the media candidate.
    pub media_public_ip: IpAddr,
    pub data_dir: PathBuf,
    pub session_hours: i64,
    pub invitation_hours: i64,
    pub login_attempts_per_15min: u32,
    pub identity: IdentityConfig,
    /// Meeting WebSockets: the server sends a WebSocket ping this often (browsers answer it in
    /// their network stack, also in a background tab whose timers are throttled) ...
    pub ws_keepalive: std::time::Duration,
    /// ... and closes a connection that sent nothing, not even a pong, for this long: a client
    /// whose network went away leaves the meeting within this time. Not in the config file.
    pub ws_idle: std::time::Duration,
}

/// The `[identity]` section: the identity CA that issues end-to-end encryption credentials.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Where credentials are signed.
    pub ca: CaSource,
    /// Guest (lobby) credentials issued per client address in 15 minutes.
    pub guest_credentials_per_15min: u32,
}

/// Who holds the identity CA key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// The server itself: the CA signing key (see [`crate::identity`]) in this file; default
    /// `<data_dir>/identity-ca.key`, created with mode 0600 on the first start if missing.
    KeyFile(PathBuf),
    /// A CA service (`klausur identity-ca serve`) elsewhere; the server holds no CA key.
    Remote(RemoteCaConfig),
}

/// `[identity] remote_url`, `remote_token_file`, `remote_tls_ca_cert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCaConfig {
    /// Base URL of the CA service, without a trailing `/` (e.g. `https://ca.internal:8443`).
    pub url: String,
    /// File holding the bearer token the CA service expects (one line).
    pub token_file: PathBuf,
    /// Extra trusted root certificate (PEM) for the CA service's TLS certificate, e.g. an
    /// internal PKI; the public web roots are trusted as well.
    pub tls_ca_cert: Option<PathBuf>,
}

impl IdentityConfig {
    /// The key file, when the server holds the CA key itself.
    pub fn ca_key_file(&self) -> Option<&Path> {
        match &self.ca {
            CaSource::KeyFile(p) => Some(p),
            CaSource::Remote(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Reads `file` (if given), applies the environment and `overrides`, and validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw = match file {
            Some(path) => parse_file(path)?,
            None => RawConfig::default(),
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::resolve(raw, &env, overrides)
    }

    /// Validates without environment or overrides (for `klausur check-config`).
    pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
        let raw = parse_file(path)?;
        Self::resolve(raw, &|_| None, &Overrides::default())
    }

    fn resolve(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        o: &Overrides,
    ) -> Result<Config, ConfigError> {
        let listen_s = o
            .listen
            .clone()
            .or_else(|| env("KLAUSUR_LISTEN"))
            .or(raw.server.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("{listen_s:?} is not an address with port, like \"127.0.0.1:8080\""),
            )
        })?;
        let media_s = o
            .media_listen
            .clone()
            .or_else(|| env("KLAUSUR_MEDIA_LISTEN"))
            .or(raw.media.listen)
            .unwrap_or_else(|| format!("{}:10000", listen.ip()));
        let media_listen: SocketAddr = media_s.parse().map_err(|_| {
            invalid(
                "media.listen",
                format!("{media_s:?} is not an address with port, like \"127.0.0.1:10000\""),
            )
        })?;
        let media_public_ip = match env("KLAUSUR_MEDIA_PUBLIC_IP").or(raw.media.public_ip) {
            Some(s) => s
                .parse::<IpAddr>()
                .map_err(|_| invalid("media.public_ip", format!("{s:?} is not an IP address")))?,
            None if media_listen.ip().is_unspecified() => {
                return Err(invalid(
                    "media.public_ip",
                    "required when media.listen binds all interfaces (0.0.0.0 or ::): \
                     the address browsers should send media to",
                ))
            }
            None => media_listen.ip(),
        };
        let public_url = o
            .public_url
            .clone()
            .or_else(|| env("KLAUSUR_PUBLIC_URL"))
            .or(raw.server.public_url);
        if let Some(u) = &public_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.ends_with('/') {
                return Err(invalid(
                    "server.public_url",
                    format!("{u:?} must start with https:// (or http://) and not end with /"),
                ));
            }
        }
        let cert = o
            .tls_cert
            .clone()
            .or_else(|| env("KLAUSUR_TLS_CERT").map(PathBuf::from))
            .or(raw.server.tls_cert);
        let key = o
            .tls_key
            .clone()
            .or_else(|| env("KLAUSUR_TLS_KEY").map(PathBuf::from))
            .or(raw.server.tls_key);
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => {
                for (k, p) in [("server.tls_cert", &cert), ("server.tls_key", &key)] {
                    if !p.is_file() {
                        return Err(invalid(k, format!("file {} does not exist", p.display())));
                    }
                }
                Some(TlsFiles { cert, key })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls_key",
                    "missing (server.tls_cert is set)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert",
                    "missing (server.tls_key is set)",
                ))
            }
        };
        let danger_plain_http = o.danger_plain_http
            || env("KLAUSUR_DANGER_PLAIN_HTTP").is_some_and(|v| v == "1" || v == "true")
            || raw.server.danger_plain_http.unwrap_or(false);
        if tls.is_none() && !listen.ip().is_loopback() && !danger_plain_http {
            return Err(invalid(
                "server.listen",
                format!(
                    "{listen} is not a loopback address and no TLS certificate is configured; \
                     set server.tls_cert and server.tls_key (or pass --danger-plain-http if a \
                     TLS proxy in front of klausur terminates TLS)"
                ),
            ));
        }
        let web_root = o
            .web_root
            .clone()
            .or_else(|| env("KLAUSUR_WEB_ROOT").map(PathBuf::from))
            .or(raw.server.web_root);
        if let Some(w) = &web_root {
            if !w.join("index.html").is_file() {
                return Err(invalid(
                    "server.web_root",
                    format!(
                        "{} has no index.html (build the client with `make web`)",
                        w.display()
                    ),
                ));
            }
        }
        let data_dir = o
            .data_dir
            .clone()
            .or_else(|| env("KLAUSUR_DATA_DIR").map(PathBuf::from))
            .or(raw.storage.data_dir)
            .unwrap_or_else(|| PathBuf::from("./klausur-data"));
        let session_hours = raw.security.session_hours.unwrap_or(12);
        if !(1..=24 * 30).contains(&session_hours) {
            return Err(invalid(
                "security.session_hours",
                "must be between 1 and 720",
            ));
        }
        let invitation_hours = raw.security.invitation_hours.unwrap_or(24 * 14);
        if !(1..=24 * 365).contains(&invitation_hours) {
            return Err(invalid(
                "security.invitation_hours",
                "must be between 1 and 8760",
            ));
        }
        let login_attempts_per_15min = raw.security.login_attempts_per_15min.unwrap_or(10);
        if !(1..=1000).contains(&login_attempts_per_15min) {
            return Err(invalid(
                "security.login_attempts_per_15min",
                "must be between 1 and 1000",
            ));
        }
        let ca = resolve_ca_source(&raw.identity, env, o, &data_dir, danger_plain_http)?;
        let guest_credentials_per_15min = raw.identity.guest_credentials_per_15min.unwrap_or(60);
        if !(1..=100_000).contains(&guest_credentials_per_15min) {
            return Err(invalid(
                "identity.guest_credentials_per_15min",
                "must be between 1 and 100000",
            ));
        }
        Ok(Config {
            listen,
            public_url,
            tls,
            web_root,
            danger_plain_http,
            media_listen,
            media_public_ip,
            data_dir,
            session_hours,
            invitation_hours,
            login_attempts_per_15min,
            identity: IdentityConfig {
                ca,
                guest_credentials_per_15min,
            },
            ws_keepalive: std::time::Duration::from_secs(10),
            ws_idle: std::time::Duration::from_secs(30),
        })
    }

    /// Whether cookies get the `Secure` attribute.
    pub fn secure_cookies(&self) -> bool {
        self.tls.is_some()
            || self
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }
}

/// The `[identity]` key source: a local key file (default) or a remote CA service. An explicitly
/// given `ca_key_file` and a `remote_url` exclude each other.
fn resolve_ca_source(
    raw: &RawIdentity,
    env: &dyn Fn(&str) -> Option<String>,
    o: &Overrides,
    data_dir: &Path,
    danger_plain_http: bool,
) -> Result<CaSource, ConfigError> {
    let ca_key_file = env("KLAUSUR_IDENTITY_CA_KEY_FILE")
        .map(PathBuf::from)
        .or_else(|| raw.ca_key_file.clone());
    let remote_url = o
        .identity_remote_url
        .clone()
        .or_else(|| env("KLAUSUR_IDENTITY_REMOTE_URL"))
        .or_else(|| raw.remote_url.clone());
    let token_file = o
        .identity_remote_token_file
        .clone()
        .or_else(|| env("KLAUSUR_IDENTITY_REMOTE_TOKEN_FILE").map(PathBuf::from))
        .or_else(|| raw.remote_token_file.clone());
    let tls_ca_cert = env("KLAUSUR_IDENTITY_REMOTE_TLS_CA_CERT")
        .map(PathBuf::from)
        .or_else(|| raw.remote_tls_ca_cert.clone());
    let Some(url) = remote_url else {
        if token_file.is_some() {
            return Err(invalid(
                "identity.remote_url",
                "missing (identity.remote_token_file is set)",
            ));
        }
        if tls_ca_cert.is_some() {
            return Err(invalid(
                "identity.remote_url",
                "missing (identity.remote_tls_ca_cert is set)",
            ));
        }
        let ca_key_file = ca_key_file.unwrap_or_else(|| data_dir.join("identity-ca.key"));
        if ca_key_file.as_os_str().is_empty() || ca_key_file.is_dir() {
            return Err(invalid(
                "identity.ca_key_file",
                format!("{} is not a file path", ca_key_file.display()),
            ));
        }
        return Ok(CaSource::KeyFile(ca_key_file));
    };
    if let Some(k) = ca_key_file {
        return Err(invalid(
            "identity.remote_url",
            format!(
                "cannot be combined with identity.ca_key_file ({}): with a remote CA the server \
                 holds no CA key; remove one of the two",
                k.display()
            ),
        ));
    }
    let url = validate_remote_url(&url, danger_plain_http)?;
    let token_file = token_file.ok_or_else(|| {
        invalid(
            "identity.remote_token_file",
            "missing (required with identity.remote_url: the file with the CA service's token)",
        )
    })?;
    if !token_file.is_file() {
        return Err(invalid(
            "identity.remote_token_file",
            format!("file {} does not exist", token_file.display()),
        ));
    }
    if let Some(c) = &tls_ca_cert {
        if !c.is_file() {
            return Err(invalid(
                "identity.remote_tls_ca_cert",
                format!("file {} does not exist", c.display()),
            ));
        }
    }
    Ok(CaSource::Remote(RemoteCaConfig {
        url,
        token_file,
        tls_ca_cert,
    }))
}

/// Checks a CA service URL and returns it without a trailing `/`. Plain `http://` is accepted
/// for loopback hosts only, unless `danger_plain_http` is set (the token would cross the
/// network in clear).
fn validate_remote_url(url: &str, danger_plain_http: bool) -> Result<String, ConfigError> {
    const KEY: &str = "identity.remote_url";
    let parsed =
        reqwest::Url::parse(url).map_err(|e| invalid(KEY, format!("{url:?} is not a URL: {e}")))?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => {
            return Err(invalid(
                KEY,
                format!("{url:?} must start with https:// (or http://)"),
            ))
        }
    };
    if parsed.host().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(invalid(
            KEY,
            format!("{url:?} must be a base URL like https://ca.example:8443 (no user, query or fragment)"),
        ));
    }
    let host = parsed.host_str().unwrap_or("");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback && !danger_plain_http {
        return Err(invalid(
            KEY,
            format!(
                "{url:?} uses plain http to a non-loopback host: the token and the credentials \
                 would cross the network in clear; use https:// (or set \
                 server.danger_plain_http if the link is protected otherwise)"
            ),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn parse_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml_text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(toml_text).map_err(|e| ConfigError::Parse {
            path: "t.toml".into(),
            message: e.to_string(),
        })?;
        Config::resolve(raw, &|_| None, &Overrides::default())
    }

    #[test]
    fn defaults_are_loopback_without_tls() {
        let c = resolve("").expect("defaults valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.media_listen, "127.0.0.1:10000".parse().expect("addr"));
        assert!(c.tls.is_none());
        assert!(!c.secure_cookies());
        assert_eq!(
            c.identity.ca,
            CaSource::KeyFile(PathBuf::from("./klausur-data").join("identity-ca.key"))
        );
    }

    #[test]
    fn identity_section() {
        let c = resolve(
            "[identity]\nca_key_file = \"/etc/klausur/ca.key\"\nguest_credentials_per_15min = 5",
        )
        .expect("valid");
        assert_eq!(
            c.identity.ca_key_file(),
            Some(Path::new("/etc/klausur/ca.key"))
        );
        assert_eq!(c.identity.guest_credentials_per_15min, 5);
        let err = resolve("[identity]\nguest_credentials_per_15min = 0").expect_err("zero");
        assert!(
            err.to_string()
                .starts_with("identity.guest_credentials_per_15min"),
            "{err}"
        );
    }

    /// A token file that exists, for the remote CA tests.
    fn token_file() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ca.token");
        std::fs::write(&path, "x".repeat(43)).expect("write");
        let p = path.to_str().expect("utf-8").to_string();
        (dir, p)
    }

    #[test]
    fn remote_ca_from_the_file() {
        let (_dir, token) = token_file();
        let c = resolve(&format!(
            "[identity]\nremote_url = \"https://ca.example:8443/\"\nremote_token_file = {token:?}"
        ))
        .expect("valid");
        assert_eq!(
            c.identity.ca,
            CaSource::Remote(RemoteCaConfig {
                url: "https://ca.example:8443".into(),
                token_file: PathBuf::from(&token),
                tls_ca_cert: None,
            })
        );
        assert_eq!(c.identity.ca_key_file(), None);
        // Plain http is fine on loopback.
        for url in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000/ca",
        ] {
            let c = resolve(&format!(
                "[identity]\nremote_url = {url:?}\nremote_token_file = {token:?}"
            ))
            .expect(url);
            assert!(matches!(c.identity.ca, CaSource::Remote(_)), "{url}");
        }
    }

    #[test]
    fn remote_ca_from_environment_and_flags() {
        let (_dir, token) = token_file();
        let env_token = token.clone();
        let env = move |name: &str| match name {
            "KLAUSUR_IDENTITY_REMOTE_URL" => Some("https://env.example".to_string()),
            "KLAUSUR_IDENTITY_REMOTE_TOKEN_FILE" => Some(env_token.clone()),
            _ => None,
        };
        let c = Config::resolve(RawConfig::default(), &env, &Overrides::default()).expect("env");
        let CaSource::Remote(r) = &c.identity.ca else {
            panic!("not remote: {:?}", c.identity.ca)
        };
        assert_eq!(r.url, "https://env.example");
        // A flag beats the environment.
        let o = Overrides {
            identity_remote_url: Some("https://flag.example".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(RawConfig::default(), &env, &o).expect("flag");
        let CaSource::Remote(r) = &c.identity.ca else {
            panic!("not remote")
        };
        assert_eq!(r.url, "https://flag.example");
        // A key file from the environment plus a remote URL from a flag: refused.
        let env_key = |name: &str| {
            (name == "KLAUSUR_IDENTITY_CA_KEY_FILE").then(|| "/etc/klausur/ca.key".to_string())
        };
        let o = Overrides {
            identity_remote_url: Some("https://flag.example".into()),
            identity_remote_token_file: Some(PathBuf::from(&token)),
            ..Overrides::default()
        };
        let err = Config::resolve(RawConfig::default(), &env_key, &o).expect_err("both");
        assert!(err.to_string().starts_with("identity.remote_url"), "{err}");
    }

    #[test]
    fn remote_ca_errors_name_the_key() {
        let (_dir, token) = token_file();
        let cases = [
            // Mutual exclusion with an explicit key file.
            (
                format!(
                    "[identity]\nca_key_file = \"/etc/klausur/ca.key\"\nremote_url = \"https://ca.example\"\nremote_token_file = {token:?}"
                ),
                "identity.remote_url",
                "identity.ca_key_file",
            ),
            (
                "[identity]\nremote_url = \"https://ca.example\"".to_string(),
                "identity.remote_token_file",
                "missing",
            ),
            (
                "[identity]\nremote_url = \"https://ca.example\"\nremote_token_file = \"/nonexistent/t\"".to_string(),
                "identity.remote_token_file",
                "does not exist",
            ),
            (
                format!("[identity]\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "missing",
            ),
            (
                format!("[identity]\nremote_url = \"ftp://ca.example\"\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "https://",
            ),
            (
                format!("[identity]\nremote_url = \"not a url\"\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "not a URL",
            ),
            (
                format!("[identity]\nremote_url = \"https://ca.example/?x=1\"\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "base URL",
            ),
            (
                format!("[identity]\nremote_url = \"http://192.0.2.7:9000\"\nremote_token_file = {token:?}"),
                "identity.remote_url",
                "in clear",
            ),
            (
                format!("[identity]\nremote_url = \"https://ca.example\"\nremote_token_file = {token:?}\nremote_tls_ca_cert = \"/nonexistent/ca.pem\""),
                "identity.remote_tls_ca_cert",
                "does not exist",
            ),
        ];
        for (text, key, needle) in cases {
            let err = resolve(&text).expect_err(&text).to_string();
            assert!(err.starts_with(key), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
        // Plain http to another host is allowed with the danger switch.
        let c = resolve(&format!(
            "[server]\ndanger_plain_http = true\n[identity]\nremote_url = \"http://192.0.2.7:9000\"\nremote_token_file = {token:?}"
        ))
        .expect("danger switch");
        assert!(matches!(c.identity.ca, CaSource::Remote(_)));
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[media]\nlisten = \"1.2.3.4\"", "media.listen"),
            (
                "[server]\nlisten = \"0.0.0.0:8080\"\n[media]\npublic_ip = \"192.0.2.1\"",
                "server.listen",
            ),
            (
                "[server]\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"",
                "server.tls_cert",
            ),
            ("[server]\ntls_cert = \"/x\"", "server.tls_key"),
            ("[security]\nsession_hours = 0", "security.session_hours"),
            ("[server]\npublic_url = \"ftp://x\"", "server.public_url"),
            ("[media]\nlisten = \"0.0.0.0:10000\"", "media.public_ip"),
        ];
        for (text, key) in cases {
            let err = resolve(text).expect_err(text).to_string();
            assert!(err.starts_with(key), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = resolve("[server]\nlisten_port = 8080").expect_err("unknown key");
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn plain_http_on_public_address_needs_the_danger_switch() {
        let c = resolve("[server]\nlisten = \"0.0.0.0:8080\"\ndanger_plain_http = true\n[media]\npublic_ip = \"192.0.2.1\"")
            .expect("allowed with danger switch");
        assert!(c.danger_plain_http);
        assert_eq!(
            c.media_public_ip,
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
    }
}

//! The configuration file (`klausur_server::config`) from arbitrary text: TOML into the file
//! format (`RawConfig`), and the whole check `klausur check-config` runs (`Config::check_file`:
//! parse, then validate every key without environment or flags).
//!
//! `check_file` takes a path (validation resolves the named files, so no path-free entry point
//! exists): the text is written to one file per process, in `/dev/shm` where it exists. That
//! costs a write and a read per input; validation is the part worth reaching.
//!
//! Invariants: nothing panics; both ways agree on whether the text is a config file (TOML with
//! known keys only); a refusal names its key; an accepted config keeps the documented ranges.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use klausur_server::config::{Config, ConfigError, RawConfig};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("klausur-fuzz-config-{}.toml", std::process::id()))
    })
}

fn check_accepted(c: &Config) {
    assert!((1..=24 * 30).contains(&c.session_hours));
    assert!((1..=24 * 365).contains(&c.invitation_hours));
    assert!((1..=3650).contains(&c.audit_retention_days));
    assert!((1..=3650).contains(&c.ended_meetings_days));
    if let Some(u) = &c.public_url {
        assert!(u.starts_with("https://") || u.starts_with("http://"));
        assert!(!u.ends_with('/'));
    }
    let ports = &c.dialin.rtp_ports;
    assert!(
        *ports.start() >= 1024 && ports.start() < ports.end(),
        "{ports:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // read_to_string refuses it before TOML sees it
    };
    let raw = toml::from_str::<RawConfig>(text);

    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    match Config::check_file(path) {
        Ok(c) => {
            assert!(raw.is_ok(), "accepted, yet not a config file: {raw:?}");
            check_accepted(&c);
        }
        Err(ConfigError::Parse { message, .. }) => {
            assert!(raw.is_err(), "parses as RawConfig, yet refused: {message}");
            assert!(!message.is_empty());
        }
        Err(ConfigError::Invalid { key, message }) => {
            assert!(raw.is_ok(), "refused by key, yet not a config file");
            assert!(!key.is_empty() && !message.is_empty());
        }
        Err(ConfigError::Read { source, .. }) => panic!("scratch file unreadable: {source}"),
    }
});

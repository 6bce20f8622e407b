//! TURN credentials for browsers on networks that let nothing but TLS (or TCP) to port 443 out:
//! the server hands every participant short-lived credentials for the operator's TURN server
//! (coturn with `use-auth-secret`) in `joined`, by the TURN REST API scheme
//! (draft-uberti-behave-turn-rest-00): username `<expiry unix time>:<participant id>`,
//! password `base64(HMAC-SHA1(shared secret, username))`. The TURN server checks the password
//! with the same secret and refuses the username once its time has passed; nothing is stored.
//!
//! Pure: the time is an argument.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use klausur_proto::IceServer;
use sha1::Sha1;

/// The `[turn]` section, validated.
#[derive(Clone)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URLs handed to browsers as one ICE server.
    pub urls: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`).
    pub secret: Vec<u8>,
    /// How long handed-out credentials are valid.
    pub credential_lifetime: std::time::Duration,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("credential_lifetime", &self.credential_lifetime)
            .finish_non_exhaustive()
    }
}

impl TurnConfig {
    /// The ICE server entry for participant `id`, valid until `now_unix` + the lifetime.
    pub fn credentials(&self, id: &str, now_unix: i64) -> IceServer {
        let expiry = now_unix.saturating_add(self.credential_lifetime.as_secs() as i64);
        let username = format!("{expiry}:{id}");
        IceServer {
            urls: self.urls.clone(),
            credential: password(&self.secret, &username),
            username,
        }
    }
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn password(secret: &[u8], username: &str) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts every key length"),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks one `turn:`/`turns:` URL (RFC 7065): the scheme, a host, an optional port and at
/// most a `?transport=udp|tcp` query. Returns why not.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("turns:")
        .or_else(|| url.strip_prefix("turn:"))
        .ok_or_else(|| format!("{url:?} must start with turn: or turns:"))?;
    if url.len() > 256 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} is not a TURN URL"));
    }
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    if let Some(q) = query {
        if q != "transport=udp" && q != "transport=tcp" {
            return Err(format!(
                "{url:?}: the only query allowed is ?transport=udp or ?transport=tcp"
            ));
        }
    }
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        if !after.is_empty() {
            port(url, after.strip_prefix(':').unwrap_or("x"))?;
        }
        h
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => {
                port(url, p)?;
                h
            }
            None => hostport,
        }
    };
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

fn port(url: &str, p: &str) -> Result<(), String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!("{url:?}: {p:?} is not a port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_the_turn_rest_api_hmac() {
        // The value computed independently with
        // `printf %s '1700000000:p-1' | openssl dgst -sha1 -hmac 'north-wind' -binary | base64`.
        assert_eq!(
            password(b"north-wind", "1700000000:p-1"),
            "XJQZ7ocMn48xSyxO1gZWuwIUj0M="
        );
        let t = TurnConfig {
            urls: vec!["turns:turn.example:443?transport=tcp".into()],
            secret: b"north-wind".to_vec(),
            credential_lifetime: std::time::Duration::from_secs(3600),
        };
        let s = t.credentials("p-1", 1_699_996_400);
        assert_eq!(s.username, "1700000000:p-1");
        assert_eq!(s.credential, "XJQZ7ocMn48xSyxO1gZWuwIUj0M=");
        assert_eq!(s.urls, t.urls);
        assert!(!format!("{t:?}").contains("north-wind"));
    }

    #[test]
    fn urls_are_checked() {
        for ok in [
            "turn:turn.example",
            "turns:turn.example:443?transport=tcp",
            "turn:192.0.2.1:3478?transport=udp",
            "turn:[2001:db8::1]:3478",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "stun:turn.example",
            "https://turn.example",
            "turn:",
            "turn::443",
            "turn:turn.example:0",
            "turn:turn.example:99999",
            "turn:turn.example?transport=tls",
            "turn:user@turn.example",
            "turn:turn example",
            "turn:[2001:db8::1",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}

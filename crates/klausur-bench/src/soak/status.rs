//! Reading the server's `GET /api/status` as an administrator: one `POST /api/login` for a
//! session cookie, then plain GET requests (they need no CSRF token).

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use super::verdict::Status;

/// The session cookie's name (`klausur_server::api::SESSION_COOKIE`).
const SESSION_COOKIE: &str = "klausur_session";
/// Each request's bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A signed-in administrator's view of `/api/status`.
pub struct StatusClient {
    http: reqwest::Client,
    url: String,
    cookie: String,
}

/// `name=value` of the session cookie among `Set-Cookie` header values.
pub fn session_cookie<'a>(set_cookie: impl IntoIterator<Item = &'a str>) -> Option<String> {
    set_cookie.into_iter().find_map(|h| {
        let pair = h.split(';').next()?.trim();
        let (name, value) = pair.split_once('=')?;
        (name == SESSION_COOKIE && !value.is_empty()).then(|| pair.to_string())
    })
}

impl StatusClient {
    /// Signs in at `base` (`http://host:port`).
    pub async fn login(base: &str, username: &str, password: &str) -> anyhow::Result<StatusClient> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let resp = http
            .post(format!("{base}/api/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .context("POST /api/login")?;
        let code = resp.status();
        if !code.is_success() {
            bail!(
                "POST /api/login: {code}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        let cookie = session_cookie(
            resp.headers()
                .get_all(reqwest::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
        .context("POST /api/login: no session cookie")?;
        Ok(StatusClient {
            http,
            url: format!("{base}/api/status"),
            cookie,
        })
    }

    /// One `GET /api/status`.
    pub async fn status(&self) -> anyhow::Result<Status> {
        let resp = self
            .http
            .get(&self.url)
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .context("GET /api/status")?;
        let code = resp.status();
        if !code.is_success() {
            bail!(
                "GET /api/status: {code}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        resp.json().await.context("GET /api/status: not the status")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let headers = [
            "other=1; Path=/",
            "klausur_session=abc123; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200",
        ];
        assert_eq!(
            session_cookie(headers).as_deref(),
            Some("klausur_session=abc123")
        );
        // Cleared (logout) or missing: none.
        assert_eq!(session_cookie(["klausur_session=; Max-Age=0"]), None);
        assert_eq!(session_cookie(["klausur_sessionx=abc"]), None);
        assert_eq!(session_cookie([]), None);
    }
}

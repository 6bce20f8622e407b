//! A strict Content-Security-Policy (issue 19, "HTTP: a strict Content-Security-Policy without
//! unsafe-inline, ... frame-ancestors none"): on every kind of answer (the client's page, its
//! routes, its files, the API, errors) the policy allows nothing inline, no `eval` beyond
//! WebAssembly, no other origin, no framing; with `public_url` the WebSocket origin is named.
//! The client's own page (web/index.html) has nothing inline that the policy would block.
//!
//! Negative control: the checker refuses the policy served before (with `'unsafe-inline'`
//! styles), so a weaker policy cannot pass unnoticed.

use std::collections::HashMap;

use crate::common::TestServer;

/// The directives of a policy: name → source expressions.
fn directives(csp: &str) -> HashMap<String, Vec<String>> {
    csp.split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_string).collect()))
        })
        .collect()
}

/// What makes `csp` weaker than the strict policy: one line per problem, empty if none.
fn weaknesses(csp: &str) -> Vec<String> {
    let d = directives(csp);
    let mut out = Vec::new();
    let exact = |name: &str, want: &[&str], out: &mut Vec<String>| match d.get(name) {
        Some(got) if got.iter().map(String::as_str).eq(want.iter().copied()) => {}
        other => out.push(format!("{name} is {other:?}, want {want:?}")),
    };
    exact("default-src", &["'self'"], &mut out);
    exact("script-src", &["'self'", "'wasm-unsafe-eval'"], &mut out);
    exact("style-src", &["'self'"], &mut out);
    exact("worker-src", &["'self'"], &mut out);
    exact("img-src", &["'self'"], &mut out);
    exact("object-src", &["'none'"], &mut out);
    exact("frame-ancestors", &["'none'"], &mut out);
    exact("base-uri", &["'none'"], &mut out);
    exact("form-action", &["'self'"], &mut out);
    for (name, sources) in &d {
        for s in sources {
            // Scheme sources (`data:`, `blob:`, `https:`, `wss:`, ...) allow any host.
            let weak = matches!(
                s.as_str(),
                "'unsafe-inline'" | "'unsafe-eval'" | "'unsafe-hashes'"
            ) || s.ends_with(':')
                || s.contains('*');
            if weak {
                out.push(format!("{name} allows {s}"));
            }
        }
    }
    match d.get("connect-src") {
        Some(c) if c.first().map(String::as_str) == Some("'self'") => {
            for s in &c[1..] {
                if !(s.starts_with("ws://") || s.starts_with("wss://")) {
                    out.push(format!("connect-src allows {s}"));
                }
            }
        }
        other => out.push(format!("connect-src is {other:?}")),
    }
    out
}

fn csp_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A web root with an index page and one script, as `npm run build` makes.
fn web_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("assets")).expect("dir");
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><html><head><script type=\"module\" src=\"/assets/app.js\"></script>\
         </head><body><div id=\"root\"></div></body></html>",
    )
    .expect("index");
    std::fs::write(dir.path().join("assets/app.js"), "export {};").expect("js");
    dir
}

#[test]
fn the_checker_refuses_the_old_policy() {
    let old = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
        style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob:; \
        connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; \
        form-action 'self'";
    let found = weaknesses(old);
    assert!(
        found.iter().any(|w| w.contains("'unsafe-inline'")),
        "{found:?}"
    );
    assert!(!weaknesses("frame-ancestors 'self'").is_empty());
}

#[tokio::test]
async fn every_answer_carries_the_strict_policy() {
    let root = web_root();
    let path = root.path().to_path_buf();
    let srv = TestServer::start_with(move |c| c.web_root = Some(path)).await;
    let http = srv.anonymous();
    for (path, status) in [
        ("/", 200),
        ("/m/some-meeting", 200),
        ("/j/some-token", 200),
        ("/assets/app.js", 200),
        ("/api/session", 401),
        ("/api/no-such-route", 404),
    ] {
        let resp = http
            .get(format!("{}{path}", srv.base))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), status, "{path}");
        let csp = csp_of(&resp);
        assert_eq!(weaknesses(&csp), Vec::<String>::new(), "{path}: {csp}");
        assert_eq!(
            directives(&csp).get("connect-src").map(Vec::len),
            Some(1),
            "without public_url, only 'self': {csp}"
        );
    }
}

#[tokio::test]
async fn the_public_websocket_origin_may_be_connected_to() {
    let srv = TestServer::start_with(|c| {
        c.public_url = Some("https://Konferenz.Stadt.example:8443".into())
    })
    .await;
    let resp = srv
        .anonymous()
        .get(format!("{}/api/session", srv.base))
        .send()
        .await
        .expect("get");
    let csp = csp_of(&resp);
    assert_eq!(weaknesses(&csp), Vec::<String>::new(), "{csp}");
    assert_eq!(
        directives(&csp).get("connect-src"),
        Some(&vec![
            "'self'".to_string(),
            "wss://konferenz.stadt.example:8443".to_string()
        ]),
        "{csp}"
    );
}

#[test]
fn the_client_page_has_nothing_inline() {
    let index =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/index.html"))
            .expect("web/index.html");
    let lower = index.to_ascii_lowercase();
    assert!(!lower.contains("<style"), "an inline style element");
    assert!(!lower.contains(" style="), "a style attribute");
    assert!(
        !lower.contains("javascript:"),
        "a javascript: URL in {index}"
    );
    // Every script element loads a file and holds no code.
    for part in lower.split("<script").skip(1) {
        let (tag, rest) = part.split_once('>').expect("a closed tag");
        assert!(tag.contains(" src="), "an inline script: <script{tag}>");
        assert!(
            rest.trim_start().starts_with("</script>"),
            "code in a script element: {rest}"
        );
    }
    // No event handler attributes (onload=, onclick=, ...).
    let handler = lower
        .split(|c: char| c.is_whitespace())
        .find(|w| w.starts_with("on") && w.contains('='));
    assert_eq!(handler, None, "an inline event handler");
}

//! Security headers on every answer (issue 19, "HTTP"): the Content-Security-Policy with
//! `frame-ancestors 'none'`, no framing, `nosniff`, no referrer; `Cache-Control: no-store` on
//! every API answer, errors included; and no HSTS on plain HTTP (the TLS side is in cli.rs,
//! `serves_https_with_rustls_and_secure_cookies`).

mod common;

use common::TestServer;
use klausur_store::Role;

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn every_answer_has_the_security_headers_and_api_answers_are_not_cached() {
    let srv = TestServer::start().await;
    srv.user("olga", Role::Staff).await;
    let (olga, _) = srv.login("olga").await;
    let answers = [
        olga.get(format!("{}/api/meetings", srv.base))
            .send()
            .await
            .expect("meetings"),
        srv.anonymous()
            .get(format!("{}/api/meetings", srv.base))
            .send()
            .await
            .expect("anonymous"),
        srv.anonymous()
            .get(format!("{}/api/no-such-route", srv.base))
            .send()
            .await
            .expect("unknown"),
    ];
    assert_eq!(answers[0].status(), 200);
    assert_eq!(answers[1].status(), 401);
    assert_eq!(answers[2].status(), 404);
    for resp in &answers {
        let url = resp.url().to_string();
        assert_eq!(
            header(resp, "cache-control").as_deref(),
            Some("no-store"),
            "{url}"
        );
        let csp = header(resp, "content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{url}: {csp}");
        assert!(csp.contains("default-src 'self'"), "{url}: {csp}");
        assert_eq!(header(resp, "x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(
            header(resp, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            header(resp, "referrer-policy").as_deref(),
            Some("no-referrer")
        );
        assert_eq!(
            header(resp, "cross-origin-opener-policy").as_deref(),
            Some("same-origin")
        );
        assert_eq!(
            header(resp, "cross-origin-embedder-policy").as_deref(),
            Some("require-corp")
        );
        assert_eq!(
            header(resp, "strict-transport-security"),
            None,
            "no HSTS over plain HTTP"
        );
    }
}

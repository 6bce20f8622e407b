//! Security headers on every answer (issue 19, "HTTP"): the Content-Security-Policy with
//! `frame-ancestors 'none'`, no framing, `nosniff`, no referrer; `Cache-Control: no-store` on
//! every API answer, errors included; and no HSTS on plain HTTP (the TLS side is in cli.rs,
//! `serves_https_with_rustls_and_secure_cookies`). The embedder policy only when asked for.

use klausur_store::Role;

use crate::common::TestServer;

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
        // Not cross-origin isolated by default: Firefox opens no WebRTC connection through an
        // HTTP proxy from a page with an embedder policy (web/e2e/firefox.spec.ts).
        assert_eq!(header(resp, "cross-origin-embedder-policy"), None, "{url}");
        assert_eq!(
            header(resp, "strict-transport-security"),
            None,
            "no HSTS over plain HTTP"
        );
    }
}

#[tokio::test]
async fn cross_origin_isolation_only_when_configured() {
    for (isolated, expected) in [(false, None), (true, Some("require-corp"))] {
        let srv = TestServer::start_with(|c| c.cross_origin_isolated = isolated).await;
        let resp = srv
            .anonymous()
            .get(format!("{}/api/meetings", srv.base))
            .send()
            .await
            .expect("answer");
        assert_eq!(
            header(&resp, "cross-origin-embedder-policy").as_deref(),
            expected,
            "cross_origin_isolated = {isolated}"
        );
        assert_eq!(
            header(&resp, "cross-origin-opener-policy").as_deref(),
            Some("same-origin")
        );
    }
}

/// A request for the client's files: path, `Accept-Encoding`, the `Content-Encoding` expected
/// and the body expected.
type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// The built client (issue 21, slow links): a browser that accepts Brotli or gzip gets the
/// compressed copy the build wrote beside a file, one that does not gets the file; the hashed
/// assets are cached for a year, index.html (the client's routes) is revalidated, and a missing
/// asset is a 404 rather than index.html.
#[tokio::test]
async fn the_client_is_sent_compressed_and_only_hashed_assets_are_cached() {
    let root = tempfile::tempdir().expect("web root");
    let assets = root.path().join("assets");
    std::fs::create_dir(&assets).expect("assets");
    let index = "<!doctype html><title>klausur</title>".repeat(40);
    std::fs::write(root.path().join("index.html"), &index).expect("index");
    std::fs::write(root.path().join("index.html.br"), b"index in brotli").expect("index.br");
    std::fs::write(assets.join("app-1a2b3c.js"), b"console.log('plain');").expect("js");
    std::fs::write(assets.join("app-1a2b3c.js.br"), b"brotli bytes").expect("js.br");
    std::fs::write(assets.join("app-1a2b3c.js.gz"), b"gzip bytes").expect("js.gz");
    std::fs::write(assets.join("core-9f8e.wasm"), b"\0asm plain").expect("wasm");
    let dir = root.path().to_path_buf();
    let srv = TestServer::start_with(move |c| c.web_root = Some(dir)).await;
    let client = srv.anonymous();
    let get = |path: &str, accept: Option<&str>| {
        let mut req = client.get(format!("{}{path}", srv.base));
        if let Some(a) = accept {
            req = req.header("accept-encoding", a);
        }
        req.send()
    };

    let cases: [Case; 7] = [
        (
            "/assets/app-1a2b3c.js",
            Some("gzip, deflate, br, zstd"),
            Some("br"),
            b"brotli bytes",
        ),
        (
            "/assets/app-1a2b3c.js",
            Some("gzip"),
            Some("gzip"),
            b"gzip bytes",
        ),
        (
            "/assets/app-1a2b3c.js",
            None,
            None,
            b"console.log('plain');",
        ),
        (
            "/assets/app-1a2b3c.js",
            Some("identity"),
            None,
            b"console.log('plain');",
        ),
        // No compressed copy: the file as it is.
        (
            "/assets/core-9f8e.wasm",
            Some("br, gzip"),
            None,
            b"\0asm plain",
        ),
        ("/meetings/abc", Some("br"), Some("br"), b"index in brotli"),
        ("/meetings/abc", None, None, index.as_bytes()),
    ];
    for (path, accept, encoding, body) in cases {
        let resp = get(path, accept).await.expect(path);
        assert_eq!(resp.status(), 200, "{path} {accept:?}");
        assert_eq!(
            header(&resp, "content-encoding").as_deref(),
            encoding,
            "{path} {accept:?}"
        );
        let cache = header(&resp, "cache-control");
        if path.starts_with("/assets/") {
            assert_eq!(
                cache.as_deref(),
                Some("public, max-age=31536000, immutable"),
                "{path}"
            );
        } else {
            assert_eq!(cache.as_deref(), Some("no-cache"), "{path}");
        }
        // Compressed or not, a shared cache must keep the variants apart.
        let vary = header(&resp, "vary").unwrap_or_default();
        assert!(
            vary.to_ascii_lowercase().contains("accept-encoding"),
            "{path}: vary {vary:?}"
        );
        assert!(header(&resp, "content-security-policy").is_some(), "{path}");
        assert_eq!(
            &resp.bytes().await.expect("body")[..],
            body,
            "{path} {accept:?}"
        );
    }

    // An asset of an older build (after an upgrade) is not there: a 404 that no cache keeps,
    // not index.html under a script's name.
    let gone = get("/assets/app-0ld0ld.js", Some("br"))
        .await
        .expect("gone");
    assert_eq!(gone.status(), 404);
    assert_eq!(header(&gone, "cache-control").as_deref(), Some("no-cache"));
    // The root and the API keep their policies.
    let root_page = get("/", None).await.expect("root");
    assert_eq!(root_page.status(), 200);
    assert_eq!(
        header(&root_page, "cache-control").as_deref(),
        Some("no-cache")
    );
    let api = get("/api/meetings", Some("br")).await.expect("api");
    assert_eq!(header(&api, "cache-control").as_deref(), Some("no-store"));
}

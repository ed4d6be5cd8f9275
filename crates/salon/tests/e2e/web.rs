//! R20: the web client is served from the binary at `/` with strict security headers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// A plain HTTP/1.1 GET; returns the status line, the headers (lower-case names) and body.
async fn get(server: &TestServer, path: &str) -> (String, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(server.http).await.expect("connect http");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.http
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .expect("read");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

#[tokio::test]
async fn the_web_client_is_served_with_security_headers() {
    let server = TestServer::start().await;

    let (status, headers, body) = get(&server, "/").await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(body.contains(r#"<script type="module" src="/js/main.js"></script>"#));
    let csp = header(&headers, "content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("style-src 'self';"), "{csp}");
    assert!(
        csp.contains(&format!("connect-src 'self' ws://{}", server.http)),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&headers, "x-frame-options"), "DENY");
    assert_eq!(header(&headers, "referrer-policy"), "no-referrer");

    for (path, kind) in [
        ("/js/main.js", "text/javascript; charset=utf-8"),
        ("/js/dom.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/icon.svg", "image/svg+xml"),
        ("/icons/smile.svg", "image/svg+xml"),
    ] {
        let (status, headers, body) = get(&server, path).await;
        assert!(status.contains(" 200 "), "{path}: {status}");
        assert_eq!(header(&headers, "content-type"), kind, "{path}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert!(!body.is_empty());
    }

    // Nothing else is served; the WebSocket and health check are still there.
    let (status, _, _) = get(&server, "/../salon.db").await;
    assert!(status.contains(" 404 "), "{status}");
    for path in [
        "/app.js",
        "/js/nope.js",
        "/js/../index.html",
        "/icons/nope.svg",
        "/icons/../app.css",
    ] {
        let (status, _, _) = get(&server, path).await;
        assert!(status.contains(" 404 "), "{path}: {status}");
    }
    let (status, _, body) = get(&server, "/healthz").await;
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, "ok");
    server.ws_client().await;
}

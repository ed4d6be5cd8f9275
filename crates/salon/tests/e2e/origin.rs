//! Origin checks on the WebSocket (issue 12): only the server's own origin, the ones in
//! `allowed_origins`, and clients sending no Origin may open `/ws`. Over plain HTTP, only
//! the host names the server answers to (IP addresses, localhost, `allowed_hosts`) are
//! served at all, against DNS rebinding.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Sends a WebSocket handshake with `origin` (if any) and returns the status line.
async fn handshake(server: &TestServer, host: &str, origin: Option<&str>) -> String {
    let mut stream = TcpStream::connect(server.http).await.expect("connect");
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_websocket_refuses_other_origins_and_accepts_its_own_the_listed_and_none() {
    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["https://chat.example.com".into()];
    })
    .await;
    let host = server.http.to_string();

    let refused = handshake(&server, &host, Some("http://evil.example")).await;
    assert!(refused.contains(" 403 "), "{refused}");
    // The same host over the other scheme is another origin.
    let refused = handshake(&server, &host, Some(&format!("https://{host}"))).await;
    assert!(refused.contains(" 403 "), "{refused}");
    let refused = handshake(&server, &host, Some("null")).await;
    assert!(refused.contains(" 403 "), "{refused}");

    let own = handshake(&server, &host, Some(&format!("http://{host}"))).await;
    assert!(own.contains(" 101 "), "{own}");
    let listed = handshake(&server, &host, Some("https://CHAT.example.com:443")).await;
    assert!(listed.contains(" 101 "), "{listed}");
    let none = handshake(&server, &host, None).await;
    assert!(none.contains(" 101 "), "{none}");
}

#[tokio::test]
async fn a_name_pointed_at_the_server_by_someone_else_is_not_served_over_plain_http() {
    let server = TestServer::start_with(|c| {
        c.allowed_hosts = vec!["chat.example.internal".into()];
    })
    .await;
    let port = server.http.port();
    // A page of attacker.example whose name now points at this server (DNS rebinding):
    // its requests name attacker.example, and so does its origin, which would otherwise
    // be "the server's own".
    let rebound = format!("attacker.example:{port}");
    let refused = handshake(&server, &rebound, Some(&format!("http://{rebound}"))).await;
    assert!(refused.contains(" 421 "), "{refused}");
    for path in ["/", "/api/files/1", "/js/app.js"] {
        let (status, body) = http_get_as(&server, &rebound, path).await;
        assert_eq!(status, 421, "{path}: {body}");
    }
    // The names the server answers to: its IP address, localhost, the listed names.
    for host in [
        server.http.to_string(),
        format!("localhost:{port}"),
        format!("CHAT.example.internal:{port}"),
        format!("chat.example.internal.:{port}"),
    ] {
        let (status, _) = http_get_as(&server, &host, "/").await;
        assert_eq!(status, 200, "{host}");
    }
    let own = format!("chat.example.internal:{port}");
    let opened = handshake(&server, &own, Some(&format!("http://{own}"))).await;
    assert!(opened.contains(" 101 "), "{opened}");
    // Probes answer any name.
    assert_eq!(http_get_as(&server, &rebound, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_request_naming_no_host_or_two_is_refused() {
    let server = TestServer::start().await;
    // None, or two (which a proxy and the server could read differently).
    for head in [
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
            server.http
        ),
    ] {
        let mut stream = TcpStream::connect(server.http).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("send");
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut got))
            .await
            .expect("an answer")
            .expect("read");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 400"), "{head:?}: {text}");
    }
    // One is served.
    assert_eq!(http_get(&server, "/").await.0, 200);
}

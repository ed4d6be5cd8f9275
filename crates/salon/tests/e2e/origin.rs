//! Origin checks on the WebSocket (issue 12): only the server's own origin, the ones in
//! `allowed_origins`, and clients sending no Origin may open `/ws`.

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

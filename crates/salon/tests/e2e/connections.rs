//! Connections and transports under abuse (issue 9): per-address and server connection
//! limits on one accept path for TCP and HTTP, the login and idle timeouts with their
//! keep-alive probe, HTTP header and WebSocket limits, and the line protocol's edges.
//! Every timeout is configured small here; nothing asserts how long anything took.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use salon_client::{Client, ClientError};
use salon_proto::CloseCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// A TCP connection from a chosen loopback source address (all of 127/8 is loopback).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

/// The native protocol by hand, one JSON value per line.
struct Raw {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Raw {
    fn new(stream: TcpStream) -> Raw {
        let (read, write) = stream.into_split();
        Raw {
            lines: BufReader::new(read).lines(),
            write,
        }
    }

    async fn connect(to: SocketAddr) -> Raw {
        Raw::new(TcpStream::connect(to).await.unwrap())
    }

    /// The next frame, or `None` at the end of the connection.
    async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a frame or the end of the connection in time")
            .ok()??;
        Some(serde_json::from_str(&line).expect("a JSON frame"))
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.write.write_all(bytes.as_ref()).await.unwrap();
    }

    async fn login(&mut self, name: &str) {
        self.send(format!(
            "{{\"id\":1,\"cmd\":\"login\",\"args\":{{\"login\":\"{name}\",\"password\":\"{PASSWORD}\"}}}}\n"
        ))
        .await;
        loop {
            let frame = self.next().await.expect("login reply");
            if frame["re"] == 1 {
                assert_eq!(frame["type"], "ok", "{frame}");
                return;
            }
        }
    }

    /// Reads until a `closing` frame and then the end; returns the code and message.
    async fn closing(&mut self) -> (String, String) {
        loop {
            let frame = self.next().await.expect("a closing frame before the end");
            if frame["type"] == "closing" {
                assert!(self.next().await.is_none(), "the connection ends after it");
                return (
                    frame["code"].as_str().unwrap().to_owned(),
                    frame["message"].as_str().unwrap().to_owned(),
                );
            }
        }
    }
}

/// Reads the first frame: `Ok` for a hello, `Err((code, message))` for a refusal.
async fn greeting(raw: &mut Raw) -> Result<(), (String, String)> {
    let first = raw.next().await.expect("a first frame");
    match first["type"].as_str() {
        Some("hello") => Ok(()),
        Some("closing") => Err((
            first["code"].as_str().unwrap().to_owned(),
            first["message"].as_str().unwrap().to_owned(),
        )),
        _ => panic!("unexpected first frame {first}"),
    }
}

/// Opens `n` connections from `source` that all get their hello (retrying a refusal
/// while the server still counts a connection that was just closed).
async fn hold(n: usize, source: [u8; 4], to: SocketAddr) -> Vec<Raw> {
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while held.len() < n {
        let mut raw = Raw::new(connect_from(source, to).await);
        match greeting(&mut raw).await {
            Ok(()) => held.push(raw),
            Err(refusal) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "connection {} of {n} refused: {refusal:?}",
                    held.len() + 1
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    held
}

/// A plain HTTP GET from `source`; the whole response as text.
async fn http_get(source: [u8; 4], to: SocketAddr, path: &str) -> String {
    let mut stream = connect_from(source, to).await;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("a response in time")
        .expect("read the response");
    String::from_utf8_lossy(&raw).into_owned()
}

/// An HTTP connection from `source` that has been answered once and stays open
/// (keep-alive): certainly accepted and counted by the server.
async fn http_keepalive(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let mut stream = connect_from(source, to).await;
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !seen.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200 "));
    stream
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_address = 4).await;
    server.register("alice").await;
    // Two TCP and two HTTP connections from 127.0.0.1: its four places (HTTP counts from
    // the accept, before any request).
    let mut held = hold(2, [127, 0, 0, 1], server.tcp).await;
    let _http_a = http_keepalive([127, 0, 0, 1], server.http).await;
    let _http_b = http_keepalive([127, 0, 0, 1], server.http).await;
    let mut refused = Raw::new(connect_from([127, 0, 0, 1], server.tcp).await);
    let (code, message) = greeting(&mut refused)
        .await
        .expect_err("a fifth is refused");
    assert_eq!(code, "too_many_connections");
    assert!(
        message.contains("your address") && message.contains('4'),
        "{message}"
    );
    let response = http_get([127, 0, 0, 1], server.http, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
    assert!(
        response.contains("too many connections from your address"),
        "{response}"
    );

    // Someone else, from another address, still connects and logs in, on both listeners.
    let stream = connect_from([127, 0, 0, 2], server.tcp).await;
    let bob = Client::connect_stream(stream)
        .await
        .expect("hello from 127.0.0.2");
    bob.register(registration("bob")).await.unwrap();
    bob.login("bob", PASSWORD)
        .await
        .expect("login from 127.0.0.2");
    let response = http_get([127, 0, 0, 2], server.http, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");

    // A place freed is a place again.
    drop(held.pop());
    let again = hold(1, [127, 0, 0, 1], server.tcp).await;
    assert_eq!(again.len(), 1);
}

#[tokio::test]
async fn the_server_limit_says_it_is_the_servers() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 2).await;
    let _held = hold(2, [127, 0, 0, 1], server.tcp).await;
    // Another address does not help: the server itself is full.
    let mut refused = Raw::new(connect_from([127, 0, 0, 3], server.tcp).await);
    let (code, message) = greeting(&mut refused).await.expect_err("refused");
    assert_eq!(code, "too_many_connections");
    assert!(message.contains("the server"), "{message}");
    let response = http_get([127, 0, 0, 3], server.http, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
}

#[tokio::test]
async fn an_exempt_address_is_not_limited_per_address() {
    let server = TestServer::start_with(|c| {
        c.limits.max_connections_per_address = 2;
        c.limits.connection_limit_exempt = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let held = hold(6, [127, 0, 0, 1], server.tcp).await;
    assert_eq!(held.len(), 6);
    // Other addresses still are.
    let _two = hold(2, [127, 0, 0, 4], server.tcp).await;
    let mut third = Raw::new(connect_from([127, 0, 0, 4], server.tcp).await);
    assert!(greeting(&mut third).await.is_err());
}

#[tokio::test]
async fn a_connection_that_does_not_log_in_is_closed() {
    let server = TestServer::start_with(|c| c.limits.login_timeout_ms = 300).await;
    let mut silent = Raw::connect(server.tcp).await;
    greeting(&mut silent).await.unwrap();
    let (code, message) = silent.closing().await;
    assert_eq!(code, "login_timeout");
    assert!(message.contains("log in"), "{message}");
    // Requests that are not a login do not count.
    let mut busy = server.client().await;
    for _ in 0..3 {
        busy.ping().await.unwrap();
    }
    assert_eq!(expect_closing(&mut busy).await.0, CloseCode::LoginTimeout);
    // Over WebSocket too.
    let mut ws = server.ws_client().await;
    assert_eq!(expect_closing(&mut ws).await.0, CloseCode::LoginTimeout);
    // Logged in in time, the session stays beyond the login timeout.
    let (alice, _) = server.user("alice").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    alice
        .ping()
        .await
        .expect("a logged-in session is not closed");
}

#[tokio::test]
async fn a_silent_session_is_probed_then_closed_while_a_live_client_stays() {
    let server = TestServer::start_with(|c| c.limits.idle_timeout_ms = 1000).await;
    server.register("alice").await;
    // Library clients, TCP and WebSocket, that do nothing for several idle timeouts.
    let (mut bob, _) = server.user("bob").await;
    let mut carol = server.ws_client().await;
    carol.register(registration("carol")).await.unwrap();
    carol.login("carol", PASSWORD).await.unwrap();

    let mut raw = Raw::connect(server.tcp).await;
    greeting(&mut raw).await.unwrap();
    raw.login("alice").await;
    // Silent: first the probe, then, still silent, the close.
    loop {
        let frame = raw.next().await.expect("the probe");
        if frame["type"] == "event" && frame["event"] == "ping" {
            break;
        }
    }
    let (code, _) = raw.closing().await;
    assert_eq!(code, "idle_timeout");

    // A raw session that answers the probe with a blank line stays.
    let mut polite = Raw::connect(server.tcp).await;
    greeting(&mut polite).await.unwrap();
    polite.login("alice").await;
    for _ in 0..3 {
        loop {
            let frame = polite.next().await.expect("a probe, not a close");
            assert_ne!(frame["type"], "closing", "{frame}");
            if frame["event"] == "ping" {
                break;
            }
        }
        polite.send(" \n").await;
    }

    // The library clients were idle all along and were never closed.
    expect_none(&mut bob, "closing", |i| {
        matches!(i, salon_client::Incoming::Closing { .. })
    })
    .await;
    bob.ping()
        .await
        .expect("the TCP library client is still connected");
    expect_none(&mut carol, "closing", |i| {
        matches!(i, salon_client::Incoming::Closing { .. })
    })
    .await;
    carol
        .ping()
        .await
        .expect("the WebSocket library client is still connected");
}

#[tokio::test]
async fn slowloris_http_headers_are_cut_after_the_header_timeout() {
    let server = TestServer::start_with(|c| c.limits.http_header_timeout_ms = 300).await;
    let stream = TcpStream::connect(server.http).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        write.write_all(b"GET / HTTP/1.1\r\n").await?;
        // One header byte at a time, never finishing the headers.
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            write.write_all(b"X").await?;
        }
        #[allow(unreachable_code)]
        std::io::Result::Ok(())
    });
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, read.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the server closes a connection that trickles its headers"
    );
    assert!(!String::from_utf8_lossy(&rest).contains(" 200 "));
    trickle.abort();
    // An idle keep-alive connection is closed the same way; normal requests still work.
    let mut idle = TcpStream::connect(server.http).await.unwrap();
    let mut nothing = Vec::new();
    tokio::time::timeout(WAIT, idle.read_to_end(&mut nothing))
        .await
        .expect("an idle HTTP connection is closed")
        .unwrap();
    let response = http_get([127, 0, 0, 1], server.http, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
}

/// A WebSocket connected by hand, from a socket with a small receive buffer.
async fn raw_ws(server: &TestServer) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.http).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", server.http), stream)
        .await
        .expect("WebSocket handshake");
    ws
}

/// Sends Ping frames without ever reading until the server ends the connection; returns
/// how many were sent.
async fn ping_until_cut(ws: tokio_tungstenite::WebSocketStream<TcpStream>) -> u64 {
    let (mut sink, _unread) = ws.split();
    let mut sent = 0u64;
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while tokio::time::Instant::now() < deadline {
        if sink
            .send(Message::Ping(vec![7u8; 125].into()))
            .await
            .is_err()
        {
            return sent;
        }
        sent += 1;
    }
    panic!("a client sending {sent} Pings without reading was never cut");
}

#[tokio::test]
async fn a_websocket_ping_flood_without_reading_is_cut() {
    let server = TestServer::start_with(|c| {
        c.limits.login_timeout_ms = 500;
        c.limits.idle_timeout_ms = 500;
        c.limits.close_grace_ms = 200;
    })
    .await;
    server.register("alice").await;
    // Never logged in.
    let anonymous = raw_ws(&server).await;
    // Logged in, then only Pings: they do not answer the server's probe.
    let mut member = raw_ws(&server).await;
    let login = format!(
        "{{\"id\":1,\"cmd\":\"login\",\"args\":{{\"login\":\"alice\",\"password\":\"{PASSWORD}\"}}}}"
    );
    member.send(Message::text(login)).await.unwrap();
    loop {
        let Some(Ok(Message::Text(text))) = member.next().await else {
            panic!("login reply expected")
        };
        if text.contains("\"re\":1") {
            assert!(text.contains("\"type\":\"ok\""), "{text}");
            break;
        }
    }
    let (a, b) = tokio::join!(ping_until_cut(anonymous), ping_until_cut(member));
    assert!(a > 0 && b > 0);
    // The server is fine.
    server.client().await.ping().await.unwrap();
}

#[tokio::test]
async fn a_websocket_text_message_that_is_not_utf8_gets_invalid_utf8_then_1007() {
    let server = TestServer::start().await;
    let mut ws = raw_ws(&server).await;
    let Some(Ok(Message::Text(hello))) = ws.next().await else {
        panic!("hello")
    };
    assert!(hello.contains("\"hello\""));
    let bad = Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(OpData::Text),
        true,
    );
    ws.send(Message::Frame(bad)).await.unwrap();
    let mut texts = Vec::new();
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert!(
        texts[0].contains("\"type\":\"error\"") && texts[0].contains("\"code\":\"invalid_utf8\""),
        "{texts:?}"
    );
    assert!(texts[1].contains("\"code\":\"invalid_utf8\"") && texts[1].contains("closing"));
    assert_eq!(u16::from(close.expect("a close code").code), 1007);
}

#[tokio::test]
async fn lines_of_spaces_and_tabs_are_ignored_like_blank_lines() {
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.tcp).await;
    greeting(&mut raw).await.unwrap();
    raw.send("   \n\t\n \t \r\n\r\n\n{\"id\":1,\"cmd\":\"ping\"}\n")
        .await;
    let reply = raw.next().await.unwrap();
    assert_eq!(
        (reply["type"].as_str(), reply["re"].as_u64()),
        (Some("ok"), Some(1)),
        "{reply}"
    );
}

/// A `ping` request of exactly `len` bytes.
fn ping_of(len: usize) -> String {
    let head = "{\"id\":900,\"cmd\":\"ping\",\"pad\":\"";
    let tail = "\"}";
    format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
}

#[tokio::test]
async fn the_frame_limit_does_not_count_the_line_terminator() {
    let server = TestServer::start().await;
    let max = 64 * 1024;
    for end in ["\n", "\r\n"] {
        let mut raw = Raw::connect(server.tcp).await;
        greeting(&mut raw).await.unwrap();
        raw.send(format!("{}{end}", ping_of(max))).await;
        let reply = raw.next().await.unwrap();
        assert_eq!(
            reply["type"], "ok",
            "a frame of exactly max_frame_bytes ending {end:?}"
        );

        let mut raw = Raw::connect(server.tcp).await;
        greeting(&mut raw).await.unwrap();
        raw.send(format!("{}{end}", ping_of(max + 1))).await;
        let (code, _) = raw.closing().await;
        assert_eq!(code, "frame_too_large", "one byte more, ending {end:?}");
    }
    // WebSocket messages have no terminator: the same limit on the message itself.
    let ws = server.ws_client().await;
    ws.send_raw(ping_of(max)).await.unwrap();
    ws.ping()
        .await
        .expect("a message of exactly max_frame_bytes is read");
    let mut ws = ws;
    ws.send_raw(ping_of(max + 1)).await.unwrap();
    assert_eq!(expect_closing(&mut ws).await.0, CloseCode::FrameTooLarge);
}

#[tokio::test]
async fn the_client_library_reports_a_refused_connection() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_address = 1).await;
    let _one = hold(1, [127, 0, 0, 1], server.tcp).await;
    match Client::connect_tcp(server.tcp).await {
        Err(ClientError::Closed(Some((code, message)))) => {
            assert_eq!(code, CloseCode::TooManyConnections);
            assert!(message.contains("your address"), "{message}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("admitted over the per-address limit"),
    }
}

#[tokio::test]
async fn out_of_file_descriptors_the_server_backs_off_logs_little_and_recovers() {
    // A real process with few file descriptors: a flood of connections exhausts them,
    // and accept() fails until some close.
    use std::process::Stdio;
    let data = DataDir::new();
    let (tcp, http) = (free_port(), free_port());
    let mut command = format!(
        "ulimit -n 64 && exec \"$0\" serve --no-console --listen 127.0.0.1:{tcp} \
         --http-listen 127.0.0.1:{http}"
    );
    for arg in data.server_args() {
        command.push_str(&format!(" '{}'", arg.to_string_lossy()));
    }
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", &command, env!("CARGO_BIN_EXE_salon")])
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .env("SALON_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped()) // the log
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    drop(connect_when_ready(tcp).await);
    let to = SocketAddr::from(([127, 0, 0, 1], tcp));
    // More connections than descriptors; the kernel queues those not yet accepted.
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(TcpStream::connect(to).await.unwrap());
    }
    // Let the server run into the limit for a while, retrying.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(flood);
    // Once they are gone it accepts again.
    let client = connect_when_ready(tcp).await;
    client.ping().await.expect("the server serves again");
    drop(client);
    child.start_kill().unwrap();
    let mut log = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .await
        .unwrap();
    let _ = child.wait().await;
    let warnings = log.matches("accept failed").count();
    assert!(
        warnings >= 1,
        "the flood ran the server out of descriptors:\n{log}"
    );
    assert!(
        warnings <= 2,
        "one warning per few seconds, not one per failed accept ({warnings}):\n{log}"
    );
}

//! R24 and the wire protocol: hello, every malformed input, limits, transports.

use salon_client::{Client, Incoming};
use salon_proto::{CloseCode, ErrorCode, PROTOCOL_VERSION};

use crate::harness::*;

async fn next_error(c: &mut Client) -> salon_proto::ErrorBody {
    expect(c, "error frame", |i| match i {
        Incoming::Error(e) => Some(e.clone()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn hello_announces_the_protocol_version_and_limits() {
    let server = TestServer::start_with(|c| c.limits.max_message_chars = 1000).await;
    let c = server.client().await;
    assert_eq!(c.hello().protocol, PROTOCOL_VERSION);
    assert_eq!(c.hello().max_message_chars, 1000);
    assert_eq!(c.hello().max_frame_bytes, 64 * 1024);
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let mut c = server.client().await;

    c.send_raw("this is not json\n").await.unwrap();
    assert_eq!(next_error(&mut c).await.code, ErrorCode::BadJson);

    c.send_raw("{\"cmd\":\"ping\"}\n").await.unwrap();
    assert_eq!(
        next_error(&mut c).await.code,
        ErrorCode::BadJson,
        "missing id"
    );

    c.send_raw(b"{\"id\":1,\"cmd\":\"ping\xff\"}\n".to_vec())
        .await
        .unwrap();
    assert_eq!(next_error(&mut c).await.code, ErrorCode::InvalidUtf8);

    // Unknown command, wrong argument types, missing arguments: replies with the id.
    c.send_raw("{\"id\":900,\"cmd\":\"fly\"}\n").await.unwrap();
    c.send_raw("{\"id\":901,\"cmd\":\"send\",\"args\":{\"room\":\"Général\"}}\n")
        .await
        .unwrap();
    c.send_raw("{\"id\":902,\"cmd\":\"set_status\",\"args\":{\"status\":42}}\n")
        .await
        .unwrap();
    // Those replies have ids the client library did not issue, so they are dropped by it;
    // check the session is alive and answering in order instead.
    c.ping().await.unwrap();

    assert_eq!(
        c.rooms().await.unwrap_err().code(),
        Some(ErrorCode::NotAuthenticated),
        "commands before login"
    );
    c.ping().await.unwrap();
}

#[tokio::test]
async fn errors_for_known_requests_carry_their_id() {
    // Drive the raw protocol to see the `re` of replies the library would match itself.
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let server = TestServer::start().await;
    let stream = tokio::net::TcpStream::connect(server.tcp).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await.unwrap(); // hello
    let mut ask = async |frame: &str| -> serde_json::Value {
        write
            .write_all(format!("{frame}\n").as_bytes())
            .await
            .unwrap();
        let line = lines.next_line().await.unwrap().unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let r = ask(r#"{"id":7,"cmd":"fly"}"#).await;
    assert_eq!(
        (r["re"].as_u64(), r["code"].as_str()),
        (Some(7), Some("unknown_command"))
    );
    let r = ask(r#"{"id":8,"cmd":"send","args":{"room":"Général"}}"#).await;
    assert_eq!(
        (r["re"].as_u64(), r["code"].as_str()),
        (Some(8), Some("invalid_request"))
    );
    assert!(r["message"].as_str().unwrap().contains("text"), "{r}");
    let r = ask(r#"{"id":9,"cmd":"who"}"#).await;
    assert_eq!(
        (r["re"].as_u64(), r["code"].as_str()),
        (Some(9), Some("not_authenticated"))
    );
    let r = ask(r#"{"id":10,"cmd":"ping"}"#).await;
    assert_eq!(
        (r["re"].as_u64(), r["type"].as_str()),
        (Some(10), Some("ok"))
    );
}

#[tokio::test]
async fn an_oversized_frame_closes_that_connection_with_a_reason_only() {
    let server = TestServer::start().await;
    let (mut bystander, _) = server.user("bob").await;
    let mut c = server.client().await;
    let huge = format!(
        "{{\"id\":1,\"cmd\":\"ping\",\"pad\":\"{}\"}}\n",
        "x".repeat(70_000)
    );
    c.send_raw(huge).await.unwrap();
    let (code, message) = expect_closing(&mut c).await;
    assert_eq!(code, CloseCode::FrameTooLarge);
    assert!(message.contains("65536"), "{message}");
    assert!(
        c.next_event().await.is_none(),
        "connection closed after the reason"
    );
    // Everyone else carries on.
    bystander.ping().await.unwrap();
    let fresh = server.client().await;
    fresh.ping().await.unwrap();
    let _ = &mut bystander;
}

#[tokio::test]
async fn messages_over_the_length_limit_or_empty_are_refused() {
    let server = TestServer::start_with(|c| c.limits.max_message_chars = 50).await;
    let (c, _) = server.user("alice").await;
    let err = c.send("Général", &"é".repeat(51)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLong));
    c.send("Général", &"é".repeat(50)).await.unwrap();
    assert_eq!(
        c.send("Général", "   \n ").await.unwrap_err().code(),
        Some(ErrorCode::EmptyMessage)
    );
    assert_eq!(
        c.direct("alice", "").await.unwrap_err().code(),
        Some(ErrorCode::EmptyMessage)
    );
}

#[tokio::test]
async fn message_rate_is_limited_per_session_with_a_retry_hint() {
    let server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 1;
        c.limits.message_burst = 3;
    })
    .await;
    let (c, _) = server.user("alice").await;
    for i in 0..3 {
        c.send("Général", &format!("burst {i}")).await.unwrap();
    }
    let err = c.send("Général", "one too many").await.unwrap_err();
    let salon_client::ClientError::Server(body) = err else {
        panic!()
    };
    assert_eq!(body.code, ErrorCode::RateLimited);
    assert!(body.retry_after_ms.is_some());
    // Refused, not stored: history has exactly the three.
    let page = c.room_history("Général", None, None).await.unwrap();
    assert_eq!(page.messages.len(), 3);
}

#[tokio::test]
async fn message_rate_is_also_limited_per_user_whatever_the_sessions_and_covers_read_markers() {
    let server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 1;
        c.limits.message_burst = 4;
    })
    .await;
    let (one, _) = server.user("alice").await;
    let (two, _) = server.login("alice").await;
    let (bob, _) = server.user("bob").await;
    // Two sessions share one user's budget: two each, then a third from either is
    // refused, though each session alone is within its own.
    for c in [&one, &two, &one, &two] {
        c.send("Général", "hop").await.unwrap();
    }
    for c in [&one, &two] {
        let err = c.send("Général", "one too many").await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
    }
    // Another user is not concerned.
    let sent = bob.send("Général", "bonjour").await.unwrap();
    // Read markers go through the message writer too, and count the same way: the
    // message took one of bob's four.
    for _ in 0..3 {
        bob.mark_room_read("Général", sent.id).await.unwrap();
    }
    let err = bob.mark_room_read("Général", sent.id).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
}

#[tokio::test]
async fn websocket_sessions_speak_the_same_protocol_as_tcp() {
    let server = TestServer::start().await;
    let ws = server.ws_client().await;
    assert_eq!(ws.hello().protocol, PROTOCOL_VERSION);
    ws.register(registration("alice")).await.unwrap();
    ws.login("alice", PASSWORD).await.unwrap();
    let (mut bob, _) = server.user("bob").await;
    ws.send("Général", "from the browser side").await.unwrap();
    let text = expect_event(&mut bob, "ws message on tcp", |e| room_text(e, "Général")).await;
    assert_eq!(text, "from the browser side");

    let mut ws = ws;
    ws.send_raw("not json").await.unwrap();
    assert_eq!(
        expect(&mut ws, "error", |i| match i {
            Incoming::Error(e) => Some(e.code),
            _ => None,
        })
        .await,
        ErrorCode::BadJson
    );
    ws.ping().await.unwrap();
}

#[tokio::test]
async fn an_oversized_websocket_frame_closes_with_a_reason() {
    let server = TestServer::start().await;
    let mut ws = server.ws_client().await;
    ws.send_raw("x".repeat(70_000)).await.unwrap();
    let (code, _) = expect_closing(&mut ws).await;
    assert_eq!(code, CloseCode::FrameTooLarge);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_a_reason() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 2).await;
    let _a = server.client().await;
    let _b = server.client().await;
    match Client::connect_tcp(server.tcp).await {
        Err(salon_client::ClientError::Closed(Some((code, _)))) => {
            assert_eq!(code, CloseCode::TooManyConnections)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("third connection admitted"),
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_and_nobody_else_slows_down() {
    // Queue sized for bursts of one commit batch; the slow member overflows it only once
    // the kernel's socket buffers are full too.
    let server = TestServer::start_with(|c| {
        c.limits.outbound_queue_frames = 512;
        c.limits.commit_batch_max = 16;
        // Long enough for this test to start reading the slow connection after sending.
        c.limits.close_grace_ms = 120_000;
    })
    .await;
    let (sender, _) = server.user("alice").await;
    let (mut fast, _) = server.user("bob").await;
    // The slow member: a raw connection that logs in and then reads nothing.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    server.register("carol").await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(server.tcp).await.unwrap();
    let login = format!(
        "{{\"id\":1,\"cmd\":\"login\",\"args\":{{\"login\":\"carol\",\"password\":\"{PASSWORD}\"}}}}\n"
    );
    slow.write_all(login.as_bytes()).await.unwrap();
    expect_event(&mut fast, "carol online", |e| match e {
        salon_proto::Event::Presence { users, .. }
            if users.iter().any(|p| p.username == "carol") =>
        {
            Some(())
        }
        _ => None,
    })
    .await;

    let metrics = server.metrics.expect("metrics");
    let series = "salon_slow_consumer_disconnections_total";
    let before = metric(&scrape_metrics(metrics).await, series);
    // ~12 MB of messages: more than the kernel buffers and the queue can hold.
    let body = "m".repeat(3900);
    let total = 3000;
    let sender = std::sync::Arc::new(sender);
    let mut sends = Vec::new();
    for i in 0..total {
        let sender = sender.clone();
        let text = format!("{i} {body}");
        sends.push(tokio::spawn(async move {
            sender.send("Général", &text).await
        }));
    }
    for s in sends {
        s.await.unwrap().expect("every message accepted");
    }
    // The slow one was cut off: reading now drains what was in flight and reaches the
    // end, whose last frame says why.
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, slow.read_to_end(&mut all))
        .await
        .expect("slow connection closed by the server")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    let last = text.trim_end().rsplit('\n').next().unwrap_or_default();
    assert!(
        last.contains("\"type\":\"closing\"") && last.contains("\"code\":\"slow_consumer\""),
        "last frame gives the reason: {}",
        &last[..last.len().min(300)]
    );
    assert!(
        metric(&scrape_metrics(metrics).await, series) > before,
        "{series} grew"
    );
    // The fast reader got every message, in order.
    for i in 0..total {
        let text = expect_event(&mut fast, "every message", |e| room_text(e, "Général")).await;
        assert!(text.starts_with(&format!("{i} ")), "message {i} in order");
    }
}

#[tokio::test]
async fn control_characters_are_refused_at_the_edge_in_every_text_field() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    // NUL, escape, carriage return, bell: in a message, a private message, a channel
    // name, a registration field. Each is refused `invalid_characters`, nothing stored.
    for text in ["a\0b", "\u{1b}[31mred", "line\r\nbreak", "bell\u{7}"] {
        let err = alice.send("Général", text).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidCharacters), "{text:?}");
        let err = alice.direct("bob", text).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidCharacters), "{text:?}");
    }
    let err = alice.create_channel("evil\0", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCharacters));
    let mut reg = registration("mallory");
    reg.alias = "Mal\u{0}lory".into();
    let fresh = server.client().await;
    assert_eq!(
        fresh.register(reg).await.unwrap_err().code(),
        Some(ErrorCode::InvalidCharacters)
    );
    // Tab and newline are text; the session goes on, and nothing refused was stored.
    alice
        .send("Général", "col1\tcol2\nnext line")
        .await
        .unwrap();
    let page = bob.room_history("Général", None, None).await.unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["col1\tcol2\nnext line"]);
    expect_event(&mut bob, "alice's message", |e| room_text(e, "Général")).await;
}

/// Writes `frames` in one write on a raw connection (after logging in as `name` when
/// given), optionally closes the sending side, and returns every frame read until the
/// server closes the connection.
async fn one_write(
    server: &TestServer,
    name: Option<&str>,
    frames: &[&str],
    half_close: bool,
) -> Vec<serde_json::Value> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(server.tcp).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    lines.next_line().await.unwrap(); // hello
    if let Some(name) = name {
        let login = format!(
            "{{\"id\":1,\"cmd\":\"login\",\"args\":{{\"login\":\"{name}\",\"password\":\"{PASSWORD}\"}}}}\n"
        );
        write.write_all(login.as_bytes()).await.unwrap();
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.contains("\"re\":1") {
                break;
            }
        }
    }
    let mut batch = String::new();
    for f in frames {
        batch.push_str(f);
        batch.push('\n');
    }
    write.write_all(batch.as_bytes()).await.unwrap();
    if half_close {
        write.shutdown().await.unwrap();
    }
    let mut got = Vec::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, lines.next_line()).await {
        got.push(serde_json::from_str(&line).unwrap());
    }
    got
}

fn reply_to(frames: &[serde_json::Value], re: u64) -> Vec<&str> {
    frames
        .iter()
        .filter(|f| f["re"].as_u64() == Some(re))
        .map(|f| f["type"].as_str().unwrap_or("?"))
        .collect()
}

#[tokio::test]
async fn a_send_written_just_before_logout_gets_its_reply_before_the_connection_closes() {
    let server = TestServer::start().await;
    server.register("alice").await;
    for _ in 0..5 {
        let got = one_write(
            &server,
            Some("alice"),
            &[
                r#"{"id":2,"cmd":"send","args":{"room":"Général","text":"last words"}}"#,
                r#"{"id":3,"cmd":"logout"}"#,
            ],
            false,
        )
        .await;
        assert_eq!(reply_to(&got, 2), ["ok"], "{got:?}");
        assert_eq!(reply_to(&got, 3), ["ok"], "{got:?}");
        assert_eq!(got.last().unwrap()["code"], "logout", "{got:?}");
    }
}

#[tokio::test]
async fn requests_pending_when_the_client_half_closes_all_get_their_replies() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let got = one_write(
        &server,
        None,
        &[
            &format!(
                r#"{{"id":1,"cmd":"login","args":{{"login":"alice","password":"{PASSWORD}"}}}}"#
            ),
            r#"{"id":2,"cmd":"who"}"#,
            r#"{"id":3,"cmd":"send","args":{"room":"Général","text":"then I hang up"}}"#,
            r#"{"id":4,"cmd":"direct","args":{"to":"alice","text":"note to self"}}"#,
        ],
        true,
    )
    .await;
    for re in 1..=4 {
        assert_eq!(reply_to(&got, re), ["ok"], "request {re}: {got:?}");
    }
}

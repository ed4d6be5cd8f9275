//! Issue 12: Prometheus metrics at `/metrics` on a listener of their own; the figures
//! move with what clients do. The recorder is process-wide and tests run side by side,
//! so counters are only checked to have grown, never for exact values.

use std::net::SocketAddr;

use salon_proto::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("scraped in time")
        .unwrap();
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    body.to_owned()
}

/// The value of one series (`name` or `name{labels}` exactly as rendered), 0 if absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_and_move() {
    let server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 1;
        c.limits.message_burst = 1;
    })
    .await;
    let addr = server.metrics.expect("a metrics listener");
    let before = scrape(addr).await;
    assert_eq!(
        value(
            &before,
            &format!(
                "salon_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0,
        "{before}"
    );
    // Not on the public HTTP listener.
    assert_eq!(http_get(&server, "/metrics").await.0, 404);

    assert_eq!(
        server.login_refused("nobody", "wrong password").await,
        Some(ErrorCode::InvalidCredentials)
    );
    let (alice, _) = server.user("alice").await;
    let _ws = server.ws_client().await;
    alice.send("Général", "counted").await.unwrap();
    // The burst is 1: sending on at once is refused before long.
    let mut limited = false;
    for i in 0..20 {
        match alice.send("Général", &format!("again {i}")).await {
            Err(e) if e.code() == Some(ErrorCode::RateLimited) => {
                limited = true;
                break;
            }
            _ => {}
        }
    }
    assert!(limited, "rate limited at last");

    let after = scrape(addr).await;
    for series in [
        "salon_connections_opened_total{transport=\"tcp\"}",
        "salon_connections_opened_total{transport=\"websocket\"}",
        "salon_logins_total{outcome=\"failed\"}",
        "salon_logins_total{outcome=\"succeeded\"}",
        "salon_messages_accepted_total{kind=\"room\"}",
        "salon_commit_batch_size_count",
        "salon_commit_seconds_count",
        "salon_fanout_seconds_count",
        "salon_rate_limited_requests_total",
    ] {
        assert!(
            value(&after, series) > value(&before, series),
            "{series} did not grow:\n{after}"
        );
    }
    for series in [
        "salon_connections_open{transport=\"tcp\"}",
        "salon_commit_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(value(&after, series) >= 1.0, "{series}:\n{after}");
    }
    // The queues are sampled every second.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(addr).await;
        if text.contains("\nsalon_outbound_queue_frames_max ")
            && text.contains("\nsalon_outbound_queue_bytes_total ")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no queue figures:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        after.contains("# TYPE salon_commit_seconds histogram")
            && after.contains("# TYPE salon_commit_batch_size histogram"),
        "{after}"
    );
}

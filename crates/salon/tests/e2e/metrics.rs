//! Issue 12: Prometheus metrics at `/metrics` on a listener of their own; the figures
//! move with what clients do. The recorder is process-wide and tests run side by side,
//! so counters are only checked to have grown, never for exact values.

use salon_proto::ErrorCode;

use crate::harness::*;

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_and_move() {
    let server = TestServer::start_with(|c| {
        c.limits.messages_per_second = 1;
        c.limits.message_burst = 1;
    })
    .await;
    let addr = server.metrics.expect("a metrics listener");
    let before = scrape_metrics(addr).await;
    assert_eq!(
        metric(
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

    let after = scrape_metrics(addr).await;
    for series in [
        "salon_connections_opened_total{transport=\"tcp\"}",
        "salon_connections_opened_total{transport=\"websocket\"}",
        "salon_logins_total{outcome=\"failed\"}",
        "salon_logins_total{outcome=\"succeeded\"}",
        "salon_messages_accepted_total{kind=\"room\"}",
        "salon_commit_batch_size_count",
        "salon_commit_seconds_count",
        "salon_fanout_seconds_count",
        "salon_outbound_wait_seconds_count",
        "salon_rate_limited_requests_total",
    ] {
        assert!(
            metric(&after, series) > metric(&before, series),
            "{series} did not grow:\n{after}"
        );
    }
    for series in [
        "salon_connections_open{transport=\"tcp\"}",
        "salon_commit_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(metric(&after, series) >= 1.0, "{series}:\n{after}");
    }
    // The queues are sampled every second.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape_metrics(addr).await;
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

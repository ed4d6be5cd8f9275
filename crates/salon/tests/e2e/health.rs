//! Issue 12: `/healthz` answers while the process runs; `/readyz` only while the database
//! answers and the server is not shutting down (the unreachable-database case is in
//! `database.rs`, next to its proxy).

use salon_proto::{args, Command};

use crate::harness::*;

#[tokio::test]
async fn readyz_is_ready_until_an_administrator_starts_a_shutdown() {
    let server = TestServer::start().await;
    assert_eq!(http_get(&server, "/healthz").await, (200, "ok".into()));
    assert_eq!(http_get(&server, "/readyz").await, (200, "ready\n".into()));

    let (admin, _) = server.login("admin").await;
    admin
        .request(Command::Shutdown(args::Shutdown {
            seconds: Some(2),
            message: None,
        }))
        .await
        .unwrap();
    // During the countdown the process still answers, but is no longer ready.
    assert_eq!(
        http_get(&server, "/readyz").await,
        (503, "shutting down\n".into())
    );
    assert_eq!(http_get(&server, "/healthz").await, (200, "ok".into()));
    server.wait_stopped().await;
}

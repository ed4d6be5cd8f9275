//! R24: accepted messages are never lost — across graceful stops and `kill -9`.

use std::process::Stdio;
use std::time::Duration;

use salon_client::Incoming;
use salon_proto::{CloseCode, Event};

use crate::harness::*;

#[tokio::test]
async fn graceful_shutdown_tells_clients_and_loses_no_accepted_message() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (mut bob, _) = server.user("bob").await;
    let alice = std::sync::Arc::new(alice);
    // Many messages in flight when the stop comes.
    let mut sends = Vec::new();
    for i in 0..300 {
        let alice = alice.clone();
        sends.push(tokio::spawn(async move {
            alice.send("Général", &format!("m{i}")).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let server_stopping = tokio::spawn(server.stop());

    // Bob is told, then closed with the reason.
    expect_event(&mut bob, "shutdown notice", |e| {
        matches!(e, Event::Shutdown { .. }).then_some(())
    })
    .await;
    let (code, _) = expect_closing(&mut bob).await;
    assert_eq!(code, CloseCode::Shutdown);

    let mut accepted = Vec::new();
    for s in sends {
        // An error is an explicit refusal (shutting down, or the connection closed before
        // the request was read): not accepted, so there is nothing to keep.
        if let Ok(a) = s.await.unwrap() {
            accepted.push(a.id);
        }
    }
    let (config, data, clock) = server_stopping.await.unwrap();
    assert!(!accepted.is_empty());

    let server = TestServer::restart_from(config, data, clock).await;
    let (c, _) = server.login("bob").await;
    let mut stored = Vec::new();
    let mut before = None;
    loop {
        let page = c.room_history("Général", before, Some(100)).await.unwrap();
        stored.extend(page.messages.iter().map(|m| m.id));
        if !page.more {
            break;
        }
        before = page.messages.first().map(|m| m.id);
    }
    for id in &accepted {
        assert!(stored.contains(id), "accepted message {id} lost");
    }
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_minus_9() {
    let data = DataDir::new();
    let (tcp, http) = (free_port(), free_port());
    // The child reads its limits from a config file; flags and environment add the rest.
    let config_file = data.path().join("salon.toml");
    std::fs::write(
        &config_file,
        "[limits]\nmessages_per_second = 100000\nmessage_burst = 100000\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .arg("serve")
        .arg("--config")
        .arg(&config_file)
        .env("SALON_LISTEN", format!("127.0.0.1:{tcp}"))
        .args(data.server_args())
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .env("SALON_METRICS_LISTEN", "127.0.0.1:0")
        .env("SALON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let c = connect_when_ready(tcp).await;
    c.register(registration("alice")).await.unwrap();
    c.register(registration("bob")).await.unwrap();
    c.login("alice", PASSWORD).await.unwrap();
    let c = std::sync::Arc::new(c);
    let mut sends = Vec::new();
    for i in 0..200 {
        let c = c.clone();
        sends.push(tokio::spawn(async move {
            if i % 2 == 0 {
                c.send("Général", &format!("room {i}")).await
            } else {
                c.direct("bob", &format!("dm {i}")).await
            }
        }));
    }
    let mut acked = Vec::new();
    for s in sends {
        acked.push(s.await.unwrap().expect("accepted").id);
    }
    // SIGKILL: no chance to flush anything.
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let clock = std::sync::Arc::new(salon_server::ManualClock::new(real_now_ms()));
    let server = TestServer::restart_from(test_config(&data), data, clock).await;
    let (alice, _) = server.login("alice").await;
    let room = alice
        .room_history("Général", None, Some(100))
        .await
        .unwrap();
    let dms = alice.direct_history("bob", None, Some(100)).await.unwrap();
    let stored: Vec<i64> = room
        .messages
        .iter()
        .map(|m| m.id)
        .chain(dms.messages.iter().map(|m| m.id))
        .collect();
    assert_eq!(stored.len(), 200);
    for id in acked {
        assert!(stored.contains(&id), "acknowledged message {id} lost");
    }
    // Bob never logged in: his 100 private messages wait for him.
    let (mut bob, welcome) = server.login("bob").await;
    assert_eq!(welcome.offline_directs, 100);
    expect(&mut bob, "first offline dm", |i| {
        matches!(i, Incoming::Event(Event::Direct(_))).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_the_binary_gracefully_with_exit_status_0() {
    let data = DataDir::new();
    let tcp = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args([
            "serve",
            "--no-console",
            "--listen",
            &format!("127.0.0.1:{tcp}"),
        ])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args(data.server_args())
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .env("SALON_METRICS_LISTEN", "127.0.0.1:0")
        .env("SALON_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut c = connect_when_ready(tcp).await;
    c.login("admin", PASSWORD).await.unwrap();
    let accepted = c.send("Général", "just before SIGTERM").await.unwrap();

    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    expect_event(&mut c, "shutdown notice", |e| {
        matches!(e, Event::Shutdown { .. }).then_some(())
    })
    .await;
    let (code, _) = expect_closing(&mut c).await;
    assert_eq!(code, CloseCode::Shutdown);
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));

    let clock = std::sync::Arc::new(salon_server::ManualClock::new(real_now_ms()));
    let server = TestServer::restart_from(test_config(&data), data, clock).await;
    let (c, _) = server.login("admin").await;
    let page = c.room_history("Général", None, None).await.unwrap();
    assert_eq!(page.messages.last().map(|m| m.id), Some(accepted.id));
}

//! R25: `salon bench` runs each workload end to end on a small scale. Only that it works
//! and loses nothing is checked here; performance is measured, never asserted, in tests.

async fn bench(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .arg("bench")
        .args(args)
        .arg("--no-pin")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "### salon bench",
        "command:",
        "machine:",
        "affinity:",
        "database:",
        "server:",
    ] {
        assert!(
            stdout.contains(line),
            "result block has `{line}`:\n{stdout}"
        );
    }
    stdout
}

#[tokio::test]
async fn bench_fanout_and_saturation_deliver_everything() {
    let out = bench(&[
        "fanout",
        "--clients",
        "20",
        "--rooms",
        "2",
        "--senders-per-room",
        "2",
        "--rate",
        "20",
        "--seconds",
        "1",
    ])
    .await;
    assert!(out.contains("refused 0"), "{out}");
    assert!(out.contains(", lost 0"), "{out}");
    assert!(out.contains("latency:   p50"), "{out}");
    // Edits, reactions and typing mixed in: every edit and reaction reaches every member
    // too, nothing is refused.
    let out = bench(&[
        "fanout",
        "--clients",
        "10",
        "--rooms",
        "1",
        "--senders-per-room",
        "2",
        "--rate",
        "40",
        "--seconds",
        "1",
        "--mix",
    ])
    .await;
    assert!(out.contains("mixed:"), "{out}");
    assert!(out.contains("refused 0"), "{out}");
    assert!(out.contains(", lost 0"), "{out}");
    let out = bench(&[
        "saturation",
        "--clients",
        "10",
        "--rooms",
        "1",
        "--senders-per-room",
        "1",
        "--rate",
        "10",
        "--seconds",
        "1",
        "--steps",
        "2",
    ])
    .await;
    assert!(out.contains("best:"), "{out}");
}

#[tokio::test]
async fn bench_persist_login_and_idle_report_their_figures() {
    let out = bench(&[
        "persist",
        "--clients",
        "4",
        "--window",
        "8",
        "--seconds",
        "1",
    ])
    .await;
    assert!(
        out.contains("messages acknowledged (durably stored)"),
        "{out}"
    );
    assert!(out.contains("refused 0"), "{out}");
    let out = bench(&[
        "login",
        "--logins",
        "3",
        "--resumes",
        "20",
        "--concurrency",
        "4",
    ])
    .await;
    assert!(out.contains("failures:  0"), "{out}");
    let out = bench(&["idle", "--clients", "50"]).await;
    assert!(
        out.contains("per conn:") && out.contains("marginal"),
        "{out}"
    );
}

/// Parses the number after `label` in a result block.
fn number_after(out: &str, label: &str) -> u64 {
    let at = out
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in:\n{out}"))
        + label.len();
    out[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in:\n{out}"))
}

#[tokio::test]
async fn bench_floods_are_held_to_the_connection_limits() {
    // 200 connections from one address against the default per-address limit (64).
    let out = bench(&["connflood", "--connections", "200"]).await;
    let accepted = number_after(&out, "accepted ");
    let refused = number_after(&out, "refused ");
    assert!(accepted <= 64 && accepted + refused == 200, "{out}");
    assert!(
        out.contains("from 127.0.0.2 connected and logged in"),
        "{out}"
    );
    // The workload itself fails if the server's memory goes past the stated bound.
    let out = bench(&["pingflood", "--clients", "5", "--seconds", "2"]).await;
    assert!(out.contains("stated bound"), "{out}");
    assert!(out.contains("failed to connect 0"), "{out}");
}

#[tokio::test]
async fn bench_amplify_keeps_the_server_within_its_stated_memory_bound() {
    // The attack on a small scale; the bench itself fails when the server's RSS passes
    // the bound (docs/LIMITS.md), which `bench` turns into a test failure.
    let out = bench(&[
        "amplify",
        "--sessions",
        "18",
        "--seconds",
        "2",
        "--messages",
        "100",
    ])
    .await;
    assert!(out.contains("16 sessions of one user"), "{out}");
    assert!(out.contains("without reading, 2 refused"), "{out}");
    assert!(out.contains("bound"), "{out}");
}

/// Issue 16: `salon bench fanout --cluster 3` runs three `salon serve` nodes on the
/// suite's PostgreSQL database and NATS. Checked: the report's structure, nothing lost,
/// and the bus counts read from each node's metrics — one NATS publish per room message,
/// delivered once to each other node whatever its number of members — never timing.
#[tokio::test]
async fn bench_cluster_fanout_publishes_each_room_message_once_and_delivers_it_once_per_node() {
    // Only the workloads that fan out take --cluster (checked before anything starts).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args(["bench", "idle", "--cluster", "3"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--cluster runs the fanout and saturation"),
        "{stderr}"
    );
    if crate::harness::backend() != crate::harness::Backend::Postgres {
        eprintln!("cluster bench: runs in the PostgreSQL pass");
        return;
    }
    let Some(nats) = crate::cluster::nats().await else {
        return;
    };
    let data = crate::harness::DataDir::new();
    let url = data.database_url().expect("a PostgreSQL database");
    // 24 clients in 2 rooms: room k holds users k, k + 2, …, spread over the nodes in
    // turn, so each room has members on every node; sender s of a room is on node s + 1.
    let out = bench(&[
        "fanout",
        "--cluster",
        "3",
        "--database-url",
        &url,
        "--nats-url",
        &nats,
        "--clients",
        "24",
        "--rooms",
        "2",
        "--senders-per-room",
        "3",
        "--rate",
        "20",
        "--seconds",
        "1",
    ])
    .await;
    assert!(out.contains("cluster:   3 nodes"), "{out}");
    assert!(out.contains("clients per node 8 · 8 · 8"), "{out}");
    assert!(out.contains("refused 0"), "{out}");
    assert!(out.contains(", lost 0"), "{out}");
    // Latencies by hop as read, at the socket (the kernel's receive times: every
    // delivery got one) and of each message's first copy per node.
    for line in [
        "same node: p50",
        "cross:     p50",
        "hop:       cross-node minus same-node",
        "at socket: same node p50",
        "hop:       at the socket",
        "first copy: on the sender's node p50",
        "hop:       first copies",
    ] {
        assert!(out.contains(line), "`{line}` in:\n{out}");
    }
    // One publish per room message…
    let acknowledged = number_after(&out, "room messages acknowledged ");
    let published = number_after(&out, "published on NATS ");
    assert!(acknowledged > 0, "{out}");
    assert_eq!(published, acknowledged, "{out}");
    // … by the node that stored it (each node has senders)…
    let by_node: Vec<u64> = out
        .split("by node ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no publishes by node in:\n{out}"))
        .split(" · ")
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(by_node.len(), 3, "{out}");
    assert_eq!(by_node.iter().sum::<u64>(), published, "{out}");
    assert!(by_node.iter().all(|n| *n > 0), "{out}");
    // … and each node received every other node's once, 8 members or not.
    for (i, own) in by_node.iter().enumerate() {
        let node = i + 1;
        let received = number_after(&out, &format!("received:  node {node}: "));
        assert_eq!(received, published - own, "node {node}:\n{out}");
        assert!(out.contains(&format!("  node {node}:  CPU ")), "{out}");
    }
    assert!(
        out.contains("one publish per room message and one delivery per other node: yes"),
        "{out}"
    );
}

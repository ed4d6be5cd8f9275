//! Issue 12: `--log-format json` writes one JSON object per log line, for log collectors.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::*;

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let data = tempfile::TempDir::new().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args(["serve", "--no-console", "--log-format", "json"])
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .env("SALON_METRICS_LISTEN", "127.0.0.1:0")
        .env("SALON_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Up to the HTTP listener's line: the server is up.
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("log lines in time")
            .unwrap()
            .expect("the server is still logging");
        let done = line.contains("listening") && line.contains("HTTP");
        seen.push(line);
        if done {
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    while let Ok(Some(line)) = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the server ends its log")
    {
        seen.push(line);
    }
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "a graceful stop: {status}");
    assert!(seen.len() >= 3, "{seen:?}");
    for line in &seen {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["fields"]["message"].is_string(), "{line}");
    }
    let messages: Vec<&str> = seen
        .iter()
        .filter_map(|l| l.split("\"message\":\"").nth(1))
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("stopped")),
        "{messages:?}"
    );
}

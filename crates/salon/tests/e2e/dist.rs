//! Issue 12: the systemd unit in `dist/` passes `systemd-analyze verify` (when the
//! command exists) and keeps its hardening; `systemctl reload` (SIGHUP) never ends a
//! server, with or without TLS.

use std::path::Path;
use std::process::Stdio;

use crate::harness::*;

const UNIT: &str = include_str!("../../../../dist/salon.service");

#[test]
fn the_systemd_unit_is_hardened_and_passes_systemd_analyze_verify() {
    for line in [
        "ExecStart=/usr/local/bin/salon serve --no-console --config /etc/salon/salon.toml --data-dir /var/lib/salon",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=salon",
        "RuntimeDirectory=salon",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "Restart=on-failure",
        "LimitNOFILE=65536",
    ] {
        assert!(
            UNIT.lines().any(|l| l == line),
            "dist/salon.service lacks `{line}`"
        );
    }
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !analyze.map(|s| s.success()).unwrap_or(false) {
        eprintln!(
            "\n!!! SKIPPED: systemd-analyze is not installed; dist/salon.service was NOT \
             verified !!!\n"
        );
        return;
    }
    // The same unit, run the binary just built (verify wants an executable there).
    let dir = tempfile::TempDir::new().unwrap();
    let unit = dir.path().join("salon.service");
    let binary = env!("CARGO_BIN_EXE_salon");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/salon", binary)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Warnings (an unknown or misspelt key) do not change the exit status: any line
    // about our unit fails the test.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("salon.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

async fn healthz(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    raw.starts_with(b"HTTP/1.1 200")
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn sighup_without_tls_does_not_stop_the_server() {
    let data = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args(["serve", "--no-console", "--listen", "127.0.0.1:0"])
        .args(["--http-listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(Path::new(data.path()))
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .env("SALON_METRICS_LISTEN", "127.0.0.1:0")
        .env("SALON_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let every = std::time::Duration::from_millis(50);
    eventually("server never up", every, || healthz(port)).await;
    signal(pid, "HUP");
    signal(pid, "HUP");
    assert!(healthz(port).await, "still serving after SIGHUP");
    signal(pid, "TERM");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    // Killed by SIGHUP would be an exit by signal, with no code.
    assert_eq!(status.code(), Some(0), "{status}");
}

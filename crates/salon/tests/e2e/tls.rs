//! TLS on both listeners (issue 12), with certificates made by rcgen in the test: the
//! native protocol over TLS, WSS and HTTPS (HSTS), a plaintext client on a TLS port,
//! the redirecting listener, certificate reload with a connection kept open across it,
//! and a bad certificate file refused.

use std::path::Path;
use std::time::Duration;

use salon_client::{Client, TlsOptions};
use salon_proto::CloseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// A server with TLS from a certificate signed by `ca`, its files in `dir`.
async fn tls_server(
    ca: &TestCa,
    dir: &Path,
    tune: impl FnOnce(&mut salon_server::Config),
) -> TestServer {
    let (cert, key) = ca.write_into(dir);
    TestServer::start_with(|c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
        c.tls.reload_check_ms = 50;
        tune(c);
    })
    .await
}

fn trusting(dir: &Path, file: &str) -> TlsOptions {
    TlsOptions {
        ca_file: Some(dir.join(file)),
        server_name: Some("localhost".into()),
        insecure_skip_verify: false,
    }
}

/// Reads what the server sends until it closes (within `WAIT`).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("the server closes the connection")
        .expect("read");
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test]
async fn the_native_protocol_and_the_websocket_run_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Test CA");
    let server = tls_server(&ca, certs.path(), |_| {}).await;

    // Native protocol over TLS, and WSS, talk to each other.
    let (mut alice, _) = server.user("alice").await;
    server.register("bob").await;
    let bob = server.ws_client().await;
    bob.login("bob", PASSWORD).await.expect("login over WSS");
    bob.send("Général", "over wss")
        .await
        .expect("send over WSS");
    let text = expect_event(&mut alice, "bob's message", |e| room_text(e, "Général")).await;
    assert_eq!(text, "over wss");

    // A client that does not trust the CA is refused by its own verification.
    let other = TestCa::new("Other CA");
    std::fs::write(certs.path().join("other.pem"), other.pem()).unwrap();
    let err = Client::connect_tls(
        &server.tcp.to_string(),
        &trusting(certs.path(), "other.pem"),
    )
    .await
    .err()
    .expect("an untrusted certificate is refused");
    assert!(err.to_string().contains("TLS handshake"), "{err}");

    // HTTPS responses carry HSTS.
    let tls = server.client_tls.clone().unwrap();
    let mut stream = salon_client::tls_connect(&server.http.to_string(), &tls)
        .await
        .expect("HTTPS");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response")
        .ok();
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("strict-transport-security: max-age=31536000"),
        "{text}"
    );
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_port_is_told_and_closed() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Test CA");
    let server = tls_server(&ca, certs.path(), |c| {
        c.limits.tls_handshake_timeout_ms = 300;
    })
    .await;

    // JSON on the native port: one plaintext `closing` frame saying so, then closed.
    let mut raw = TcpStream::connect(server.tcp).await.unwrap();
    raw.write_all(b"{\"id\":1,\"cmd\":\"login\",\"args\":{}}\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut raw).await;
    let frame: serde_json::Value =
        serde_json::from_str(answer.trim()).expect("one JSON frame in plaintext");
    assert_eq!(frame["type"], "closing");
    assert_eq!(frame["code"], "tls_required");
    assert_eq!(
        serde_json::from_value::<CloseCode>(frame["code"].clone()).unwrap(),
        CloseCode::TlsRequired
    );

    // Plain HTTP on the HTTPS port: a 400 that says to use https.
    let mut raw = TcpStream::connect(server.http).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut raw).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("HTTPS"), "{answer}");

    // The client library waiting for a hello that never comes in plaintext: the server
    // closes at the handshake timeout, and the client gets an error rather than a hang.
    let result = tokio::time::timeout(WAIT, Client::connect_tcp(server.tcp)).await;
    assert!(
        matches!(result, Ok(Err(_))),
        "a plaintext client library connection fails"
    );
}

#[tokio::test]
async fn the_redirect_listener_sends_browsers_to_https() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Test CA");
    let server = tls_server(&ca, certs.path(), |c| {
        c.tls.redirect_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut raw = TcpStream::connect(server.redirect.unwrap()).await.unwrap();
    raw.write_all(
        b"GET /index.html?x=1 HTTP/1.1\r\nHost: chat.example:80\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut raw).await.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 308"), "{answer}");
    let location = format!(
        "location: https://chat.example:{}/index.html?x=1",
        server.http.port()
    );
    assert!(answer.contains(&location), "{answer}");
}

/// Waits until a new connection verifying with `file` as the only CA succeeds.
async fn until_served_by(server: &TestServer, dir: &Path, file: &str) {
    let what = format!("the server never served the certificate trusted by {file}");
    eventually(&what, Duration::from_millis(25), || async {
        Client::connect_tls(&server.tcp.to_string(), &trusting(dir, file))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_new_certificate_is_taken_without_dropping_connections_and_a_bad_one_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let first = TestCa::new("First CA");
    let server = tls_server(&first, certs.path(), |_| {}).await;
    std::fs::copy(certs.path().join("ca.pem"), certs.path().join("first.pem")).unwrap();
    let (mut alice, _) = server.user("alice").await;

    // A bad certificate file: refused, the old certificate stays. Several check
    // periods pass (the watcher reads the files every 50 ms).
    std::fs::write(certs.path().join("cert.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    Client::connect_tls(
        &server.tcp.to_string(),
        &trusting(certs.path(), "first.pem"),
    )
    .await
    .expect("the old certificate is still served after a bad file");
    // A key that does not match the certificate: refused too.
    let second = TestCa::new("Second CA");
    let (chain, _) = second.issue();
    std::fs::write(certs.path().join("cert.pem"), &chain).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    Client::connect_tls(
        &server.tcp.to_string(),
        &trusting(certs.path(), "first.pem"),
    )
    .await
    .expect("the old certificate is still served after a mismatched key");

    // A good new pair: new connections see it...
    let (chain, key) = second.issue();
    std::fs::write(certs.path().join("second.pem"), second.pem()).unwrap();
    std::fs::write(certs.path().join("key.pem"), key).unwrap();
    std::fs::write(certs.path().join("cert.pem"), chain).unwrap();
    until_served_by(&server, certs.path(), "second.pem").await;
    assert!(
        Client::connect_tls(
            &server.tcp.to_string(),
            &trusting(certs.path(), "first.pem")
        )
        .await
        .is_err(),
        "the old certificate is no longer served"
    );
    // ...and the connection opened before the reload still works.
    alice
        .send("Général", "still here")
        .await
        .expect("send after reload");
    let text = expect_event(&mut alice, "own message", |e| room_text(e, "Général")).await;
    assert_eq!(text, "still here");
}

#[tokio::test]
async fn the_self_signed_option_makes_a_certificate_clients_can_pin() {
    let server = TestServer::start_with(|c| {
        c.tls.self_signed = true;
        c.tls.hosts = vec!["localhost".into()];
    })
    .await;
    // The harness trusts data_dir/tls/self-signed.crt as its only CA.
    let (_alice, welcome) = server.user("alice").await;
    assert_eq!(welcome.account.username, "alice");
    let insecure = TlsOptions {
        insecure_skip_verify: true,
        ..TlsOptions::default()
    };
    Client::connect_tls(&server.tcp.to_string(), &insecure)
        .await
        .expect("skipping verification connects");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = server.data.path().join("tls").join("self-signed.key");
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the private key is the owner's only");
    }
}

#[tokio::test]
async fn salon_admin_works_over_tls_and_refuses_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Salon test CA");
    let server = tls_server(&ca, dir.path(), |_| {}).await;
    let admin = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"));
        cmd.arg("admin")
            .args(["--server", &format!("localhost:{}", server.tcp.port())])
            .arg("--tls")
            .args(extra)
            .arg("connected")
            .env("SALON_ADMIN_PASSWORD", PASSWORD);
        cmd
    };
    let ca_file = dir.path().join("ca.pem");
    succeeded(
        &admin(&["--ca-file", ca_file.to_str().unwrap()])
            .output()
            .await
            .unwrap(),
    );
    // Without the company's CA, the system roots do not know this certificate.
    let out = admin(&[]).output().await.unwrap();
    assert!(!out.status.success(), "an unknown certificate is refused");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_real_process() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestCa::new("First CA");
    let (cert, key) = first.write_into(dir.path());
    std::fs::copy(dir.path().join("ca.pem"), dir.path().join("first.pem")).unwrap();
    // The file watcher is slowed to an hour: only the signal can make it reload.
    let config = dir.path().join("salon.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nreload_check_ms = 3600000\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let (tcp, http) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salon"))
        .args(["serve", "--no-console", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{tcp}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .env("SALON_ADMIN_PASSWORD", PASSWORD)
        .env("SALON_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{tcp}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let kept = loop {
        match Client::connect_tls(&addr, &trusting(dir.path(), "first.pem")).await {
            Ok(c) => break c,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the server never answered over TLS: {e}"),
        }
    };
    // New files, then SIGHUP.
    let second = TestCa::new("Second CA");
    let (chain, key) = second.issue();
    std::fs::write(dir.path().join("second.pem"), second.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    std::fs::write(dir.path().join("cert.pem"), chain).unwrap();
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = tokio::time::Instant::now() + WAIT;
    while Client::connect_tls(&addr, &trusting(dir.path(), "second.pem"))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate is served after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kept.ping()
        .await
        .expect("the connection opened before is still up");
    child.kill().await.unwrap();
}

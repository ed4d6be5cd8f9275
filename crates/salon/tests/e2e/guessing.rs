//! Password guessing is slowed per account and address and capped per account, never
//! by locking the owner out; the server bounds the hashes it queues (issue 10, items 1–2).
//! Clients bind their own loopback addresses (127.0.0.2, 127.0.0.3…: all loopback on
//! Linux) to play guessers from many places; 127.0.0.1 over TCP is the server's own
//! machine, where the console and `salon admin` come from.

use std::net::SocketAddr;

use salon_client::{Client, ClientError};
use salon_proto::{args, ErrorBody, ErrorCode};

use crate::harness::*;

/// A client connecting from `127.0.0.<n>`.
pub(crate) async fn client_from(server: &TestServer, n: u8) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, n], 0)))
        .expect("bind a loopback source address");
    let stream = socket.connect(server.tcp).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    Client::connect_stream(stream).await.expect("hello")
}

fn body(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorBody {
    match r {
        Err(ClientError::Server(body)) => body,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// Registers `alice` with an alias that does not fold to her username.
async fn register_alice(server: &TestServer) {
    let c = server.client().await;
    c.register(args::Register {
        alias: "Wonderland".into(),
        ..registration("alice")
    })
    .await
    .expect("register");
}

const WRONG: &str = "not the password at all";

#[tokio::test]
async fn a_guessing_run_from_30_addresses_checks_at_most_the_budget_and_the_owner_logs_in() {
    const BUDGET: usize = 20;
    let server = TestServer::start_with(|c| {
        c.limits.login_failures_before_delay = 3;
        c.limits.login_failures_per_hour_per_account = BUDGET as u32;
    })
    .await;
    register_alice(&server).await;
    // The owner's usual workstation.
    client_from(&server, 40)
        .await
        .login("alice", PASSWORD)
        .await
        .expect("the owner logs in before the attack");

    // 30 addresses, 8 guesses each, by username, alias and other spellings of them.
    let spellings = ["alice", "Wonderland", "ALICE", "wonderland"];
    let guess_round = |rounds: usize| {
        let mut tasks = Vec::new();
        for n in 2..=31u8 {
            let server_tcp = server.tcp;
            tasks.push(tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::from(([127, 0, 0, n], 0))).unwrap();
                let stream = socket.connect(server_tcp).await.unwrap();
                let c = Client::connect_stream(stream).await.unwrap();
                let (mut checked, mut limited) = (0, 0);
                for round in 0..rounds {
                    let login = spellings[(n as usize + round) % spellings.len()];
                    let refused = body(c.login(login, WRONG).await);
                    match refused.code {
                        ErrorCode::InvalidCredentials => checked += 1,
                        ErrorCode::RateLimited => {
                            assert!(refused.retry_after_ms.is_some_and(|ms| ms > 0));
                            limited += 1;
                        }
                        other => panic!("unexpected {other:?}: {}", refused.message),
                    }
                }
                (checked, limited)
            }));
        }
        tasks
    };
    let (mut checked, mut limited) = (0, 0);
    for task in guess_round(4) {
        let (c, l) = task.await.unwrap();
        checked += c;
        limited += l;
    }
    // The run goes on while the owner logs in from the usual workstation.
    let second = guess_round(4);
    let owner = client_from(&server, 40).await;
    owner
        .login("alice", PASSWORD)
        .await
        .expect("the owner is not locked out");
    for task in second {
        let (c, l) = task.await.unwrap();
        checked += c;
        limited += l;
    }
    assert!(
        checked <= BUDGET,
        "{checked} guesses were checked, over the budget of {BUDGET}"
    );
    assert!(
        checked > 0 && limited > 0,
        "{checked} checked, {limited} limited"
    );
    assert_eq!(checked + limited, 30 * 8);

    // The console's and `salon admin`'s address has its own budget.
    server
        .client()
        .await
        .login("Wonderland", PASSWORD)
        .await
        .expect("a local login is not delayed by remote guessing");

    // A new address is delayed, not locked out: once the account's budget has room
    // again, the right password works from it.
    let refused = body(
        client_from(&server, 41)
            .await
            .login("alice", PASSWORD)
            .await,
    );
    assert_eq!(refused.code, ErrorCode::RateLimited, "{}", refused.message);
    let wait = refused.retry_after_ms.expect("retry_after_ms");
    assert!(wait <= 3_600_000 / BUDGET as u64, "{wait}");
    server.clock.advance_ms(wait as i64);
    client_from(&server, 41)
        .await
        .login("alice", PASSWORD)
        .await
        .expect("the owner logs in from a new address once the budget refills");
}

#[tokio::test]
async fn failures_from_one_address_delay_it_progressively_and_only_it() {
    let server = TestServer::start_with(|c| c.limits.login_failures_before_delay = 2).await;
    register_alice(&server).await;
    let guesser = client_from(&server, 2).await;
    for login in ["alice", "Wonderland"] {
        assert_eq!(
            body(guesser.login(login, WRONG).await).code,
            ErrorCode::InvalidCredentials
        );
    }
    // Username and alias are one account: the third guess, by either, waits 1 s.
    let refused = body(guesser.login("ALICE", WRONG).await);
    assert_eq!(refused.code, ErrorCode::RateLimited);
    assert_eq!(refused.retry_after_ms, Some(1_000));
    // Even the right password, from there, waits: it is not checked.
    let refused = body(guesser.login("alice", PASSWORD).await);
    assert_eq!(refused.retry_after_ms, Some(1_000));

    // The owner elsewhere is not delayed; neither is another account from there.
    client_from(&server, 3)
        .await
        .login("alice", PASSWORD)
        .await
        .unwrap();
    server.register("bob").await;
    assert_eq!(
        body(guesser.login("bob", WRONG).await).code,
        ErrorCode::InvalidCredentials
    );

    // Then 2 s, 4 s…
    server.clock.advance_ms(1_000);
    assert_eq!(
        body(guesser.login("alice", WRONG).await).code,
        ErrorCode::InvalidCredentials
    );
    assert_eq!(
        body(guesser.login("alice", WRONG).await).retry_after_ms,
        Some(2_000)
    );
    server.clock.advance_ms(2_000);
    assert_eq!(
        body(guesser.login("alice", WRONG).await).code,
        ErrorCode::InvalidCredentials
    );
    assert_eq!(
        body(guesser.login("alice", WRONG).await).retry_after_ms,
        Some(4_000)
    );
    // The right password after the wait logs in and forgets the failures.
    server.clock.advance_ms(4_000);
    client_from(&server, 2)
        .await
        .login("alice", PASSWORD)
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            body(client_from(&server, 2).await.login("alice", WRONG).await).code,
            ErrorCode::InvalidCredentials
        );
    }
}

#[tokio::test]
async fn unknown_logins_are_throttled_exactly_like_accounts() {
    let server = TestServer::start_with(|c| c.limits.login_failures_before_delay = 1).await;
    register_alice(&server).await;
    let guesser = client_from(&server, 2).await;
    let mut answers = Vec::new();
    for login in ["alice", "nobody-here"] {
        let first = body(guesser.login(login, WRONG).await);
        let second = body(guesser.login(login, WRONG).await);
        answers.push((
            first.code,
            second.code,
            second.message,
            second.retry_after_ms,
        ));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].1, ErrorCode::RateLimited);
}

#[tokio::test]
async fn change_password_guesses_are_throttled_per_account_and_address() {
    let server = TestServer::start_with(|c| c.limits.login_failures_before_delay = 2).await;
    register_alice(&server).await;
    server.register("bob").await;
    let stolen = client_from(&server, 2).await;
    stolen.login("alice", PASSWORD).await.unwrap();
    for _ in 0..2 {
        let refused = body(stolen.change_password(WRONG, "a brand new secret").await);
        assert_eq!(refused.code, ErrorCode::InvalidCredentials);
    }
    let refused = body(stolen.change_password(WRONG, "a brand new secret").await);
    assert_eq!(refused.code, ErrorCode::RateLimited);
    assert_eq!(refused.retry_after_ms, Some(1_000));
    // Another session of the account from that address shares the count, and so do
    // logins from there.
    let other = client_from(&server, 2).await;
    assert_eq!(
        body(other.login("alice", PASSWORD).await).code,
        ErrorCode::RateLimited
    );
    // Another account from the same address is not affected.
    let bob = client_from(&server, 2).await;
    bob.login("bob", PASSWORD).await.unwrap();
    bob.change_password(PASSWORD, "a brand new secret")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_full_hashing_queue_answers_rate_limited_at_once_but_not_to_local_sessions() {
    let server = TestServer::start_with(|c| c.limits.max_pending_password_hashes = 1).await;
    server.register("alice").await;
    let mut tasks = Vec::new();
    for n in 2..=25u8 {
        let tcp = server.tcp;
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from(([127, 0, 0, n], 0))).unwrap();
            let c = Client::connect_stream(socket.connect(tcp).await.unwrap())
                .await
                .unwrap();
            body(c.login(&format!("user{n}"), WRONG).await)
        }));
    }
    // A local session meanwhile (the console, `salon admin`) has slots of its own.
    server
        .client()
        .await
        .login("alice", PASSWORD)
        .await
        .expect("a local login is not refused for a busy queue");
    let mut busy = 0;
    for task in tasks {
        let refused = task.await.unwrap();
        match refused.code {
            ErrorCode::InvalidCredentials => {}
            ErrorCode::RateLimited => {
                busy += 1;
                assert!(refused.message.contains("busy"), "{}", refused.message);
                assert!(refused.retry_after_ms.is_some_and(|ms| ms > 0));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(busy > 0, "24 logins at once never found the one slot taken");
}

#[tokio::test]
async fn names_compare_exactly_so_surrounding_spaces_name_no_account() {
    let server = TestServer::start().await;
    server.register("injuser").await;
    let (bob, _) = server.user("bob").await;
    for spelling in ["injuser   ", " injuser", "Injuser\t"] {
        assert_eq!(
            server.login_refused(spelling, PASSWORD).await,
            Some(ErrorCode::InvalidCredentials),
            "{spelling:?} logged in"
        );
    }
    // Names given to other commands are looked up exactly too (on MariaDB through a
    // NO PAD collation of the key columns).
    assert_eq!(
        body(bob.direct("injuser   ", "hello").await).code,
        ErrorCode::NoSuchUser
    );
    assert_eq!(
        body(bob.create_channel("Spaces", &["injuser  "]).await).code,
        ErrorCode::NoSuchUser
    );
    bob.direct("injuser", "hello").await.unwrap();
}

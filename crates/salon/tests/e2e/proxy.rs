//! A TCP proxy that can cut every connection through it and refuse new ones, then let
//! them through again: a database or NATS going away (`database.rs`, `cluster.rs`).
//! For the database it can also act on the COMMIT of a marked message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the connection that carries a marked message, once it forwards
/// that transaction's COMMIT to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtCommit {
    /// Cut that connection: the database got the COMMIT, its answer is lost.
    Cut,
    /// A partition starts: nothing passes any more, on any connection, and new ones hang,
    /// until `heal`. That connection is then cut.
    Partition,
}

/// The marker of the message whose COMMIT the proxy acts on, and how.
type Armed = Arc<Mutex<Option<(Vec<u8>, AtCommit)>>>;

#[derive(Debug, Clone, Copy, Default)]
struct ProxyState {
    /// New connections are dropped.
    refusing: bool,
    /// Nothing is forwarded; new connections wait.
    partitioned: bool,
    /// Bumped by `cut`: connections of an older generation end.
    generation: u64,
}

/// A TCP proxy in front of the database that can cut every connection and refuse new
/// ones, let them through again, or act on the COMMIT of a marked message.
pub struct CuttableProxy {
    pub addr: SocketAddr,
    state: Arc<watch::Sender<ProxyState>>,
    armed: Armed,
    triggered: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl CuttableProxy {
    pub async fn start(target: SocketAddr) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(watch::Sender::new(ProxyState::default()));
        let armed: Armed = Default::default();
        let triggered = Arc::new(AtomicBool::new(false));
        let accept = tokio::spawn({
            let (state, armed, triggered) = (state.clone(), armed.clone(), triggered.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if state.borrow().refusing {
                        continue; // dropped: connection refused in effect
                    }
                    tokio::spawn(link(
                        inbound,
                        target,
                        state.subscribe(),
                        state.clone(),
                        armed.clone(),
                        triggered.clone(),
                    ));
                }
            }
        });
        CuttableProxy {
            addr,
            state,
            armed,
            triggered,
            accept,
        }
    }

    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.refusing = true;
            s.generation += 1;
        });
    }

    pub fn restore(&self) {
        self.state.send_modify(|s| s.refusing = false);
    }

    /// The next COMMIT of the transaction that stores a message containing `marker`.
    pub fn arm(&self, marker: &str, action: AtCommit) {
        *self.armed.lock().unwrap() = Some((marker.as_bytes().to_vec(), action));
    }

    pub fn triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Nothing passes any more, on any connection (they stay open), until `heal`: a
    /// link that is slow rather than gone.
    pub fn partition(&self) {
        self.state.send_modify(|s| s.partitioned = true);
    }

    pub fn heal(&self) {
        self.state.send_modify(|s| s.partitioned = false);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Forwards one connection both ways, as the proxy's state allows.
async fn link(
    inbound: TcpStream,
    target: SocketAddr,
    mut state: watch::Receiver<ProxyState>,
    control: Arc<watch::Sender<ProxyState>>,
    armed: Armed,
    triggered: Arc<AtomicBool>,
) {
    let generation = state.borrow().generation;
    let alive = |s: &ProxyState| s.generation == generation;
    if state
        .wait_for(|s| !s.partitioned || !alive(s))
        .await
        .map_or(true, |s| !alive(&s))
    {
        return;
    }
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_in, mut client_out) = inbound.into_split();
    let (mut db_in, mut db_out) = outbound.into_split();
    let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
    // This connection carried the marked message; the next COMMIT is the one.
    let mut marked: Option<AtCommit> = None;
    // Its COMMIT went through when the partition started: cut at heal.
    let mut doomed = false;
    loop {
        let now = *state.borrow_and_update();
        if !alive(&now) {
            return;
        }
        if now.partitioned {
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        if doomed {
            return;
        }
        tokio::select! {
            read = client_in.read(&mut up) => {
                let Ok(n) = read else { return };
                if n == 0 {
                    let _ = db_out.shutdown().await;
                    return;
                }
                let chunk = &up[..n];
                if marked.is_none() {
                    let lock = armed.lock().unwrap();
                    if let Some((marker, action)) = lock.as_ref() {
                        if contains(chunk, marker) {
                            marked = Some(*action);
                        }
                    }
                }
                let commit = marked.is_some() && contains(chunk, b"COMMIT");
                if db_out.write_all(chunk).await.is_err() {
                    return;
                }
                if commit && armed.lock().unwrap().take().is_some() {
                    triggered.store(true, Ordering::SeqCst);
                    match marked {
                        Some(AtCommit::Cut) => return,
                        _ => {
                            doomed = true;
                            control.send_modify(|s| s.partitioned = true);
                        }
                    }
                }
            }
            read = db_in.read(&mut down) => {
                let Ok(n) = read else { return };
                if n == 0 {
                    let _ = client_out.shutdown().await;
                    return;
                }
                if client_out.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

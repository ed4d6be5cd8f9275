//! The protocol seam end to end inside one server: sessions of two wire formats (test
//! protocols) in one room, served by the real session loop, service, message writer and
//! bus. A message posted once reaches every session in its own format, and each format
//! encodes it once, however many of its sessions receive it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use salon_proto::{CloseCode, ErrorBody, Event, Hello, Reply, Request, Transport};
use tokio_util::sync::CancellationToken;

use super::native::NATIVE;
use super::{DecodeFailure, Protocol, WireFormat};
use crate::clock::ManualClock;
use crate::ids::IdGenerator;
use crate::live::{Bus, Directory, Live, LocalBus};
use crate::service::Service;
use crate::session::{self, FrameWriter, Inbound};
use crate::store::Store;

/// A test protocol: the native protocol's frames behind a prefix naming the format, and
/// a count of the room messages it encoded.
#[derive(Debug)]
struct Tagged {
    slot: usize,
    tag: &'static str,
    messages_encoded: AtomicUsize,
}

impl Tagged {
    fn tagged(&self, native: Bytes) -> Bytes {
        Bytes::from([self.tag.as_bytes(), &native].concat())
    }
}

impl WireFormat for Tagged {
    fn slot(&self) -> usize {
        self.slot
    }
    fn encode_hello(&self, hello: &Hello) -> Bytes {
        self.tagged(NATIVE.encode_hello(hello))
    }
    fn encode_reply(&self, re: u64, reply: &Reply) -> Bytes {
        self.tagged(NATIVE.encode_reply(re, reply))
    }
    fn encode_error(&self, re: Option<u64>, error: &ErrorBody) -> Bytes {
        self.tagged(NATIVE.encode_error(re, error))
    }
    fn encode_event(&self, event: &Event) -> Bytes {
        if matches!(event, Event::Message(_)) {
            self.messages_encoded.fetch_add(1, Ordering::SeqCst);
        }
        self.tagged(NATIVE.encode_event(event))
    }
    fn encode_closing(&self, code: CloseCode, message: &str, until: Option<i64>) -> Bytes {
        self.tagged(NATIVE.encode_closing(code, message, until))
    }
    fn probe(&self) -> Bytes {
        self.tagged(NATIVE.probe())
    }
    fn is_probe(&self, frame: &[u8]) -> bool {
        frame.strip_prefix(self.tag.as_bytes()) == Some(NATIVE.probe().as_ref())
    }
}

impl Protocol for Tagged {
    fn decode(&self, frame: &[u8]) -> Result<Request, DecodeFailure> {
        NATIVE.decode(frame)
    }
}

static ALPHA: Tagged = Tagged {
    slot: 2,
    tag: "alpha ",
    messages_encoded: AtomicUsize::new(0),
};
static BETA: Tagged = Tagged {
    slot: 3,
    tag: "beta ",
    messages_encoded: AtomicUsize::new(0),
};

/// Collects what a session writes.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Bytes>>>);

impl FrameWriter for Collected {
    async fn write_frames(&mut self, frames: &[Bytes]) -> std::io::Result<()> {
        crate::lock(&self.0).extend_from_slice(frames);
        Ok(())
    }
    async fn close(&mut self, _reason: Option<&crate::live::CloseReason>) {}
}

impl Collected {
    fn frames(&self) -> Vec<Bytes> {
        crate::lock(&self.0).clone()
    }
}

/// A session of `protocol` driven by the test: frames to send, frames written.
struct TestSession {
    send: tokio::sync::mpsc::UnboundedSender<Inbound>,
    written: Collected,
}

fn open<P: Protocol>(protocol: &'static P, service: &Arc<Service>) -> TestSession {
    let (send, rx) = tokio::sync::mpsc::unbounded_channel();
    let inbound = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed();
    let written = Collected::default();
    tokio::spawn(session::run(
        protocol,
        service.clone(),
        SocketAddr::from(([127, 0, 0, 1], 9)),
        Transport::Tcp,
        inbound,
        written.clone(),
        CancellationToken::new(),
    ));
    TestSession { send, written }
}

impl TestSession {
    fn request(&self, line: &str) {
        let _ = self
            .send
            .send(Inbound::Frame(Bytes::from(line.as_bytes().to_vec())));
    }

    /// Waits until a written frame contains `needle`.
    async fn wait_for(&self, needle: &str) -> Bytes {
        for _ in 0..500 {
            let found = self
                .written
                .frames()
                .into_iter()
                .find(|f| String::from_utf8_lossy(f).contains(needle));
            if let Some(frame) = found {
                return frame;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no frame with {needle:?} in {:?}", self.written.frames());
    }
}

#[tokio::test]
async fn an_event_is_encoded_once_per_protocol_for_every_session_in_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut tokens = Vec::new();
    for (id, name) in [(1001, "ann"), (1002, "bea"), (1003, "cid")] {
        store
            .create_user(&crate::store::tests::user(id, name))
            .await
            .unwrap();
        let (token, hash) = crate::accounts::new_session_token();
        store
            .create_session_token(&hash, id, 0, i64::MAX)
            .await
            .unwrap();
        tokens.push(token);
    }
    let mut directory = Directory::default();
    for room in store.rooms().await.unwrap() {
        directory.insert(room);
    }
    let live = Arc::new(Live::new(directory, 0));
    let bus: Arc<dyn Bus> = Arc::new(LocalBus::new(live.clone()));
    let ids = Arc::new(IdGenerator::new(0));
    let config = crate::Config {
        data_dir: dir.path().to_owned(),
        ..crate::Config::default()
    };
    let (persist, writer) = crate::persist::channel(
        64,
        64,
        Duration::ZERO,
        store.clone(),
        bus.clone(),
        ids.clone(),
        clock.clone(),
    );
    let stop_writer = CancellationToken::new();
    tokio::spawn(writer.run(stop_writer.clone()));
    let service = Arc::new(Service::new(
        Arc::new(config),
        store,
        live,
        bus,
        persist,
        clock,
        ids,
    ));

    // Two sessions read alpha, one reads beta; all three are members of Général.
    let sessions = [
        open(&ALPHA, &service),
        open(&ALPHA, &service),
        open(&BETA, &service),
    ];
    for (session, token) in sessions.iter().zip(&tokens) {
        session.request(&format!(
            r#"{{"id":1,"cmd":"resume","args":{{"token":"{token}"}}}}"#
        ));
        session.wait_for(r#""re":1"#).await;
    }
    sessions[0].request(r#"{"id":2,"cmd":"send","args":{"room":"Général","text":"once"}}"#);
    sessions[0].wait_for(r#""re":2"#).await;

    for (session, tag) in sessions.iter().zip(["alpha ", "alpha ", "beta "]) {
        let frame = session.wait_for(r#""text":"once""#).await;
        assert!(frame.starts_with(tag.as_bytes()), "{frame:?}");
        let hello = &session.written.frames()[0];
        assert!(hello.starts_with(tag.as_bytes()), "{hello:?}");
    }
    assert_eq!(ALPHA.messages_encoded.load(Ordering::SeqCst), 1);
    assert_eq!(BETA.messages_encoded.load(Ordering::SeqCst), 1);
    stop_writer.cancel();
}

//! Async client library for Salon's native protocol, over TCP or WebSocket.
//!
//! Used by the integration tests, the server console, `salon admin` and the load
//! generator. Every command has a typed method, built on [`Client::call`], whose argument
//! and reply types come from the protocol's command table. One reader task matches
//! replies to requests by id and queues pushed events; one writer task owns the write
//! side. Both end when the connection closes.
//!
//! The server closes a logged-in session it hears nothing from (`idle_timeout`); the
//! library answers its keep-alive probes by itself (the `ping` event on TCP, Ping frames
//! on WebSocket), so a client is never cut while it is alive and reading.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use salon_proto::{
    args, cmd, reply, Accepted, Account, AccountRequest, AuditEntry, Call, CloseCode, Command,
    Conversation, DirectMessage, ErrorBody, Event, Hello, HistoryPage, InviteInfo, JoinRequest,
    NotifyLevel, ReadState, Reply, Request, RoomInfo, RoomMessage, SanctionInfo, ServerFrame,
    SessionInfo, Status, UserPresence, Welcome,
};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};

/// Largest frame the client reads (history pages can be large).
const MAX_INBOUND_FRAME: usize = 64 * 1024 * 1024;
/// Events waiting to be taken with [`Client::next_event`]; when full, the client stops
/// reading — and the server eventually disconnects it as a slow consumer, which is what
/// an application that never takes its events deserves, rather than unbounded memory.
const EVENT_QUEUE: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("websocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The server answered with an error.
    #[error("{0}")]
    Server(ErrorBody),
    /// The connection is closed; the server's reason, if it gave one.
    #[error("connection closed{}", .0.as_ref().map(|(c, m)| format!(" ({c:?}: {m})")).unwrap_or_default())]
    Closed(Option<(CloseCode, String)>),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if this is a server error.
    pub fn code(&self) -> Option<salon_proto::ErrorCode> {
        match self {
            ClientError::Server(body) => Some(body.code),
            _ => None,
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// What the server pushes without being asked.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly everything pushed is an event; boxing it would cost an allocation \
              each and change every caller's patterns"
)]
pub enum Incoming {
    Event(Event),
    /// An error not tied to a request (a frame that was not a request at all).
    Error(ErrorBody),
    /// The server is closing the connection, and why (`until`: when a kick ends).
    Closing {
        code: CloseCode,
        message: String,
        until: Option<i64>,
    },
}

/// Requests waiting for their reply; `None` once the connection is closed (a request
/// made then fails at once instead of waiting for a reply that cannot come).
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Result<serde_json::Value>>>>>>;

/// How many times [`Client::send`] and [`Client::direct`] try a message the server
/// answered `unavailable`, by default (the first attempt included).
pub const DEFAULT_SEND_ATTEMPTS: u32 = 5;
/// The pause before the first retry; it doubles at each further retry (with jitter).
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A fresh idempotency key: 128 random bits in hex (32 characters, within the protocol's
/// rule for `key`).
pub fn new_message_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub struct Client {
    hello: Hello,
    next_id: Arc<AtomicU64>,
    send_attempts: AtomicU32,
    pending: Pending,
    closing: Arc<Mutex<Option<(CloseCode, String)>>>,
    out: mpsc::Sender<Outgoing>,
    events: mpsc::Receiver<Incoming>,
}

enum Outgoing {
    Frame(Vec<u8>),
    Raw(Vec<u8>),
    Close,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Connects over TCP (`host:port`) and waits for the server's `hello`.
    pub async fn connect_tcp(addr: impl tokio::net::ToSocketAddrs) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Client::connect_stream(stream).await
    }

    /// Speaks the line protocol over any byte stream (e.g. the server console's
    /// in-process pipe) and waits for the server's `hello`.
    pub async fn connect_stream<S>(stream: S) -> Result<Client>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let (read, mut write) = tokio::io::split(stream);
        let codec =
            AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_INBOUND_FRAME);
        let reader = FramedRead::new(read, codec)
            .map(|r| r.map_err(|e| ClientError::Protocol(e.to_string())))
            .boxed();
        let (tx, mut rx) = mpsc::channel::<Outgoing>(1024);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Some(item) = rx.recv().await {
                let result = match item {
                    Outgoing::Frame(bytes) | Outgoing::Raw(bytes) => write.write_all(&bytes).await,
                    Outgoing::Close => break,
                };
                if result.is_err() {
                    break;
                }
            }
            let _ = write.shutdown().await;
        });
        Client::start(reader, tx).await
    }

    /// Connects over TLS (`host:port`), verifying the server's certificate as `tls`
    /// says, and waits for the server's `hello`. The name checked against the
    /// certificate is `host` (a DNS name or an IP address).
    pub async fn connect_tls(addr: &str, tls: &TlsOptions) -> Result<Client> {
        let stream = tls_connect(addr, tls).await?;
        Client::connect_stream(stream).await
    }

    /// Connects over WebSocket (`ws://host:port/ws`) and waits for the server's `hello`.
    /// A `wss://` URL is verified against the system's roots.
    pub async fn connect_ws(url: &str) -> Result<Client> {
        Client::connect_ws_with(url, &TlsOptions::default()).await
    }

    /// Connects over WebSocket (`ws://…` or `wss://…`, TLS verified as `tls` says) and
    /// waits for the server's `hello`.
    pub async fn connect_ws_with(url: &str, tls: &TlsOptions) -> Result<Client> {
        if let Some(rest) = url.strip_prefix("wss://") {
            let authority = rest.split('/').next().unwrap_or(rest);
            let has_port = authority
                .rsplit_once(':')
                .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                && !authority.ends_with(']');
            let addr = if has_port {
                authority.to_owned()
            } else {
                format!("{authority}:443")
            };
            let stream = tls_connect(&addr, tls).await?;
            let (socket, _response) = tokio_tungstenite::client_async(url, stream).await?;
            Client::start_ws(socket).await
        } else {
            let (socket, _response) = tokio_tungstenite::connect_async(url).await?;
            Client::start_ws(socket).await
        }
    }

    async fn start_ws<S>(socket: tokio_tungstenite::WebSocketStream<S>) -> Result<Client>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, stream) = socket.split();
        let reader = stream
            .filter_map(|msg| async move {
                match msg {
                    Ok(Message::Text(text)) => Some(Ok(Bytes::from(text))),
                    Ok(Message::Binary(data)) => Some(Ok(data)),
                    Ok(Message::Close(_)) => None,
                    Ok(_) => None,
                    Err(e) => Some(Err(ClientError::from(e))),
                }
            })
            .boxed();
        let (tx, mut rx) = mpsc::channel::<Outgoing>(1024);
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let result = match item {
                    Outgoing::Frame(mut bytes) => {
                        bytes.pop(); // the newline: WebSocket frames itself
                        match String::from_utf8(bytes) {
                            Ok(text) => sink.send(Message::text(text)).await,
                            Err(e) => sink.send(Message::binary(e.into_bytes())).await,
                        }
                    }
                    Outgoing::Raw(bytes) => match String::from_utf8(bytes) {
                        Ok(text) => sink.send(Message::text(text)).await,
                        Err(e) => sink.send(Message::binary(e.into_bytes())).await,
                    },
                    Outgoing::Close => break,
                };
                if result.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        Client::start(reader, tx).await
    }

    async fn start(
        mut reader: BoxStream<'static, Result<Bytes>>,
        out: mpsc::Sender<Outgoing>,
    ) -> Result<Client> {
        let first = reader.next().await.ok_or(ClientError::Closed(None))??;
        let hello = match serde_json::from_slice::<ServerFrame>(&first) {
            Ok(ServerFrame::Hello(hello)) => hello,
            Ok(ServerFrame::Closing { code, message, .. }) => {
                return Err(ClientError::Closed(Some((code, message))))
            }
            Ok(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected hello, got {other:?}"
                )))
            }
            Err(e) => return Err(ClientError::Protocol(e.to_string())),
        };
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let closing = Arc::new(Mutex::new(None));
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let next_id = Arc::new(AtomicU64::new(1));
        let (acks_tx, acks_rx) = mpsc::channel(EVENT_QUEUE);
        // Weak: dropping the `Client` must still close the connection.
        tokio::spawn(ack_loop(acks_rx, next_id.clone(), out.downgrade()));
        tokio::spawn(read_loop(
            reader,
            pending.clone(),
            closing.clone(),
            events_tx,
            KeepAlive {
                // Weak: dropping the `Client` must still end the writer (and close).
                out: out.downgrade(),
                next_id: next_id.clone(),
            },
            acks_tx,
        ));
        Ok(Client {
            hello,
            next_id,
            send_attempts: AtomicU32::new(DEFAULT_SEND_ATTEMPTS),
            pending,
            closing,
            out,
            events,
        })
    }

    /// The server's `hello`: protocol version and limits.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Sends a command and waits for its reply's `data`.
    pub async fn request(&self, command: Command) -> Result<serde_json::Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(waiting) => waiting.insert(id, tx),
            None => return Err(self.closed_error()),
        };
        let line = Request { id, command }.to_line();
        if self.out.send(Outgoing::Frame(line)).await.is_err() {
            if let Some(waiting) = lock(&self.pending).as_mut() {
                waiting.remove(&id);
            }
            return Err(self.closed_error());
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Calls command `C` and decodes its reply as the type the command table declares:
    /// `client.call::<cmd::Kick>(args::Kick { … })` returns a [`reply::Kicked`].
    pub async fn call<C: Call>(&self, args: C::Args) -> Result<C::Reply> {
        self.request_as(C::command(args)).await
    }

    /// Sends any command and decodes its reply as the type the command table declares
    /// for it (for callers that choose the command at run time, such as `salon admin`).
    pub async fn execute(&self, command: Command) -> Result<Reply> {
        let name = command.name();
        let data = self.request(command).await?;
        Reply::decode(name, data).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends a command and decodes the reply's `data` as `T`.
    async fn request_as<T: DeserializeOwned>(&self, command: Command) -> Result<T> {
        let data = self.request(command).await?;
        serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Writes raw bytes to the connection (tests of malformed input).
    pub async fn send_raw(&self, bytes: impl Into<Vec<u8>>) -> Result<()> {
        self.out
            .send(Outgoing::Raw(bytes.into()))
            .await
            .map_err(|_| self.closed_error())
    }

    /// The next pushed event, or `None` once the connection is closed and drained.
    pub async fn next_event(&mut self) -> Option<Incoming> {
        self.events.recv().await
    }

    /// Takes the stream of pushed events, to consume them in another task while this
    /// client keeps sending requests. [`Client::next_event`] then returns `None`.
    pub fn take_events(&mut self) -> mpsc::Receiver<Incoming> {
        let (_, closed) = mpsc::channel(1);
        std::mem::replace(&mut self.events, closed)
    }

    /// The next pushed event within `timeout`.
    pub async fn event_within(&mut self, timeout: Duration) -> Option<Incoming> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Closes the connection from this side.
    pub async fn close(&self) {
        let _ = self.out.send(Outgoing::Close).await;
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(lock(&self.closing).clone())
    }

    // ----- typed commands -------------------------------------------------------------

    pub async fn ping(&self) -> Result<()> {
        self.call::<cmd::Ping>(args::Empty {}).await.map(drop)
    }

    pub async fn register(&self, a: args::Register) -> Result<Account> {
        self.call::<cmd::Register>(a).await
    }

    /// Logs in. Private messages are acknowledged to the server as they arrive
    /// (`ack_directs`), so they are recorded as delivered only once this client has them.
    pub async fn login(&self, login: &str, password: &str) -> Result<Welcome> {
        self.login_with(args::Login {
            login: login.into(),
            password: password.into(),
            presence: None,
        })
        .await
    }

    /// `login` with every option, e.g. `presence: Some(false)` for a tool or a bot whose
    /// session must not make its user appear online or offline.
    pub async fn login_with(&self, a: args::Login) -> Result<Welcome> {
        self.call::<cmd::Login>(a).await
    }

    pub async fn resume(&self, token: &str) -> Result<Welcome> {
        self.call::<cmd::Resume>(args::Resume {
            token: token.into(),
            presence: None,
        })
        .await
    }

    pub async fn logout(&self) -> Result<()> {
        self.call::<cmd::Logout>(args::Empty {}).await.map(drop)
    }

    pub async fn change_password(&self, old: &str, new: &str) -> Result<()> {
        self.call::<cmd::ChangePassword>(args::ChangePassword {
            old_password: old.into(),
            new_password: new.into(),
        })
        .await
        .map(drop)
    }

    pub async fn rooms(&self) -> Result<Vec<RoomInfo>> {
        Ok(self.call::<cmd::Rooms>(args::Empty {}).await?.rooms)
    }

    pub async fn join(&self, room: &str) -> Result<RoomInfo> {
        let a = args::Room { room: room.into() };
        Ok(self.call::<cmd::Join>(a).await?.room)
    }

    pub async fn leave(&self, room: &str) -> Result<RoomInfo> {
        let a = args::Room { room: room.into() };
        Ok(self.call::<cmd::Leave>(a).await?.room)
    }

    /// Posts in a room. The message gets a fresh idempotency key, and is sent again with
    /// it while the server answers `unavailable` (up to [`Client::set_send_attempts`]
    /// tries, pausing longer each time): it is stored once, and the reply is the stored
    /// message's id and time.
    pub async fn send(&self, room: &str, text: &str) -> Result<Accepted> {
        self.send_with_key(room, text, &new_message_key()).await
    }

    /// [`Client::send`] with a key chosen by the caller: to retry, after a reconnect, a
    /// message whose reply was lost or `unavailable`.
    pub async fn send_with_key(&self, room: &str, text: &str, key: &str) -> Result<Accepted> {
        self.retrying::<cmd::Send>(|| args::Send {
            room: room.into(),
            text: text.into(),
            key: Some(key.into()),
            reply_to: None,
            attachments: Vec::new(),
        })
        .await
    }

    /// Posts in a room in reply to message `to` (of the same room); keyed and retried as
    /// [`Client::send`].
    pub async fn reply(&self, room: &str, to: i64, text: &str) -> Result<Accepted> {
        let key = new_message_key();
        self.retrying::<cmd::Send>(|| args::Send {
            room: room.into(),
            text: text.into(),
            key: Some(key.clone()),
            reply_to: Some(to),
            attachments: Vec::new(),
        })
        .await
    }

    /// Sends a private message in reply to message `reply_to` of the same conversation.
    pub async fn direct_reply(&self, to: &str, reply_to: i64, text: &str) -> Result<Accepted> {
        let key = new_message_key();
        self.retrying::<cmd::Direct>(|| args::Direct {
            to: to.into(),
            text: text.into(),
            key: Some(key.clone()),
            reply_to: Some(reply_to),
            attachments: Vec::new(),
        })
        .await
    }

    /// Replaces the text of one's own message.
    pub async fn edit(&self, id: i64, text: &str) -> Result<reply::Edited> {
        self.call::<cmd::Edit>(args::Edit {
            id,
            text: text.into(),
        })
        .await
    }

    /// Deletes a message (one's own; an administrator's: anyone's, with a reason).
    pub async fn delete(&self, id: i64, reason: Option<&str>) -> Result<()> {
        self.call::<cmd::Delete>(args::Delete {
            id,
            reason: reason.map(Into::into),
        })
        .await
        .map(drop)
    }

    /// Reacts to a message with an emoji.
    pub async fn react(&self, id: i64, emoji: &str) -> Result<()> {
        let a = args::React {
            id,
            emoji: emoji.into(),
        };
        self.call::<cmd::React>(a).await.map(drop)
    }

    /// Takes a reaction back.
    pub async fn unreact(&self, id: i64, emoji: &str) -> Result<()> {
        let a = args::React {
            id,
            emoji: emoji.into(),
        };
        self.call::<cmd::Unreact>(a).await.map(drop)
    }

    /// A message and a page of its replies.
    pub async fn thread(
        &self,
        id: i64,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<reply::Thread> {
        self.call::<cmd::Thread>(args::Thread { id, before, limit })
            .await
    }

    /// Searches what the user can read; `a.query` is the words (each matched as a word
    /// prefix, all required). Pass the reply's `next` as `a.cursor` for the next page.
    pub async fn search(&self, a: args::Search) -> Result<reply::Search> {
        self.call::<cmd::Search>(a).await
    }

    /// Searches everything the user can read for `query`, newest first (first page).
    pub async fn search_text(&self, query: &str) -> Result<reply::Search> {
        self.search(args::Search {
            query: query.into(),
            ..args::Search::default()
        })
        .await
    }

    /// Marks a room read up to message `id`.
    pub async fn mark_room_read(&self, room: &str, id: i64) -> Result<ReadState> {
        self.call::<cmd::MarkRead>(args::MarkRead {
            room: Some(room.into()),
            with: None,
            id,
        })
        .await
    }

    /// Marks the conversation with `user` read up to message `id`.
    pub async fn mark_direct_read(&self, user: &str, id: i64) -> Result<ReadState> {
        self.call::<cmd::MarkRead>(args::MarkRead {
            room: None,
            with: Some(user.into()),
            id,
        })
        .await
    }

    /// Chooses how much a room notifies.
    pub async fn set_notify(&self, room: &str, level: NotifyLevel) -> Result<ReadState> {
        self.call::<cmd::SetNotify>(args::SetNotify {
            room: room.into(),
            level,
        })
        .await
    }

    /// The members of a room, with their status.
    pub async fn members(&self, room: &str) -> Result<Vec<UserPresence>> {
        let a = args::Room { room: room.into() };
        Ok(self.call::<cmd::Members>(a).await?.users)
    }

    /// Posts in a room with files attached (ids from `POST /api/files`, uploaded by this
    /// user); `text` may then be empty. Keyed and retried as [`Client::send`].
    pub async fn send_files(&self, room: &str, text: &str, files: &[i64]) -> Result<Accepted> {
        let key = new_message_key();
        self.retrying::<cmd::Send>(|| args::Send {
            room: room.into(),
            text: text.into(),
            key: Some(key.clone()),
            reply_to: None,
            attachments: files.to_vec(),
        })
        .await
    }

    /// Sends a private message with files attached; as [`Client::send_files`].
    pub async fn direct_files(&self, to: &str, text: &str, files: &[i64]) -> Result<Accepted> {
        let key = new_message_key();
        self.retrying::<cmd::Direct>(|| args::Direct {
            to: to.into(),
            text: text.into(),
            key: Some(key.clone()),
            reply_to: None,
            attachments: files.to_vec(),
        })
        .await
    }

    /// Sends a private message; keyed and retried as [`Client::send`].
    pub async fn direct(&self, to: &str, text: &str) -> Result<Accepted> {
        self.direct_with_key(to, text, &new_message_key()).await
    }

    /// [`Client::direct`] with a key chosen by the caller.
    pub async fn direct_with_key(&self, to: &str, text: &str, key: &str) -> Result<Accepted> {
        self.retrying::<cmd::Direct>(|| args::Direct {
            to: to.into(),
            text: text.into(),
            key: Some(key.into()),
            reply_to: None,
            attachments: Vec::new(),
        })
        .await
    }

    /// Acknowledges private messages by id. The client does so by itself for every
    /// `direct` event it reads; this is for tools and tests.
    pub async fn ack_directs(&self, ids: &[i64]) -> Result<()> {
        let a = args::AckDirects { ids: ids.to_vec() };
        self.call::<cmd::AckDirects>(a).await.map(drop)
    }

    /// How many times a message is tried while the server answers `unavailable` (at least
    /// 1: no retry). Default [`DEFAULT_SEND_ATTEMPTS`].
    pub fn set_send_attempts(&self, attempts: u32) {
        self.send_attempts.store(attempts.max(1), Ordering::Relaxed);
    }

    async fn retrying<C: Call>(&self, args: impl Fn() -> C::Args) -> Result<C::Reply> {
        let attempts = self.send_attempts.load(Ordering::Relaxed).max(1);
        let mut pause = FIRST_RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            match self.call::<C>(args()).await {
                Err(e)
                    if e.code() == Some(salon_proto::ErrorCode::Unavailable)
                        && attempt < attempts =>
                {
                    // Jitter, so that clients cut by the same outage do not all come back
                    // at the same instant.
                    let jitter = rand::random::<f64>() * 0.5 + 0.5;
                    tokio::time::sleep(pause.mul_f64(jitter)).await;
                    pause *= 2;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// A page of a room's history. (Decoded as room messages: the generic
    /// [`reply::History`] cannot tell an empty room page from an empty conversation page.)
    pub async fn room_history(
        &self,
        room: &str,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage<RoomMessage>> {
        self.request_as(Command::History(args::History {
            room: Some(room.into()),
            with: None,
            before,
            after: None,
            limit,
        }))
        .await
    }

    /// The page of a room's history just after message `after`, oldest first.
    pub async fn room_history_after(
        &self,
        room: &str,
        after: i64,
        limit: Option<u32>,
    ) -> Result<HistoryPage<RoomMessage>> {
        self.request_as(Command::History(args::History {
            room: Some(room.into()),
            after: Some(after),
            limit,
            ..args::History::default()
        }))
        .await
    }

    /// A page of a private conversation's history.
    pub async fn direct_history(
        &self,
        with: &str,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage<DirectMessage>> {
        self.request_as(Command::History(args::History {
            room: None,
            with: Some(with.into()),
            before,
            after: None,
            limit,
        }))
        .await
    }

    /// The page of a private conversation just after message `after`, oldest first.
    pub async fn direct_history_after(
        &self,
        with: &str,
        after: i64,
        limit: Option<u32>,
    ) -> Result<HistoryPage<DirectMessage>> {
        self.request_as(Command::History(args::History {
            with: Some(with.into()),
            after: Some(after),
            limit,
            ..args::History::default()
        }))
        .await
    }

    /// The user's private conversations, the latest first.
    pub async fn conversations(&self) -> Result<Vec<Conversation>> {
        let reply = self.call::<cmd::Conversations>(args::Empty {}).await?;
        Ok(reply.conversations)
    }

    pub async fn who(&self) -> Result<Vec<UserPresence>> {
        Ok(self.call::<cmd::Who>(args::Empty {}).await?.users)
    }

    /// Says this user is typing in `room` (see the `typing` command).
    pub async fn typing_in(&self, room: &str) -> Result<()> {
        let a = args::Typing {
            room: Some(room.into()),
            with: None,
        };
        self.call::<cmd::Typing>(a).await.map(drop)
    }

    /// Says this user is typing to `user` in their private conversation.
    pub async fn typing_to(&self, user: &str) -> Result<()> {
        let a = args::Typing {
            room: None,
            with: Some(user.into()),
        };
        self.call::<cmd::Typing>(a).await.map(drop)
    }

    pub async fn set_status(&self, status: Status) -> Result<()> {
        let a = args::SetStatus { status };
        self.call::<cmd::SetStatus>(a).await.map(drop)
    }

    pub async fn create_channel(&self, name: &str, members: &[&str]) -> Result<RoomInfo> {
        let a = args::CreateChannel {
            name: name.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        Ok(self.call::<cmd::CreateChannel>(a).await?.room)
    }

    // ----- administration (the session's user must be an administrator) --------------

    /// Every connected session.
    pub async fn connected(&self) -> Result<Vec<SessionInfo>> {
        Ok(self.call::<cmd::Connected>(args::Empty {}).await?.sessions)
    }

    /// Disconnects a user and refuses their logins for a while.
    pub async fn kick(&self, a: args::Kick) -> Result<reply::Kicked> {
        self.call::<cmd::Kick>(a).await
    }

    pub async fn unkick(&self, user: &str) -> Result<()> {
        let a = args::Target { user: user.into() };
        self.call::<cmd::Unkick>(a).await.map(drop)
    }

    pub async fn ban(&self, user: &str, reason: Option<&str>) -> Result<()> {
        let a = args::Ban {
            user: user.into(),
            reason: reason.map(Into::into),
        };
        self.call::<cmd::Ban>(a).await.map(drop)
    }

    pub async fn unban(&self, user: &str) -> Result<()> {
        let a = args::Target { user: user.into() };
        self.call::<cmd::Unban>(a).await.map(drop)
    }

    /// Current kicks and bans, newest first.
    pub async fn sanctions(&self) -> Result<Vec<SanctionInfo>> {
        Ok(self.call::<cmd::Sanctions>(args::Empty {}).await?.sanctions)
    }

    /// A page of every account matching `query` (the `accounts` command).
    pub async fn accounts(&self, a: args::Accounts) -> Result<reply::AccountList> {
        self.call::<cmd::Accounts>(a).await
    }

    /// Pending join requests, oldest first (the `requests` command).
    pub async fn join_requests(&self) -> Result<Vec<JoinRequest>> {
        Ok(self.call::<cmd::Requests>(args::Empty {}).await?.requests)
    }

    /// Accepts `user`'s request to join `room`.
    pub async fn accept(&self, user: &str, room: &str, reason: Option<&str>) -> Result<()> {
        let a = decision(user, room, reason);
        self.call::<cmd::Accept>(a).await.map(drop)
    }

    /// Rejects `user`'s request to join `room`.
    pub async fn reject(&self, user: &str, room: &str, reason: Option<&str>) -> Result<()> {
        let a = decision(user, room, reason);
        self.call::<cmd::Reject>(a).await.map(drop)
    }

    /// A notice to every connected user.
    pub async fn broadcast(&self, text: &str) -> Result<()> {
        let a = args::Broadcast { text: text.into() };
        self.call::<cmd::Broadcast>(a).await.map(drop)
    }

    /// Starts the server's shutdown countdown; returns its length in seconds.
    pub async fn shutdown(&self, seconds: Option<u32>, message: Option<&str>) -> Result<u32> {
        let a = args::Shutdown {
            seconds,
            message: message.map(Into::into),
        };
        Ok(self.call::<cmd::Shutdown>(a).await?.seconds)
    }

    /// Sets `user`'s password (generated, and returned, when `password` is `None`).
    pub async fn reset_password(
        &self,
        user: &str,
        password: Option<&str>,
    ) -> Result<reply::PasswordReset> {
        let a = args::ResetPassword {
            user: user.into(),
            password: password.map(Into::into),
        };
        self.call::<cmd::ResetPassword>(a).await
    }

    /// Accounts waiting for approval, oldest first.
    pub async fn account_requests(&self) -> Result<Vec<AccountRequest>> {
        let reply = self.call::<cmd::AccountRequests>(args::Empty {}).await?;
        Ok(reply.accounts)
    }

    pub async fn approve_account(&self, user: &str) -> Result<()> {
        let a = args::Target { user: user.into() };
        self.call::<cmd::ApproveAccount>(a).await.map(drop)
    }

    pub async fn reject_account(&self, user: &str, reason: Option<&str>) -> Result<()> {
        let a = args::Ban {
            user: user.into(),
            reason: reason.map(Into::into),
        };
        self.call::<cmd::RejectAccount>(a).await.map(drop)
    }

    /// A single-use invitation code, valid `hours` (the server's default when `None`).
    pub async fn create_invite(&self, hours: Option<u32>) -> Result<reply::Invitation> {
        let a = args::CreateInvite { hours };
        self.call::<cmd::CreateInvite>(a).await
    }

    /// Invitations neither used nor expired.
    pub async fn invites(&self) -> Result<Vec<InviteInfo>> {
        Ok(self.call::<cmd::Invites>(args::Empty {}).await?.invites)
    }

    pub async fn revoke_invite(&self, id: i64) -> Result<()> {
        let a = args::InviteId { id };
        self.call::<cmd::RevokeInvite>(a).await.map(drop)
    }

    /// Creates an account whatever the registration mode.
    pub async fn create_account(&self, a: args::CreateAccount) -> Result<reply::AccountCreated> {
        self.call::<cmd::CreateAccount>(a).await
    }

    /// The latest administrative actions, newest first (the server's default count when
    /// `limit` is `None`).
    pub async fn audit(&self, limit: Option<u32>) -> Result<Vec<AuditEntry>> {
        let a = args::Audit { limit };
        Ok(self.call::<cmd::Audit>(a).await?.entries)
    }
}

fn decision(user: &str, room: &str, reason: Option<&str>) -> args::Decide {
    args::Decide {
        user: user.into(),
        room: room.into(),
        reason: reason.map(Into::into),
    }
}

/// What the reader needs to answer the server's keep-alive probe by itself.
struct KeepAlive {
    out: mpsc::WeakSender<Outgoing>,
    next_id: Arc<AtomicU64>,
}

impl KeepAlive {
    /// Answers the `ping` event with a `ping` request (its reply is ignored), so that a
    /// live client is never closed as idle. If the outgoing queue is full, frames are
    /// being sent anyway, which answers the probe just as well.
    fn answer(&self) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = Request {
            id,
            command: Command::Ping(args::Empty {}),
        }
        .to_line();
        if let Some(out) = self.out.upgrade() {
            let _ = out.try_send(Outgoing::Frame(line));
        }
    }
}

/// Sends `ack_directs` for the private messages received, gathering every id that
/// arrived meanwhile into one request. The replies are not waited for (nobody holds
/// their ids, so the reader drops them).
async fn ack_loop(
    mut ids: mpsc::Receiver<i64>,
    next_id: Arc<AtomicU64>,
    out: mpsc::WeakSender<Outgoing>,
) {
    const MAX_IDS: usize = 256;
    let mut batch = Vec::new();
    while ids.recv_many(&mut batch, MAX_IDS).await > 0 {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let line = Request {
            id,
            command: Command::AckDirects(args::AckDirects {
                ids: std::mem::take(&mut batch),
            }),
        }
        .to_line();
        let Some(out) = out.upgrade() else { break };
        if out.send(Outgoing::Frame(line)).await.is_err() {
            break;
        }
    }
}

async fn read_loop(
    mut reader: BoxStream<'static, Result<Bytes>>,
    pending: Pending,
    closing: Arc<Mutex<Option<(CloseCode, String)>>>,
    events: mpsc::Sender<Incoming>,
    keepalive: KeepAlive,
    acks: mpsc::Sender<i64>,
) {
    while let Some(Ok(frame)) = reader.next().await {
        let parsed = match serde_json::from_slice::<ServerFrame>(&frame) {
            Ok(f) => f,
            Err(_) => continue, // a newer server's frame this client does not know
        };
        let incoming = match parsed {
            ServerFrame::Ok { re, data } => {
                if let Some(tx) = lock(&pending).as_mut().and_then(|w| w.remove(&re)) {
                    let _ = tx.send(Ok(data));
                }
                continue;
            }
            ServerFrame::Error {
                re: Some(re),
                error,
            } => {
                if let Some(tx) = lock(&pending).as_mut().and_then(|w| w.remove(&re)) {
                    let _ = tx.send(Err(ClientError::Server(error)));
                }
                continue;
            }
            ServerFrame::Error { re: None, error } => Incoming::Error(error),
            // The keep-alive probe (line protocol; on WebSocket the library answers the
            // server's Ping frames): answered here, never shown to the application.
            ServerFrame::Event(Event::Ping) => {
                keepalive.answer();
                continue;
            }
            ServerFrame::Event(e) => {
                // Every private message is acknowledged; the server ignores the ids of
                // those addressed to someone else (the echo of one's own). A full ack
                // queue drops the id: the message then comes again at the next login.
                if let Event::Direct(dm) = &e {
                    let _ = acks.try_send(dm.id);
                }
                Incoming::Event(e)
            }
            ServerFrame::Closing {
                code,
                message,
                until,
            } => {
                *lock(&closing) = Some((code, message.clone()));
                Incoming::Closing {
                    code,
                    message,
                    until,
                }
            }
            ServerFrame::Hello(_) => continue,
        };
        if events.send(incoming).await.is_err() {
            break;
        }
    }
    // Wake every waiter: their replies will not come.
    *lock(&pending) = None;
}

// ----- TLS ------------------------------------------------------------------------------

/// How a TLS connection checks the server's certificate. By default: against the
/// system's trust store (where a company's own CA is normally installed), for the host
/// name connected to.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Trust only the certificates (CAs, or a self-signed certificate) in this PEM file
    /// instead of the system's trust store.
    pub ca_file: Option<std::path::PathBuf>,
    /// Check the certificate against this name instead of the host connected to.
    pub server_name: Option<String>,
    /// DANGER: accept any certificate, so anyone on the path can read and change the
    /// traffic. For a throw-away test only.
    pub insecure_skip_verify: bool,
}

/// The provider used for every client connection: rustls with ring.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsOptions {
    /// The rustls client configuration these options describe.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let bad =
            |m: String| ClientError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| bad(e.to_string()))?;
        if self.insecure_skip_verify {
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth());
        }
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                use rustls_pki_types::pem::PemObject;
                let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                    .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(bad(format!("{}: no usable certificate", path.display())));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(bad(
                        "no trusted certificates found in the system's store; give a CA file"
                            .into(),
                    ));
                }
            }
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }
}

/// Connects over TCP to `addr` (`host:port`) and completes a TLS handshake.
pub async fn tls_connect(
    addr: &str,
    tls: &TlsOptions,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let host = match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    let name = tls.server_name.as_deref().unwrap_or(host).to_owned();
    let server_name = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
        ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a host name or address: {e}"),
        ))
    })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.client_config()?));
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let stream = connector.connect(server_name, stream).await.map_err(|e| {
        ClientError::Io(std::io::Error::new(
            e.kind(),
            format!("TLS handshake with {addr} failed: {e}"),
        ))
    })?;
    Ok(stream)
}

/// Accepts any certificate (signatures still checked, so the handshake is well formed).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! The line transport: the native protocol as one JSON frame per line, over TCP (TLS when
//! configured) and over in-process pipes (the server console). Frames are read with a
//! bounded codec (`max_frame_bytes`); frames are written in one vectored write each
//! time, straight from the shared buffers.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::StreamExt;
use salon_proto::CloseCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::live::CloseReason;
use crate::protocol::native::NATIVE;
use crate::protocol::WireFormat;
use crate::session::{self, FrameWriter, Inbound};

use super::handshake::{tls_handshake, tls_timeout};
use super::{Permit, Shared};

/// Initial read buffer of a line connection, in bytes (tokio-util's default is 8 KiB).
const READ_BUFFER_INITIAL: usize = 512;

pub(super) async fn tcp_session(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Shared,
    _permit: Permit,
) {
    let _ = stream.set_nodelay(true);
    match shared.tls.clone() {
        None => {
            let (read, write) = stream.into_split();
            line_session(read, write, peer, salon_proto::Transport::Tcp, shared).await;
        }
        Some(tls) => {
            let answer = NATIVE.encode_closing(
                CloseCode::TlsRequired,
                "this port speaks TLS: connect with TLS (e.g. salon admin --tls)",
                None,
            );
            let limit = tls_timeout(&shared);
            let Some(stream) = tls_handshake(stream, peer, &tls.line, limit, &answer).await else {
                return;
            };
            let (read, write) = tokio::io::split(stream);
            line_session(read, write, peer, salon_proto::Transport::Tcp, shared).await;
        }
    }
}

/// In-process connections (the server console): the same line protocol over an
/// in-memory pipe. The sender side is held by whoever opens such connections. They take
/// no place in the connection limits and have no login or idle timeout.
pub async fn serve_local(
    mut incoming: mpsc::Receiver<DuplexStream>,
    shared: Shared,
    stop_accepting: CancellationToken,
) {
    let peer = SocketAddr::from(([127, 0, 0, 1], 0));
    loop {
        let stream = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            stream = incoming.recv() => match stream {
                Some(stream) => stream,
                None => break,
            },
        };
        let shared = shared.clone();
        shared.sessions.clone().spawn(async move {
            let (read, write) = tokio::io::split(stream);
            line_session(read, write, peer, salon_proto::Transport::Local, shared).await;
        });
    }
}

/// A session speaking newline-delimited JSON over any byte stream.
async fn line_session<R, W>(
    read: R,
    write: W,
    peer: SocketAddr,
    transport: salon_proto::Transport,
    shared: Shared,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max = shared.service.config.limits.max_frame_bytes;
    // One byte more than the limit for a `\r` before the `\n`: the limit counts the frame
    // without its terminator, whichever it is (checked once the `\r` is trimmed).
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max + 1);
    // A small initial buffer: most connections are idle most of the time, and it grows
    // on demand up to `max_frame_bytes`.
    let frames =
        FramedRead::with_capacity(read, codec, READ_BUFFER_INITIAL).map(move |item| match item {
            Ok(line) => line_frame(trim_cr(line), max),
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => Inbound::TooLarge,
            Err(AnyDelimiterCodecError::Io(_)) => Inbound::Closed,
        });
    let writer = LineWriter { half: write };
    session::run(
        &NATIVE,
        shared.service,
        peer,
        transport,
        Box::pin(frames),
        writer,
        shared.stop_reading,
    )
    .await;
}

/// One line without its terminator: a frame, too large, or blank (empty or only spaces
/// and tabs: a harmless keep-alive, ignored).
fn line_frame(line: Bytes, max: usize) -> Inbound {
    if line.len() > max {
        Inbound::TooLarge
    } else if line.iter().all(|b| matches!(b, b' ' | b'\t')) {
        Inbound::KeepAlive
    } else {
        Inbound::Frame(line)
    }
}

fn trim_cr(line: Bytes) -> Bytes {
    match line.last() {
        Some(b'\r') => line.slice(..line.len() - 1),
        _ => line,
    }
}

struct LineWriter<W> {
    half: W,
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWriter for LineWriter<W> {
    /// One vectored write of all the frames, straight from the shared buffers: no copy,
    /// and no per-connection write buffer to keep.
    async fn write_frames(&mut self, frames: &[Bytes]) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> = frames.iter().map(|f| io::IoSlice::new(f)).collect();
        let mut pending = &mut slices[..];
        while !pending.is_empty() {
            let n = self.half.write_vectored(pending).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut pending, n);
        }
        Ok(())
    }

    async fn close(&mut self, _reason: Option<&CloseReason>) {
        let _ = self.half.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_line_is_a_keepalive_and_the_limit_excludes_the_terminator() {
        assert!(matches!(
            line_frame(Bytes::from_static(b" \t  "), 10),
            Inbound::KeepAlive
        ));
        assert!(matches!(line_frame(Bytes::new(), 10), Inbound::KeepAlive));
        assert!(matches!(
            line_frame(trim_cr(Bytes::from_static(b"0123456789\r")), 10),
            Inbound::Frame(f) if f.len() == 10
        ));
        assert!(matches!(
            line_frame(Bytes::from_static(b"0123456789A"), 10),
            Inbound::TooLarge
        ));
    }
}

//! Lines read with the time the kernel received them (`SO_TIMESTAMPNS`), for a cluster
//! run's latency by hop.
//!
//! The load generator reads every member's copy of a message one after the other on its
//! one core (about 20 µs each), and a node writes its own members' copies before the
//! other nodes have theirs from NATS: the copies read last are mostly the cross-node ones.
//! Timed when the load generator gets to them, the cross-node copies then carry the load
//! generator's own queue (half a room's copies read before them, on average), and the
//! difference with same-node copies grows with the room's size rather than with the hop
//! (measured: +0.26 ms at p50 with 30 members per room, +0.7 ms with 100, +1.9 ms with
//! 200, same rate). The kernel's receive time of the bytes leaves that queue out.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use tokio::io::{AsyncBufReadExt, BufReader, Interest};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// Bytes asked of the kernel at a time.
const READ_SIZE: usize = 16 * 1024;

/// Asks the kernel for receive times on `stream`'s reads.
pub fn enable(stream: &TcpStream) -> io::Result<()> {
    setsockopt(stream, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// A session's incoming lines: buffered as usual, or with their kernel receive times.
pub enum Lines {
    Buffered(BufReader<OwnedReadHalf>),
    Timed(Timed),
}

impl Lines {
    /// Reads the next line (with its `\n`) into `line`. `None` at the end; else the time
    /// (ns since the epoch) the kernel received its last byte, 0 when not known.
    pub async fn next(&mut self, line: &mut Vec<u8>) -> io::Result<Option<u64>> {
        match self {
            Lines::Buffered(reader) => Ok((reader.read_until(b'\n', line).await? > 0).then_some(0)),
            Lines::Timed(timed) => timed.next(line).await,
        }
    }
}

/// Reads with `recvmsg`, keeping the receive time of the last bytes read.
pub struct Timed {
    half: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    at: u64,
    cmsg: Vec<u8>,
}

impl Timed {
    /// Reads from `reader`'s stream (whose socket has [`enable`]d), starting with what
    /// it had buffered already (untimed).
    pub fn from(reader: BufReader<OwnedReadHalf>) -> Timed {
        let buf = reader.buffer().to_vec();
        Timed {
            half: reader.into_inner(),
            buf,
            start: 0,
            at: 0,
            cmsg: nix::cmsg_space!(TimeSpec),
        }
    }

    async fn next(&mut self, line: &mut Vec<u8>) -> io::Result<Option<u64>> {
        loop {
            // A line complete in the buffer ended in the last bytes read: every line of
            // an earlier read was taken before reading again.
            if let Some(i) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
                let end = self.start + i + 1;
                line.extend_from_slice(&self.buf[self.start..end]);
                self.start = end;
                return Ok(Some(self.at));
            }
            self.buf.drain(..self.start);
            self.start = 0;
            let kept = self.buf.len();
            self.buf.resize(kept + READ_SIZE, 0);
            let (read, at) = loop {
                self.half.readable().await?;
                let stream: &TcpStream = self.half.as_ref();
                let fd = stream.as_raw_fd();
                let (space, cmsg) = (&mut self.buf[kept..], &mut self.cmsg[..]);
                let got = stream.try_io(Interest::READABLE, || {
                    let mut iov = [IoSliceMut::new(space)];
                    let msg = recvmsg::<()>(fd, &mut iov, Some(cmsg), MsgFlags::empty())?;
                    let mut at = 0;
                    for c in msg.cmsgs()? {
                        if let ControlMessageOwned::ScmTimestampns(ts) = c {
                            at = u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
                                + u64::try_from(ts.tv_nsec()).unwrap_or(0);
                        }
                    }
                    Ok((msg.bytes, at))
                });
                match got {
                    Ok(got) => break got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            self.buf.truncate(kept + read);
            if read == 0 {
                return Ok(None);
            }
            self.at = at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn now_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    /// Lines cut across reads, several in one read, one bigger than a read, and what the
    /// BufReader held already all come out whole and in order; every line read from the
    /// socket carries a kernel receive time between its sending and its reading.
    #[tokio::test]
    async fn lines_come_out_whole_with_their_receive_times() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        enable(&client).unwrap();
        let (read, _write) = client.into_split();
        let mut reader = BufReader::new(read);

        server.write_all(b"hello\nbuffered\n").await.unwrap();
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).await.unwrap();
        assert_eq!(line, b"hello\n");
        let mut lines = Lines::Timed(Timed::from(reader));

        let big = format!("{}\n", "x".repeat(3 * READ_SIZE));
        let before = now_ns();
        server.write_all(b"half of a ").await.unwrap();
        server.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        server.write_all(b"line\nsecond\nthird\n").await.unwrap();
        server.write_all(big.as_bytes()).await.unwrap();
        drop(server);

        let mut got = Vec::new();
        let mut times = Vec::new();
        loop {
            line.clear();
            match lines.next(&mut line).await.unwrap() {
                Some(at) => {
                    got.push(String::from_utf8(line.clone()).unwrap());
                    times.push(at);
                }
                None => break,
            }
        }
        let after = now_ns();
        assert_eq!(got[0], "buffered\n");
        assert_eq!(times[0], 0, "bytes buffered before are not timed");
        assert_eq!(&got[1..4], ["half of a line\n", "second\n", "third\n"]);
        assert_eq!(got[4], big);
        assert_eq!(got.len(), 5);
        for at in &times[1..] {
            assert!(
                *at >= before && *at <= after,
                "{at} not within {before}..{after}"
            );
        }
    }
}

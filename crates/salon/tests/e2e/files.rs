//! Files (issue 14) through a real server: uploads over HTTP with the session token,
//! attachments on room and private messages, downloads checked on every request (members
//! only, nothing after a deletion), previews of images without their metadata, the size
//! limit and quota, a disguised file, and the sweep of files no message carries.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;

use salon_client::Client;
use salon_proto::{args, cmd, Attachment, ErrorCode, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// An HTTP answer: status, headers (names in lower case), body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Reads a whole HTTP/1.1 response from a connection the server closes.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> Answer {
    read_answer_from(stream).await
}

/// Reads one HTTP answer: its head, then its body to its `Content-Length`, its last
/// chunk, or the end of the stream.
async fn read_answer_from<R: tokio::io::AsyncRead + Unpin>(stream: &mut R) -> Answer {
    let complete = |raw: &[u8]| {
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let body = &raw[split + 4..];
        if let Some(length) = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            return body.len() >= length;
        }
        head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n")
    };
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 8192];
        while !complete(&raw) {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an HTTP answer in time");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16)
            .expect("hex size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

/// One request on a new connection (`Connection: close`) to the HTTP listener at `http`.
async fn request(
    http: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(http)
        .await
        .expect("connect http");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    if let Some(body) = body {
        stream.write_all(body).await.unwrap();
    }
    read_answer(&mut stream).await
}

async fn upload(http: SocketAddr, token: &str, name: &str, bytes: &[u8]) -> Answer {
    let path = format!("/api/files?name={}", encode(name));
    request(http, "POST", &path, Some(token), Some(bytes)).await
}

/// Uploads through the HTTP listener at `http` and returns the stored file as a message
/// will show it.
pub(crate) async fn uploaded(
    http: SocketAddr,
    token: &str,
    name: &str,
    bytes: &[u8],
) -> Attachment {
    let answer = upload(http, token, name, bytes).await;
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    serde_json::from_slice(&answer.body).expect("the file's metadata")
}

/// Downloads file `id` through the HTTP listener at `http`.
pub(crate) async fn download(http: SocketAddr, token: &str, id: i64) -> Answer {
    request(http, "GET", &format!("/api/files/{id}"), Some(token), None).await
}

fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Alice and bob are members of Blabla; carol is not. Their clients and tokens.
async fn blabla(server: &TestServer) -> [(Client, String); 3] {
    let (alice, a) = server.user("alice").await;
    let (bob, b) = server.user("bob").await;
    let (carol, c) = server.user("carol").await;
    alice.join("Blabla").await.unwrap();
    bob.join("Blabla").await.unwrap();
    [(alice, a.token), (bob, b.token), (carol, c.token)]
}

async fn message_with_files(client: &mut Client, id: i64) -> Vec<Attachment> {
    expect_event(client, "the message with its files", |i| match i {
        Event::Message(m) if m.id == id => Some(m.extra.attachments.clone()),
        Event::Direct(m) if m.id == id => Some(m.extra.attachments.clone()),
        _ => None,
    })
    .await
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

const SECRET: &[u8] = b"GPSLatitude 48.8584 N SECRET-EXIF-MARKER";

/// A JPEG whose APP1 segment (EXIF) holds [`SECRET`], as a phone's photo holds GPS
/// coordinates.
fn jpeg_with_exif(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, 64, (y % 256) as u8])
    });
    let mut plain = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(Cursor::new(&mut plain), image::ImageFormat::Jpeg)
        .unwrap();
    // Exif header, a big-endian TIFF header with an empty IFD, then the secret.
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\0\0\0\0\0".to_vec();
    exif.extend_from_slice(SECRET);
    let length = u16::try_from(exif.len() + 2).unwrap().to_be_bytes();
    let mut out = plain[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1, length[0], length[1]]);
    out.extend_from_slice(&exif);
    out.extend_from_slice(&plain[2..]);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The blobs in the files directory (not the temporary ones).
fn blobs_on_disk(server: &TestServer) -> usize {
    let dir = server.data.path().join("files");
    std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "tmp")
        .map(|e| std::fs::read_dir(e.path()).map_or(0, |d| d.count()))
        .sum()
}

#[tokio::test]
async fn a_member_downloads_an_attached_file_and_nobody_else_sees_it() {
    let server = TestServer::start().await;
    let [(alice, a), (mut bob, b), (carol, c)] = blabla(&server).await;
    let notes = b"minutes of the meeting\n".as_slice();
    let file = uploaded(server.http, &a, "../../etc/minutes é.txt", notes).await;
    assert_eq!(file.name, "minutes é.txt", "no path in a display name");
    assert_eq!(
        (file.size, file.mime.as_str()),
        (notes.len() as u64, "text/plain; charset=utf-8")
    );
    assert!(!file.preview);

    // Before a message carries it, only its uploader reads it.
    assert_eq!(download(server.http, &a, file.id).await.status, 200);
    assert_eq!(download(server.http, &b, file.id).await.status, 404);

    let sent = alice.send_files("Blabla", "", &[file.id]).await.unwrap();
    assert_eq!(
        message_with_files(&mut bob, sent.id).await,
        std::slice::from_ref(&file)
    );
    let got = download(server.http, &b, file.id).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, notes);
    assert_eq!(got.header("x-content-type-options"), "nosniff");
    assert_eq!(
        got.header("content-security-policy"),
        "default-src 'none'; sandbox"
    );
    assert!(got.header("content-disposition").starts_with("attachment;"));
    assert!(got
        .header("content-disposition")
        .contains("filename*=UTF-8''minutes%20%C3%A9.txt"));
    assert_eq!(got.header("cross-origin-resource-policy"), "same-origin");
    assert!(got.header("cache-control").contains("no-store"));
    // Not a member: as if there were no such file.
    let refused = download(server.http, &c, file.id).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (404, "not_found")
    );
    assert_eq!(
        download(server.http, &c, file.id + 1_000_000).await.status,
        404
    );
    // History carries the files too.
    let page = bob.room_history("Blabla", None, None).await.unwrap();
    let m = page.messages.iter().find(|m| m.id == sent.id).unwrap();
    assert_eq!(m.extra.attachments, std::slice::from_ref(&file));
    drop(carol);

    // A private message's file: its two users only.
    let pdf = b"%PDF-1.7\n%fake\n".as_slice();
    let private = uploaded(server.http, &a, "plan.pdf", pdf).await;
    assert_eq!(private.mime, "application/pdf");
    let sent = alice
        .direct_files("bob", "the plan", &[private.id])
        .await
        .unwrap();
    assert_eq!(
        message_with_files(&mut bob, sent.id).await,
        std::slice::from_ref(&private)
    );
    assert_eq!(download(server.http, &b, private.id).await.body, pdf);
    assert_eq!(download(server.http, &c, private.id).await.status, 404);
    let page = bob.direct_history("alice", None, None).await.unwrap();
    assert_eq!(page.messages[0].extra.attachments, [private]);
}

#[tokio::test]
async fn an_image_is_previewed_and_served_without_its_metadata() {
    let server = TestServer::start().await;
    let [(alice, a), (mut bob, b), _] = blabla(&server).await;
    let photo = jpeg_with_exif(800, 600);
    assert!(contains(&photo, SECRET));
    let file = uploaded(server.http, &a, "holiday.jpg", &photo).await;
    assert_eq!(
        (file.mime.as_str(), file.preview, file.width, file.height),
        ("image/jpeg", true, Some(800), Some(600))
    );
    let sent = alice
        .send_files("Blabla", "look", &[file.id])
        .await
        .unwrap();
    message_with_files(&mut bob, sent.id).await;

    let full = download(server.http, &b, file.id).await;
    assert_eq!(full.status, 200);
    assert_eq!(full.header("content-type"), "image/jpeg");
    // Only a preview is inline: the full size is an attachment like any file.
    assert!(full
        .header("content-disposition")
        .starts_with("attachment;"));
    assert!(!contains(&full.body, SECRET), "the metadata is not served");
    let decoded = image::load_from_memory(&full.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (800, 600));

    let preview = request(
        server.http,
        "GET",
        &format!("/api/files/{}/preview", file.id),
        Some(&b),
        None,
    )
    .await;
    assert_eq!(preview.status, 200);
    assert_eq!(preview.header("content-type"), "image/jpeg");
    assert!(preview.header("content-disposition").starts_with("inline;"));
    assert!(!contains(&preview.body, SECRET));
    assert!(preview.body.len() < full.body.len());
    let thumb = image::load_from_memory(&preview.body).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (320, 240));

    // A PNG is previewed too.
    let file = uploaded(server.http, &a, "chart.png", &png(64, 32)).await;
    assert_eq!(
        (file.mime.as_str(), file.preview, file.width),
        ("image/png", true, Some(64))
    );
}

#[tokio::test]
async fn an_image_too_large_to_preview_is_a_download_without_its_metadata() {
    let server = TestServer::start().await;
    let [(alice, a), (mut bob, b), _] = blabla(&server).await;
    // Wider than the server decodes (12,000 px), as a phone's panorama can be.
    let panorama = jpeg_with_exif(12_001, 2);
    assert!(contains(&panorama, SECRET));
    let file = uploaded(server.http, &a, "panorama.jpg", &panorama).await;
    assert_eq!(
        (file.mime.as_str(), file.preview, file.width),
        ("application/octet-stream", false, None)
    );
    let sent = alice
        .send_files("Blabla", "le panorama", &[file.id])
        .await
        .unwrap();
    message_with_files(&mut bob, sent.id).await;
    let got = download(server.http, &b, file.id).await;
    assert_eq!(got.status, 200);
    assert!(got.header("content-disposition").starts_with("attachment;"));
    assert!(!contains(&got.body, SECRET), "the metadata is not served");
    // The picture itself is whole.
    let decoded = image::load_from_memory(&got.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (12_001, 2));
}

#[tokio::test]
async fn a_damaged_image_whose_metadata_cannot_be_taken_out_is_refused() {
    let server = TestServer::start().await;
    let (_alice, welcome) = server.user("alice").await;
    // Cut inside its EXIF segment: neither decoded nor readable as a JPEG container.
    let photo = jpeg_with_exif(64, 64);
    let answer = upload(server.http, &welcome.token, "cut.jpg", &photo[..40]).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (422, "unreadable_image"),
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(blobs_on_disk(&server), 0);
}

#[tokio::test]
async fn a_file_name_keeps_nothing_invisible_and_no_path() {
    let server = TestServer::start().await;
    let [(alice, a), (mut bob, b), _] = blabla(&server).await;
    // A path, a zero-width space, a byte order mark, a tag character (invisible text),
    // a right-to-left override and a decomposed accent.
    let sent_name = "..\\tmp/in\u{200b}voi\u{feff}ce\u{e0041} re\u{301}union\u{202e}.pdf";
    let file = uploaded(server.http, &a, sent_name, b"%PDF-1.4 not much").await;
    assert_eq!(file.name, "invoice réunion.pdf");
    let sent = alice.send_files("Blabla", "", &[file.id]).await.unwrap();
    let shown = message_with_files(&mut bob, sent.id).await;
    assert_eq!(shown[0].name, "invoice réunion.pdf");
    let got = download(server.http, &b, file.id).await;
    assert_eq!(got.status, 200);
    assert!(
        got.header("content-disposition")
            .contains("invoice%20r%C3%A9union.pdf"),
        "{}",
        got.header("content-disposition")
    );
}

#[tokio::test]
async fn html_named_png_is_served_as_a_download_never_as_an_image() {
    let server = TestServer::start().await;
    let [(alice, a), (mut bob, b), _] = blabla(&server).await;
    let html = b"<!DOCTYPE html><html><body><script>alert(document.domain)</script></body></html>";
    let file = uploaded(server.http, &a, "cat.png", html).await;
    assert!(!file.mime.starts_with("image/"), "{}", file.mime);
    assert!(!file.mime.contains("html"), "{}", file.mime);
    assert!(!file.preview);
    assert_eq!((file.width, file.height), (None, None));
    let sent = alice.send_files("Blabla", "", &[file.id]).await.unwrap();
    message_with_files(&mut bob, sent.id).await;
    let got = download(server.http, &b, file.id).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), "application/octet-stream");
    assert!(got.header("content-disposition").starts_with("attachment;"));
    assert_eq!(got.header("x-content-type-options"), "nosniff");
    let preview = request(
        server.http,
        "GET",
        &format!("/api/files/{}/preview", file.id),
        Some(&b),
        None,
    )
    .await;
    assert_eq!(preview.status, 404);
}

#[tokio::test]
async fn a_deleted_message_takes_its_files_and_the_sweep_removes_what_nothing_carries() {
    let server = TestServer::start().await;
    let [(alice, a), (mut bob, b), _] = blabla(&server).await;
    let file = uploaded(server.http, &a, "a.txt", b"first file").await;
    let sent = alice.send_files("Blabla", "", &[file.id]).await.unwrap();
    message_with_files(&mut bob, sent.id).await;
    assert_eq!(download(server.http, &b, file.id).await.status, 200);
    let kept = uploaded(server.http, &a, "kept.txt", b"still carried").await;
    let carried = alice.send_files("Blabla", "", &[kept.id]).await.unwrap();
    message_with_files(&mut bob, carried.id).await;
    let pending = uploaded(server.http, &a, "pending.txt", b"never attached").await;

    alice.delete(sent.id, None).await.unwrap();
    // At once, for everyone, its uploader included.
    assert_eq!(download(server.http, &b, file.id).await.status, 404);
    assert_eq!(download(server.http, &a, file.id).await.status, 404);
    // Nor can it be attached again.
    let e = alice
        .send_files("Blabla", "again", &[file.id])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoSuchFile));
    let page = bob.room_history("Blabla", None, None).await.unwrap();
    let tombstone = page.messages.iter().find(|m| m.id == sent.id).unwrap();
    assert!(tombstone.extra.deleted && tombstone.extra.attachments.is_empty());
    assert_eq!(blobs_on_disk(&server), 3);

    // A restart sweeps: the deleted message's file goes; the pending upload stays
    // within its day of grace.
    let server = server.restart().await;
    assert_eq!(blobs_on_disk(&server), 2);
    let (_alice, welcome) = server.login("alice").await;
    let a = welcome.token;
    assert_eq!(download(server.http, &a, pending.id).await.status, 200);

    // A day later, the upload no message carries is gone too.
    server.clock.advance_ms(25 * 3_600_000);
    let server = server.restart().await;
    assert_eq!(blobs_on_disk(&server), 1);
    let (_alice, welcome) = server.login("alice").await;
    let (_bob, bob_welcome) = server.login("bob").await;
    assert_eq!(
        download(server.http, &welcome.token, pending.id)
            .await
            .status,
        404
    );
    assert_eq!(
        download(server.http, &bob_welcome.token, kept.id)
            .await
            .body,
        b"still carried"
    );
}

#[tokio::test]
async fn identical_content_is_stored_once() {
    let server = TestServer::start().await;
    let [(_alice, a), (_bob, b), _] = blabla(&server).await;
    let one = uploaded(server.http, &a, "one.txt", b"same bytes").await;
    let two = uploaded(server.http, &b, "two.txt", b"same bytes").await;
    assert_ne!(one.id, two.id);
    assert_eq!(blobs_on_disk(&server), 1);
    // Each is its uploader's, with its own name.
    assert_eq!(download(server.http, &b, one.id).await.status, 404);
    assert_eq!(download(server.http, &b, two.id).await.body, b"same bytes");
}

#[tokio::test]
async fn a_message_key_used_again_with_other_files_is_refused_not_merged() {
    let server = TestServer::start().await;
    let [(alice, a), _, _] = blabla(&server).await;
    let one = uploaded(server.http, &a, "one.txt", b"first file").await;
    let two = uploaded(server.http, &a, "two.txt", b"second file").await;
    let send = |files: Vec<i64>| args::Send {
        room: "Blabla".into(),
        text: String::new(),
        key: Some("k-files".into()),
        reply_to: None,
        attachments: files,
    };
    let first = alice.call::<cmd::Send>(send(vec![one.id])).await.unwrap();
    // The same message again (a retry): the same answer.
    let again = alice.call::<cmd::Send>(send(vec![one.id])).await.unwrap();
    assert_eq!(again.id, first.id);
    // The same key and text with other files is another message: refused, and the
    // file is not silently left out.
    for files in [vec![two.id], vec![one.id, two.id], vec![two.id, one.id]] {
        let err = alice
            .call::<cmd::Send>(send(files.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::InvalidRequest),
            "{files:?}: {err}"
        );
        assert_eq!(crate::storage::field_of(&err).as_deref(), Some("key"));
    }
    // The second file is still its uploader's to send.
    let sent = alice.send_files("Blabla", "", &[two.id]).await.unwrap();
    assert_ne!(sent.id, first.id);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_before_its_body_is_read() {
    let server = TestServer::start_with(|c| c.limits.upload_max_bytes = 1000).await;
    let (_alice, welcome) = server.user("alice").await;
    // Only the head, announcing 10 MB: the answer comes without the body.
    let mut stream = upload_begun(&server, &welcome.token, 10_000_000, 0).await;
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.code(), "file_too_large");
    assert!(answer.json()["message"]
        .as_str()
        .unwrap()
        .contains("1000 bytes"));

    // A chunked body is cut off once past the limit.
    let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let head = format!(
        "POST /api/files?name=big.bin HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        welcome.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..3 {
        stream
            .write_all(format!("190\r\n{}\r\n", "x".repeat(400)).as_bytes())
            .await
            .unwrap();
    }
    let answer = read_answer(&mut stream).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (413, "file_too_large")
    );
    // Nothing half-stored.
    assert_eq!(blobs_on_disk(&server), 0);
    assert_eq!(temporary_files(&server), 0);
}

/// A server where a file has at most 1,000 bytes and a user stores at most 1,500, and
/// the session token of alice, registered there.
async fn quota_of_1500() -> (TestServer, String) {
    let server = TestServer::start_with(|c| {
        c.limits.upload_max_bytes = 1000;
        c.limits.upload_quota_bytes = 1500;
    })
    .await;
    let (_alice, welcome) = server.user("alice").await;
    (server, welcome.token)
}

#[tokio::test]
async fn uploads_past_the_quota_are_refused() {
    let (server, a) = quota_of_1500().await;
    uploaded(server.http, &a, "one.bin", &[1u8; 800]).await;
    let refused = upload(server.http, &a, "two.bin", &[2u8; 800]).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (413, "quota_exceeded")
    );
    // What still fits is accepted; another user has a quota of their own.
    uploaded(server.http, &a, "three.bin", &[3u8; 600]).await;
    let (_bob, welcome) = server.user("bob").await;
    uploaded(server.http, &welcome.token, "four.bin", &[4u8; 800]).await;
}

#[tokio::test]
async fn deleting_a_message_gives_its_files_quota_back_within_seconds() {
    let (server, a) = quota_of_1500().await;
    let (alice, _) = server.login("alice").await;
    let one = uploaded(server.http, &a, "one.bin", &[1u8; 800]).await;
    let sent = alice.send_files("Général", "", &[one.id]).await.unwrap();
    let refused = upload(server.http, &a, "two.bin", &[2u8; 800]).await;
    assert_eq!(refused.code().as_str(), "quota_exceeded");
    // As the refusal says, deleting the message makes room: its file is swept a couple
    // of seconds after the deletion, not at the next periodic sweep (ten minutes).
    alice.delete(sent.id, None).await.unwrap();
    let http = server.http;
    eventually(
        "the deleted message's file to leave the quota",
        std::time::Duration::from_millis(200),
        || {
            let a = a.clone();
            async move { upload(http, &a, "two.bin", &[2u8; 800]).await.status == 201 }
        },
    )
    .await;
    assert_eq!(blobs_on_disk(&server), 1);
}

#[tokio::test]
async fn a_client_that_sends_its_whole_body_first_still_reads_the_quota_refusal() {
    let server = TestServer::start_with(|c| c.limits.upload_quota_bytes = 1500).await;
    let (_alice, welcome) = server.user("alice").await;
    let a = welcome.token;
    // 20 MB, within the size limit (25 MB) but not the quota: refused on its announced length,
    // while the client is still sending it (as a browser's upload does).
    let body = vec![7u8; 20_000_000];
    let mut stream = upload_begun(&server, &a, body.len(), 0).await;
    stream
        .write_all(&body)
        .await
        .expect("the server reads the body of a refused upload instead of resetting");
    let answer = read_answer(&mut stream).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (413, "quota_exceeded")
    );
}

/// How many temporary files `server`'s files directory holds (uploads in progress).
fn temporary_files(server: &TestServer) -> usize {
    std::fs::read_dir(server.data.path().join("files/tmp"))
        .unwrap()
        .count()
}

/// Waits (at most `WAIT`) until `server` holds `n` temporary files.
async fn until_temporary_files(server: &TestServer, n: usize, what: &str) {
    let what = format!("{what}: {n} temporary files");
    eventually(&what, std::time::Duration::from_millis(20), || async {
        temporary_files(server) == n
    })
    .await;
}

/// Opens an upload of `announced` bytes with the session token `token` (its
/// `Content-Length`) and sends the first `sent` of them.
async fn upload_begun(
    server: &TestServer,
    token: &str,
    announced: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let head = format!(
        "POST /api/files?name=half.bin HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {announced}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![5u8; sent]).await.unwrap();
    stream
}

#[tokio::test]
async fn an_upload_cut_off_halfway_leaves_nothing_and_takes_no_quota() {
    let (server, a) = quota_of_1500().await;
    let stream = upload_begun(&server, &a, 900, 400).await;
    // The server is storing it: a temporary file exists.
    until_temporary_files(&server, 1, "while the upload runs").await;
    drop(stream);
    // Gone with the connection: no temporary file, no blob, and the whole quota is
    // still there (1,000 and 500 bytes fit after the 900 never stored).
    until_temporary_files(&server, 0, "after the client went away").await;
    assert_eq!(blobs_on_disk(&server), 0);
    uploaded(server.http, &a, "after.bin", &[6u8; 1000]).await;
    uploaded(server.http, &a, "rest.bin", &[7u8; 500]).await;
}

#[tokio::test]
async fn an_upload_that_stops_sending_is_abandoned_with_a_clear_answer() {
    let server = TestServer::start_with(|c| c.limits.upload_idle_timeout_ms = 300).await;
    let (_alice, welcome) = server.user("alice").await;
    // Half a body, then silence while the connection stays open.
    let mut stream = upload_begun(&server, &welcome.token, 900, 400).await;
    let answer = read_answer(&mut stream).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "interrupted")
    );
    until_temporary_files(&server, 0, "after the upload was abandoned").await;
    assert_eq!(blobs_on_disk(&server), 0);
}

#[tokio::test]
async fn an_upload_that_trickles_past_its_total_time_is_refused() {
    let server = TestServer::start_with(|c| {
        c.limits.upload_idle_timeout_ms = 500;
        c.limits.upload_timeout_ms = 1_000;
    })
    .await;
    let (_alice, welcome) = server.user("alice").await;
    // A byte every 100 ms: never idle, never done.
    let mut stream = upload_begun(&server, &welcome.token, 900, 1).await;
    let (mut read, mut write) = stream.split();
    let trickle = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if write.write_all(&[5u8]).await.is_err() {
                break;
            }
        }
    };
    let answer = tokio::select! {
        answer = read_answer_from(&mut read) => answer,
        () = trickle => panic!("the server stopped reading without answering"),
    };
    assert_eq!((answer.status, answer.code().as_str()), (408, "too_slow"));
    until_temporary_files(&server, 0, "after the upload was refused").await;
    assert_eq!(blobs_on_disk(&server), 0);
}

#[tokio::test]
async fn a_refused_upload_whose_client_stops_sending_is_answered_at_the_idle_time() {
    let server = TestServer::start_with(|c| {
        c.limits.upload_quota_bytes = 1500;
        c.limits.upload_idle_timeout_ms = 300;
    })
    .await;
    let (_alice, welcome) = server.user("alice").await;
    uploaded(server.http, &welcome.token, "one.bin", &[1u8; 800]).await;
    // Refused on its announced length (over the quota): the server reads what the client
    // sends, so that it reads the answer, but not past the idle time once it stops.
    let mut stream = upload_begun(&server, &welcome.token, 900, 100).await;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), read_answer(&mut stream))
        .await
        .expect("answered within the idle time, not the 10 s drain bound");
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (413, "quota_exceeded")
    );
}

/// `n` uploads of `size` bytes (each its own content) sent at once by the user of
/// `token`: that `stored` of them were stored, and every other refused with `code`.
async fn side_by_side(
    server: &TestServer,
    token: &str,
    n: u8,
    size: usize,
    stored: usize,
    code: &str,
) {
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| vec![i; size]).collect();
    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|body| upload(server.http, token, "same-time.bin", body)),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        stored,
        "{statuses:?}"
    );
    assert!(
        answers
            .iter()
            .filter(|r| r.status != 201)
            .all(|r| r.code().as_str() == code),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn uploads_side_by_side_cannot_together_go_past_the_quota() {
    let (server, a) = quota_of_1500().await;
    // Eight uploads of 800 bytes at once: each fits alone, any two do not.
    side_by_side(&server, &a, 8, 800, 1, "quota_exceeded").await;
}

#[tokio::test]
async fn uploads_no_message_carries_are_bounded_in_number() {
    let server = TestServer::start_with(|c| c.limits.pending_uploads_max = 2).await;
    let (alice, welcome) = server.user("alice").await;
    alice.join("Blabla").await.unwrap();
    let a = welcome.token;
    let one = uploaded(server.http, &a, "1", b"1").await;
    uploaded(server.http, &a, "2", b"2").await;
    let refused = upload(server.http, &a, "3", b"3").await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (429, "too_many_pending_uploads")
    );
    // Sending one makes room.
    alice.send_files("Blabla", "", &[one.id]).await.unwrap();
    uploaded(server.http, &a, "3", b"3").await;
}

#[tokio::test]
async fn an_upload_taken_off_before_sending_is_removed_with_its_quota_and_nobody_elses_can_be() {
    let server = TestServer::start_with(|c| {
        c.limits.pending_uploads_max = 2;
        c.limits.upload_quota_bytes = 1500;
    })
    .await;
    let [(alice, a), (_bob, b), _] = blabla(&server).await;
    let one = uploaded(server.http, &a, "one.bin", &[1u8; 800]).await;
    let two = uploaded(server.http, &a, "two.bin", &[2u8; 600]).await;
    assert_eq!(
        upload(server.http, &a, "three.bin", &[3u8; 10])
            .await
            .code()
            .as_str(),
        "too_many_pending_uploads"
    );
    let remove = |token: &str, id: i64| {
        let token = token.to_owned();
        async move {
            request(
                server.http,
                "DELETE",
                &format!("/api/files/{id}"),
                Some(&token),
                None,
            )
            .await
        }
    };
    // Someone else's upload is not found, as one cannot read it; nothing is removed.
    let refused = remove(&b, one.id).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (404, "not_found")
    );
    assert_eq!(download(server.http, &a, one.id).await.status, 200);
    // Its uploader removes it: gone at once, bytes, quota and pending count with it.
    let removed = remove(&a, one.id).await;
    assert_eq!(
        removed.status,
        204,
        "{}",
        String::from_utf8_lossy(&removed.body)
    );
    assert_eq!(download(server.http, &a, one.id).await.status, 404);
    assert_eq!(blobs_on_disk(&server), 1);
    uploaded(server.http, &a, "three.bin", &[3u8; 800]).await;
    assert_eq!(remove(&a, one.id).await.status, 404, "already removed");
    // A file a message carries goes with its messages, not on its own.
    alice.send_files("Blabla", "", &[two.id]).await.unwrap();
    let refused = remove(&a, two.id).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (409, "file_attached")
    );
    assert_eq!(download(server.http, &b, two.id).await.status, 200);
}

#[tokio::test]
async fn uploads_side_by_side_cannot_together_pass_the_pending_limit() {
    let server = TestServer::start_with(|c| c.limits.pending_uploads_max = 2).await;
    let (_alice, welcome) = server.user("alice").await;
    // Twelve at once: each is admitted with none pending, two are stored.
    side_by_side(
        &server,
        &welcome.token,
        12,
        100,
        2,
        "too_many_pending_uploads",
    )
    .await;
}

#[tokio::test]
async fn the_files_api_answers_every_refusal_with_a_code() {
    let server = TestServer::start().await;
    let (_alice, welcome) = server.user("alice").await;
    let token = Some(welcome.token.as_str());
    let file = uploaded(server.http, &welcome.token, "a.txt", b"hello").await;
    let id = file.id;
    for (method, path, status, code) in [
        (
            "DELETE",
            format!("/api/files/{id}/preview"),
            405,
            "method_not_allowed",
        ),
        ("DELETE", "/api/files/x".to_owned(), 404, "not_found"),
        ("PUT", "/api/files".to_owned(), 405, "method_not_allowed"),
        ("GET", "/api/files".to_owned(), 405, "method_not_allowed"),
        (
            "POST",
            format!("/api/files/{id}/preview"),
            405,
            "method_not_allowed",
        ),
        ("GET", format!("/api/files/{id}/1/2"), 404, "not_found"),
        ("GET", "/api/nothing".to_owned(), 404, "not_found"),
        (
            "POST",
            "/api/files?name=a&name=b".to_owned(),
            400,
            "invalid_request",
        ),
    ] {
        let body = (method == "POST" || method == "PUT").then_some(b"x".as_slice());
        let answer = request(server.http, method, &path, token, body).await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (status, code),
            "{method} {path}"
        );
        assert_eq!(answer.header("x-content-type-options"), "nosniff");
    }
}

#[tokio::test]
async fn files_need_the_session_token() {
    let server = TestServer::start().await;
    let (alice, welcome) = server.user("alice").await;
    let file = uploaded(server.http, &welcome.token, "a.txt", b"hello").await;
    let answer = request(server.http, "POST", "/api/files?name=a", None, Some(b"x")).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (401, "unauthorized")
    );
    assert_eq!(answer.header("www-authenticate"), "Bearer");
    let answer = download(server.http, "not-a-token", file.id).await;
    assert_eq!(answer.status, 401);
    // The scheme's name is case-insensitive; another scheme is no token.
    for (scheme, status) in [("BEARER", 200), ("bearer", 200), ("Basic", 401)] {
        let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
        let head = format!(
            "GET /api/files/{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: {scheme} {}\r\n\r\n",
            file.id, welcome.token
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(read_answer(&mut stream).await.status, status, "{scheme}");
    }
    // A token stops working at logout.
    alice.logout().await.unwrap();
    assert_eq!(
        download(server.http, &welcome.token, file.id).await.status,
        401
    );
}

#[tokio::test]
async fn a_message_carries_only_its_authors_files() {
    let server = TestServer::start_with(|c| c.limits.attachments_per_message_max = 2).await;
    let [(alice, a), (bob, _), _] = blabla(&server).await;
    let file = uploaded(server.http, &a, "a.txt", b"alice's").await;
    let e = bob
        .send_files("Blabla", "mine now", &[file.id])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoSuchFile));
    let e = bob.direct_files("alice", "", &[file.id]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoSuchFile));
    let e = alice.send_files("Blabla", "", &[424242]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoSuchFile));
    let e = alice
        .send_files("Blabla", "", &[file.id, file.id])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
    let more: Vec<i64> = vec![file.id, 1, 2];
    let e = alice.send_files("Blabla", "", &more).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
    // Without files, a message still needs text.
    let e = alice.send_files("Blabla", " ", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::EmptyMessage));
    alice.send_files("Blabla", "", &[file.id]).await.unwrap();
}

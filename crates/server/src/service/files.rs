//! Files (issue 14): uploads (streamed to a temporary file while hashed, refused past
//! `upload_max_bytes` or the uploader's `upload_quota_bytes`), what a message may attach,
//! who may read a file, and the sweep that removes files no message carries. The HTTP
//! side is `net/files.rs`; the bytes live in [`Blobs`], the rows in `store/files.rs`.

use std::io;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use salon_proto::{Attachment, ErrorBody, ErrorCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use unicode_normalization::UnicodeNormalization;
use unicode_security::general_security_profile::IdentifierType;
use unicode_security::GeneralSecurityProfile;

use crate::blobs::Blobs;
use crate::live::Identity;
use crate::media;
use crate::store::{FileRow, PendingRemoval};

use super::*;

/// Images decoded at once (each holds at most about three times
/// [`media::MAX_DECODED_BYTES`] and a core, until its decoding ends, whether or not its
/// upload is still there).
const CONCURRENT_DECODES: usize = 2;
/// Bytes of an upload kept to sniff its type.
const SNIFF_BYTES: usize = 8192;
/// Longest display name, in characters.
const NAME_CHARS: usize = 200;
/// How long an upload no message carries is kept.
pub(crate) const UNATTACHED_GRACE_MS: i64 = 24 * 3_600_000;
/// Files one sweep removes at most (the next sweep takes the rest).
const SWEEP_BATCH: u32 = 1000;

/// The files side of the service: where blobs live, the bound on image decoding (and
/// each user's turn at it), and the lock that keeps a sweep from removing a blob an
/// upload is naming at that moment.
pub(crate) struct Files {
    pub blobs: Blobs,
    decodes: Arc<tokio::sync::Semaphore>,
    turns: Turns,
    blob_names: tokio::sync::Mutex<()>,
    /// Told when a message was deleted: its files (and their quota) are swept within
    /// [`SWEEP_SOON`] rather than at the next periodic sweep.
    pub sweep_soon: Arc<tokio::sync::Notify>,
}

/// How long after a deletion its files are swept: deletions in the meantime are swept
/// together.
pub(crate) const SWEEP_SOON: std::time::Duration = std::time::Duration::from_secs(2);

impl Files {
    pub fn new(blobs: Blobs) -> Files {
        Files {
            blobs,
            decodes: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DECODES)),
            turns: Turns::default(),
            blob_names: tokio::sync::Mutex::new(()),
            sweep_soon: Arc::default(),
        }
    }
}

/// One image at a time per user: a user's next image waits for their previous one
/// before it may take one of the [`CONCURRENT_DECODES`] decoders, so one user sending
/// many large images side by side holds one decoder, never all of them, and the others'
/// images still go through. At most one live entry per upload in progress.
type Turns = UserLocks;

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("a file may be at most {max} bytes")]
    TooLarge { max: u64 },
    #[error("this upload would take your files to {needed} bytes, over your quota of {quota}")]
    Quota { needed: u64, quota: u64 },
    #[error(
        "you have {max} uploaded files that no message carries yet; send some first (an \
         upload no message carries is removed after 24 hours)"
    )]
    TooManyPending { max: u32 },
    #[error(
        "this image could not be read (damaged, or too large to process), so its \
         metadata could not be taken out: it was not stored"
    )]
    UnreadableImage,
    #[error("the upload was interrupted")]
    Interrupted,
    #[error(
        "the upload took longer than {seconds} s, the most one may take; send a smaller \
         file or use a faster connection"
    )]
    TooSlow { seconds: u64 },
    #[error("the server's file storage is full")]
    StorageFull,
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Service(#[from] Error),
}

impl From<StoreError> for UploadError {
    fn from(e: StoreError) -> Self {
        UploadError::Service(Error::Store(e))
    }
}

/// Whether an I/O error means the disk (or the user's share of it) is full.
fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

fn storage(e: io::Error) -> UploadError {
    if is_full(&e) {
        UploadError::StorageFull
    } else {
        UploadError::Io(e)
    }
}

/// A display name: the last path component in NFC (the form macOS does not send), without
/// what people cannot see, at most [`NAME_CHARS`] characters; `file` if nothing is left.
///
/// Taken out: control characters, line and paragraph separators, and every default
/// ignorable code point (UTS #39's identifier type, from `unicode-security`, as for
/// usernames): bidirectional controls and marks, zero-width spaces and joiners, the byte
/// order mark, Hangul fillers, variation selectors and tag characters (which can carry a
/// whole invisible text). A name then shows what it is: `invoice.pdf` with a zero-width
/// space in it does not pass for another `invoice.pdf`, nor `gnp.exe` behind a
/// right-to-left override for a picture. Emoji joined by a zero-width joiner show as
/// their parts, the price of that.
pub(crate) fn sanitize_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last
        .nfc()
        .filter(|&c| {
            !c.is_control()
                && !matches!(c, '\u{2028}' | '\u{2029}')
                && c.identifier_type() != Some(IdentifierType::Default_Ignorable)
        })
        .take(NAME_CHARS)
        .collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." {
        "file".to_owned()
    } else {
        clean.to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Service {
    /// The account of a session token (`Welcome.token`), if it is valid.
    pub(crate) async fn user_by_token(&self, token: &str) -> Result<Option<Identity>> {
        let hash = accounts::session_token_hash(token);
        Ok(self
            .store
            .user_by_session_token(&hash, self.clock.now_ms())
            .await?
            .map(|(u, _)| Identity {
                id: u.id,
                username: u.username,
                alias: u.alias,
                is_admin: u.is_admin,
            }))
    }

    /// The files a message of `me` may carry: `ids` in order, each `me`'s own upload,
    /// not removed, at most `attachments_per_message_max`, no repeats.
    pub(crate) async fn attachable(&self, me: &Identity, ids: &[i64]) -> Result<Vec<Attachment>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let max = self.config.limits.attachments_per_message_max as usize;
        if ids.len() > max {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                format!("a message carries at most {max} files"),
            )
            .with_field("attachments")
            .into());
        }
        let mut seen = std::collections::HashSet::new();
        if !ids.iter().all(|id| seen.insert(*id)) {
            return Err(ErrorBody::new(
                ErrorCode::InvalidRequest,
                "the same file is attached twice",
            )
            .with_field("attachments")
            .into());
        }
        let rows = self.store.attachable_files(me.id, ids).await?;
        ids.iter()
            .map(|id| {
                rows.iter()
                    .find(|r| r.id == *id)
                    .map(FileRow::to_attachment)
                    .ok_or_else(|| {
                        ErrorBody::new(
                            ErrorCode::NoSuchFile,
                            format!("there is no file {id} of yours to attach"),
                        )
                        .with_field("attachments")
                        .into()
                    })
            })
            .collect()
    }

    /// Refuses an upload of `announced` bytes (if known) that is over the size limit or
    /// the user's quota, before its body is read.
    pub(crate) async fn admit_upload(
        &self,
        me: &Identity,
        announced: Option<u64>,
    ) -> Result<(), UploadError> {
        let limits = &self.config.limits;
        if let Some(n) = announced {
            if n > limits.upload_max_bytes {
                return Err(UploadError::TooLarge {
                    max: limits.upload_max_bytes,
                });
            }
        }
        let pending = self.store.pending_files_of(me.id).await?;
        if pending >= i64::from(limits.pending_uploads_max) {
            return Err(UploadError::TooManyPending {
                max: limits.pending_uploads_max,
            });
        }
        let used = u64::try_from(self.store.file_bytes_of(me.id).await?).unwrap_or(0);
        let needed = used.saturating_add(announced.unwrap_or(1));
        if needed > limits.upload_quota_bytes {
            return Err(UploadError::Quota {
                needed,
                quota: limits.upload_quota_bytes,
            });
        }
        Ok(())
    }

    /// Stores an upload: the body is written to a temporary file while hashed and
    /// counted (past `upload_max_bytes` it stops reading and refuses), its type sniffed,
    /// an image decoded and encoded again with its preview; then the row is stored and
    /// the blob named by its hash. Whatever fails or is cancelled (the future dropped)
    /// leaves no temporary file.
    pub(crate) async fn upload<S, E>(
        &self,
        me: &Identity,
        name: &str,
        mut body: S,
    ) -> Result<FileRow, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let max = self.config.limits.upload_max_bytes;
        let idle = std::time::Duration::from_millis(self.config.limits.upload_idle_timeout_ms);
        let blobs = &self.files.blobs;
        let mut temp = blobs.temp().await.map_err(storage)?;
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut size: u64 = 0;
        // A body that keeps sending a little, never idle for long, still ends by this.
        let total = self.config.limits.upload_timeout_ms;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(total);
        loop {
            let next = tokio::time::timeout(idle, body.next());
            let chunk = match tokio::time::timeout_at(deadline, next).await {
                Ok(Ok(Some(chunk))) => chunk.map_err(|_| UploadError::Interrupted)?,
                Ok(Ok(None)) => break,
                Ok(Err(_)) => return Err(UploadError::Interrupted),
                Err(_) => {
                    return Err(UploadError::TooSlow {
                        seconds: total / 1000,
                    })
                }
            };
            size += chunk.len() as u64;
            if size > max {
                return Err(UploadError::TooLarge { max });
            }
            if head.len() < SNIFF_BYTES {
                let take = chunk.len().min(SNIFF_BYTES - head.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            if let Some(file) = temp.file.as_mut() {
                file.write_all(&chunk).await.map_err(storage)?;
            }
        }
        temp.finish().await.map_err(storage)?;
        // The quota again, with the real size (a body without a length), before the
        // work of decoding an image; checked for good below.
        self.within_quota(me.id, size).await?;

        let image = match media::image_format(&head) {
            Some(format) => Some(self.prepare_image(me.id, temp.path(), format).await?),
            None => None,
        };
        let now = self.clock.now_ms();
        let mut row = FileRow {
            id: self.ids.next(now),
            uploader_id: me.id,
            sha256: hex(&hasher.finalize()),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            mime: String::new(),
            name: sanitize_name(name),
            width: None,
            height: None,
            preview_sha256: None,
            created_at: now,
        };
        // The blobs to name: (temporary file, hash).
        let mut blobs_to_put = Vec::new();
        match image {
            Some(media::Prepared::Image(image)) => {
                // The original bytes are not kept: only the image encoded again.
                drop(temp);
                let full = blobs.temp_with(&image.full).await.map_err(storage)?;
                row.sha256 = hex(&Sha256::digest(&image.full));
                row.size = image.full.len() as i64;
                row.mime = image.mime.to_owned();
                row.width = Some(i64::from(image.width));
                row.height = Some(i64::from(image.height));
                let preview = blobs.temp_with(&image.preview).await.map_err(storage)?;
                let preview_sha = hex(&Sha256::digest(&image.preview));
                row.preview_sha256 = Some(preview_sha.clone());
                blobs_to_put.push((full, row.sha256.clone()));
                blobs_to_put.push((preview, preview_sha));
            }
            Some(media::Prepared::Download(stripped)) => {
                drop(temp);
                row.sha256 = hex(&Sha256::digest(&stripped));
                row.size = stripped.len() as i64;
                row.mime = media::sniff_other(&head);
                let file = blobs.temp_with(&stripped).await.map_err(storage)?;
                blobs_to_put.push((file, row.sha256.clone()));
            }
            Some(media::Prepared::Unreadable) => return Err(UploadError::UnreadableImage),
            None => {
                row.mime = media::sniff_other(&head);
                blobs_to_put.push((temp, row.sha256.clone()));
            }
        }
        // Row first, then the blobs, under the lock the sweep takes to check and remove a
        // blob: a sweep never removes a blob a new row names.
        let _names = self.files.blob_names.lock().await;
        // The uploads waiting to be attached, again: uploads admitted side by side each
        // saw room for one more.
        let limits = &self.config.limits;
        if self.store.pending_files_of(me.id).await? >= i64::from(limits.pending_uploads_max) {
            return Err(UploadError::TooManyPending {
                max: limits.pending_uploads_max,
            });
        }
        // The quota for good, with the size stored, under the lock every upload of this
        // node stores its row under: uploads running side by side cannot each find
        // room and together go past it.
        self.within_quota(me.id, u64::try_from(row.size).unwrap_or(u64::MAX))
            .await?;
        self.store.insert_file(&row).await?;
        let mut put = Vec::new();
        for (temp, sha) in blobs_to_put {
            if let Err(e) = blobs.put(temp, &sha).await {
                self.unstore(&row, &put).await;
                return Err(storage(e));
            }
            put.push(sha);
        }
        Ok(row)
    }

    /// Whether `size` more bytes fit in `user`'s quota (`upload_quota_bytes`).
    async fn within_quota(&self, user: i64, size: u64) -> Result<(), UploadError> {
        let used = u64::try_from(self.store.file_bytes_of(user).await?).unwrap_or(0);
        let quota = self.config.limits.upload_quota_bytes;
        let needed = used.saturating_add(size);
        if needed > quota {
            return Err(UploadError::Quota { needed, quota });
        }
        Ok(())
    }

    /// Takes back an upload whose blobs could not all be stored: its row, and the blobs
    /// it put that nothing else names (the caller holds `blob_names`).
    async fn unstore(&self, row: &FileRow, put: &[String]) {
        if let Err(e) = self.store.delete_file(row.id).await {
            tracing::warn!(error = %e, file = row.id, "could not remove a file row");
            return;
        }
        for sha in put {
            if let Err(e) = self.remove_unused(sha).await {
                tracing::warn!(error = %e, %sha, "could not remove a file");
            }
        }
    }

    /// Removes blob `sha` if no file row names it; whether it did. Safe against another
    /// node sharing the files directory that stores the same content meanwhile (it
    /// commits its row, then moves its copy into place; `blob_names` serialises only
    /// this node): the blob is set aside, whether a row names it is asked again, and it
    /// is then discarded or put back (`Blobs::set_aside`).
    async fn remove_unused(&self, sha: &str) -> Result<bool, UploadError> {
        let blobs = &self.files.blobs;
        if self.store.blob_in_use(sha).await? {
            return Ok(false);
        }
        let Some(aside) = blobs.set_aside(sha).await? else {
            return Ok(false);
        };
        match self.store.blob_in_use(sha).await {
            Ok(false) => {
                blobs.discard(&aside).await?;
                Ok(true)
            }
            Ok(true) => {
                blobs.put_back(&aside, sha).await?;
                Ok(false)
            }
            Err(e) => {
                if let Err(io) = blobs.put_back(&aside, sha).await {
                    tracing::warn!(error = %io, %sha, "a file set aside could not be put back");
                }
                Err(e.into())
            }
        }
    }

    /// Prepares `user`'s image on the blocking pool, at most [`CONCURRENT_DECODES`] at
    /// once and one at a time per user ([`Turns`]) (`media::prepare`: decoded and
    /// encoded again, or its metadata taken out).
    async fn prepare_image(
        &self,
        user: i64,
        path: &std::path::Path,
        format: image::ImageFormat,
    ) -> Result<media::Prepared, UploadError> {
        let turn = self.files.turns.lock(user).await;
        // Never closed; were it, nothing unprepared may be stored.
        let permit = self
            .files
            .decodes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| UploadError::UnreadableImage)?;
        let bytes = tokio::fs::read(path).await.map_err(storage)?;
        let max = self.config.limits.upload_max_bytes;
        // The turn and the decoder are held by the work itself, not by this future: an
        // upload whose client goes away drops the future, while the decoding runs on to
        // its end, and its memory still counts against the bound until then.
        let work = move || {
            let prepared = media::prepare(bytes, format, max);
            drop((permit, turn));
            prepared
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(prepared) => Ok(prepared),
            Err(e) => {
                tracing::warn!(error = %e, "files: preparing an image failed");
                Err(UploadError::UnreadableImage)
            }
        }
    }

    /// Removes `me`'s upload `id` that no message carried yet (taken off a message
    /// before it was sent): its row at once (and so its share of the quota and of the
    /// pending uploads), then its blobs if no other row names them.
    pub(crate) async fn remove_upload(&self, me: &Identity, id: i64) -> Result<PendingRemoval> {
        let removal = self.store.remove_pending_file(id, me.id).await?;
        if let PendingRemoval::Removed(hashes) = &removal {
            let _names = self.files.blob_names.lock().await;
            for sha in hashes {
                match self.remove_unused(sha).await {
                    Ok(_) => {}
                    Err(UploadError::Service(e)) => return Err(e),
                    // The row is gone, so no sweep will look at these bytes again
                    // (as when a sweep's own removal fails): said in the log.
                    Err(e) => tracing::warn!(error = %e, %sha, "could not remove a file"),
                }
            }
        }
        Ok(removal)
    }

    /// Removes files no message carries any more (their messages deleted) and uploads
    /// never attached within [`UNATTACHED_GRACE_MS`], then the blobs no row names.
    pub(crate) async fn sweep_files(&self) -> Result<usize> {
        let before = self.clock.now_ms() - UNATTACHED_GRACE_MS;
        let hashes = self.store.sweep_files(before, SWEEP_BATCH).await?;
        let _names = self.files.blob_names.lock().await;
        let mut removed = 0;
        for sha in hashes {
            match self.remove_unused(&sha).await {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(UploadError::Service(e)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, %sha, "could not remove a file"),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::{sanitize_name, Turns};

    #[test]
    fn a_display_name_has_no_path_and_no_controls() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("C:\\Users\\me\\plan.pdf"), "plan.pdf");
        assert_eq!(sanitize_name("a\u{0}b\nc\u{202e}gnp.exe"), "abcgnp.exe");
        assert_eq!(sanitize_name(".."), "file");
        assert_eq!(sanitize_name("  "), "file");
        assert_eq!(sanitize_name(&"é".repeat(500)).chars().count(), 200);
    }

    #[tokio::test]
    async fn one_user_waits_for_their_own_image_not_for_everyone() {
        use std::time::Duration;
        let turns = Turns::default();
        let first = turns.lock(1).await;
        // The same user's second image waits for the first…
        let mut second = Box::pin(turns.lock(1));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "a user's second image did not wait for the first"
        );
        // …another user's does not.
        let other = tokio::time::timeout(Duration::from_millis(50), turns.lock(2))
            .await
            .expect("another user's image waited");
        assert_eq!(turns.users(), 2);
        drop(other);
        assert_eq!(turns.users(), 1);
        drop(first);
        let second = tokio::time::timeout(Duration::from_millis(50), second)
            .await
            .expect("the second image got its turn once the first was done");
        // A waiter given up (its upload cancelled) leaves nothing behind either.
        let mut third = Box::pin(turns.lock(1));
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut third)
            .await
            .is_err());
        drop(third);
        drop(second);
        assert_eq!(turns.users(), 0, "the map keeps a user nobody waits for");
        let again = tokio::time::timeout(Duration::from_millis(50), turns.lock(1))
            .await
            .expect("the turn was given back");
        drop(again);
        assert_eq!(turns.users(), 0);
    }

    #[test]
    fn a_display_name_keeps_nothing_invisible() {
        for hidden in [
            '\u{200b}',  // zero-width space
            '\u{200d}',  // zero-width joiner
            '\u{200e}',  // left-to-right mark
            '\u{feff}',  // byte order mark
            '\u{061c}',  // Arabic letter mark
            '\u{2066}',  // left-to-right isolate
            '\u{2060}',  // word joiner
            '\u{00ad}',  // soft hyphen
            '\u{3164}',  // Hangul filler
            '\u{fe0f}',  // variation selector 16
            '\u{e0041}', // tag letter A
            '\u{2028}',  // line separator
        ] {
            assert_eq!(
                sanitize_name(&format!("in{hidden}voice.pdf")),
                "invoice.pdf",
                "U+{:04X}",
                hidden as u32
            );
        }
        // What people see stays: accents (composed), other scripts, emoji, spaces.
        assert_eq!(sanitize_name("re\u{301}union.pdf"), "réunion.pdf");
        assert_eq!(sanitize_name("会議 メモ 🐈.txt"), "会議 メモ 🐈.txt");
        assert_eq!(sanitize_name("\u{200b}"), "file");
    }
}

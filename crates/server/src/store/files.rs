//! Files attached to messages (issue 14): the `files` table (one row per upload, naming
//! its content-addressed blob) and `attachments` (which files a message carries). Who may
//! read a file is decided here, by one query per request: its uploader before any
//! message carried it, then whoever can read a message still carrying it.

use std::collections::HashMap;

use salon_proto::Attachment;

use super::{multi_insert, Result, Store, Tx};

/// A stored file as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FileRow {
    pub id: i64,
    pub uploader_id: i64,
    pub sha256: String,
    pub size: i64,
    pub mime: String,
    pub name: String,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub preview_sha256: Option<String>,
    pub created_at: i64,
}

impl FileRow {
    /// As a message shows it.
    pub fn to_attachment(&self) -> Attachment {
        Attachment {
            id: self.id,
            name: self.name.clone(),
            size: u64::try_from(self.size).unwrap_or(0),
            mime: self.mime.clone(),
            preview: self.preview_sha256.is_some(),
            width: self.width.and_then(|w| u32::try_from(w).ok()),
            height: self.height.and_then(|h| u32::try_from(h).ok()),
        }
    }
}

#[derive(sqlx::FromRow)]
struct AttachedRecord {
    message_id: i64,
    #[sqlx(flatten)]
    file: FileRow,
}

/// The columns of a [`FileRow`] of `files f`.
macro_rules! file_columns {
    () => {
        "f.id, f.uploader_id, f.sha256, f.size, f.mime, f.name, f.width, f.height, \
         f.preview_sha256, f.created_at"
    };
}

/// What [`Store::remove_pending_file`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum PendingRemoval {
    /// Removed; the hashes (content and preview) it named.
    Removed(Vec<String>),
    /// A message carries it (or did): it goes with its messages.
    Attached,
    /// No upload of this user has this id.
    Unknown,
}

/// Files a batch of messages carries: (message id, file ids in order).
pub type AttachmentRows<'a> = Vec<(i64, &'a [i64])>;

impl Store {
    /// Records an upload (its blob is already in place, or about to be, under its hash).
    pub async fn insert_file(&self, f: &FileRow) -> Result<()> {
        let sql = self.sql(
            "INSERT INTO files (id, uploader_id, sha256, size, mime, name, width, height, \
             preview_sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        self.execute(
            sqlx::query(&sql)
                .bind(f.id)
                .bind(f.uploader_id)
                .bind(&f.sha256)
                .bind(f.size)
                .bind(&f.mime)
                .bind(&f.name)
                .bind(f.width)
                .bind(f.height)
                .bind(f.preview_sha256.as_deref())
                .bind(f.created_at),
        )
        .await?;
        Ok(())
    }

    /// Bytes of files `user` has stored (every row not yet removed counts, attached or
    /// not).
    pub async fn file_bytes_of(&self, user: i64) -> Result<i64> {
        let sql = self.dialect.rewrite(&format!(
            "SELECT {} AS scalar FROM files WHERE uploader_id = ?",
            self.dialect.sum_as_integer("size")
        ));
        self.fetch_scalar(sqlx::query(&sql).bind(user)).await
    }

    /// Removes an upload's row whose blob could not be stored.
    pub async fn delete_file(&self, id: i64) -> Result<()> {
        let sql = self.sql("DELETE FROM files WHERE id = ?");
        self.execute(sqlx::query(&sql).bind(id)).await?;
        Ok(())
    }

    /// Removes `user`'s upload `id` if no message ever carried it (a file taken off a
    /// message before it was sent). The row goes at once, so the user's quota and pending
    /// uploads count it no more; the blobs it named are returned for
    /// [`Store::blob_in_use`].
    pub async fn remove_pending_file(&self, id: i64, user: i64) -> Result<PendingRemoval> {
        #[derive(sqlx::FromRow)]
        struct Own {
            sha256: String,
            preview_sha256: Option<String>,
            attached_at: Option<i64>,
        }
        let sql = self.sql(
            "SELECT sha256, preview_sha256, attached_at FROM files \
             WHERE id = ? AND uploader_id = ?",
        );
        let own: Option<Own> = self
            .fetch_optional_as(sqlx::query(&sql).bind(id).bind(user))
            .await?;
        let Some(own) = own else {
            return Ok(PendingRemoval::Unknown);
        };
        if own.attached_at.is_some() {
            return Ok(PendingRemoval::Attached);
        }
        // Checked again in the statement: a message may have taken it meanwhile.
        let sql = self.sql(
            "DELETE FROM files WHERE id = ? AND attached_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.file_id = ?)",
        );
        let done = self.execute(sqlx::query(&sql).bind(id).bind(id)).await?;
        if done.rows_affected() != 1 {
            return Ok(PendingRemoval::Attached);
        }
        let mut hashes = vec![own.sha256];
        hashes.extend(own.preview_sha256);
        Ok(PendingRemoval::Removed(hashes))
    }

    /// How many uploads of `user` no message carried yet.
    pub async fn pending_files_of(&self, user: i64) -> Result<i64> {
        let sql = self.sql(
            "SELECT COUNT(*) AS scalar FROM files WHERE uploader_id = ? AND attached_at IS NULL",
        );
        self.fetch_scalar(sqlx::query(&sql).bind(user)).await
    }

    /// The file `id` if `user` may read it: its uploader while no message carried it yet,
    /// or anyone who can read a message not deleted that carries it (a member of its
    /// room, the sender or recipient of its private message). `None` otherwise, as for an
    /// unknown id.
    pub async fn readable_file(&self, id: i64, user: i64) -> Result<Option<FileRow>> {
        let sql = self.sql(concat!(
            "SELECT ",
            file_columns!(),
            " FROM files f WHERE f.id = ? AND (\
               (f.uploader_id = ? AND f.attached_at IS NULL) \
               OR EXISTS (SELECT 1 FROM attachments a \
                  JOIN messages m ON m.id = a.message_id AND m.deleted_at IS NULL \
                  JOIN memberships mb ON mb.room_id = m.room_id AND mb.user_id = ? \
                  WHERE a.file_id = f.id) \
               OR EXISTS (SELECT 1 FROM attachments a \
                  JOIN direct_messages d ON d.id = a.message_id AND d.deleted_at IS NULL \
                  WHERE a.file_id = f.id AND (d.sender_id = ? OR d.recipient_id = ?)))"
        ));
        self.fetch_optional_as(
            sqlx::query(&sql)
                .bind(id)
                .bind(user)
                .bind(user)
                .bind(user)
                .bind(user),
        )
        .await
    }

    /// Those of `ids` that `user` uploaded and may attach: not yet attached, or still
    /// carried by a message (not waiting for removal after its message was deleted).
    pub async fn attachable_files(&self, user: i64, ids: &[i64]) -> Result<Vec<FileRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = self.dialect.rewrite(&format!(
            "SELECT {} FROM files f WHERE f.uploader_id = ? AND f.id IN ({}) AND \
             (f.attached_at IS NULL OR EXISTS (SELECT 1 FROM attachments a WHERE a.file_id = f.id))",
            file_columns!(),
            vec!["?"; ids.len()].join(", ")
        ));
        let mut q = sqlx::query(&sql).bind(user);
        for id in ids {
            q = q.bind(*id);
        }
        self.fetch_all_as(q).await
    }

    /// Stores which files the messages of a batch carry, in the batch's transaction, and
    /// marks those files attached. Called only when some message has files.
    pub(super) async fn insert_attachments(
        &self,
        tx: &mut Tx,
        rows: &AttachmentRows<'_>,
        now: i64,
    ) -> Result<()> {
        let flat: Vec<(i64, i64, i64)> = rows
            .iter()
            .flat_map(|(message, files)| {
                files
                    .iter()
                    .enumerate()
                    .map(move |(i, file)| (*message, *file, i as i64))
            })
            .collect();
        for chunk in flat.chunks(64) {
            let sql = self.dialect.rewrite(&multi_insert(
                "attachments (message_id, file_id, position)",
                3,
                chunk.len(),
            ));
            let mut q = sqlx::query(&sql);
            for (message, file, position) in chunk {
                q = q.bind(*message).bind(*file).bind(*position);
            }
            tx.execute(q).await?;
            let sql = self.dialect.rewrite(&format!(
                "UPDATE files SET attached_at = ? WHERE attached_at IS NULL AND id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            ));
            let mut q = sqlx::query(&sql).bind(now);
            for (_, file, _) in chunk {
                q = q.bind(*file);
            }
            tx.execute(q).await?;
        }
        Ok(())
    }

    /// A deleted message's files, in its deletion's transaction: they are no longer
    /// readable through it, and the sweep removes those nothing else carries.
    pub(super) async fn detach_files(&self, tx: &mut Tx, message: i64) -> Result<()> {
        let sql = self.sql("DELETE FROM attachments WHERE message_id = ?");
        tx.execute(sqlx::query(&sql).bind(message)).await?;
        Ok(())
    }

    /// The files each of these messages carries, in order.
    pub(super) async fn attachments_for(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, Vec<Attachment>>> {
        let mut out: HashMap<i64, Vec<Attachment>> = HashMap::new();
        for chunk in ids.chunks(128) {
            let sql = self.dialect.rewrite(&format!(
                "SELECT a.message_id, {} FROM attachments a JOIN files f ON f.id = a.file_id \
                 WHERE a.message_id IN ({}) ORDER BY a.message_id, a.position",
                file_columns!(),
                vec!["?"; chunk.len()].join(", ")
            ));
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            let rows: Vec<AttachedRecord> = self.fetch_all_as(q).await?;
            for r in rows {
                out.entry(r.message_id)
                    .or_default()
                    .push(r.file.to_attachment());
            }
        }
        Ok(out)
    }

    /// Removes the rows of files no message carries: those once attached (their messages
    /// were all deleted) and those never attached, uploaded before `unattached_before`.
    /// Returns the hashes (blobs and previews) they named, for [`Store::blob_in_use`].
    pub async fn sweep_files(&self, unattached_before: i64, limit: u32) -> Result<Vec<String>> {
        let sql = self.sql(
            "SELECT f.id, f.sha256, f.preview_sha256 FROM files f \
             WHERE (f.attached_at IS NOT NULL OR f.created_at < ?) \
             AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.file_id = f.id) \
             ORDER BY f.id LIMIT ?",
        );
        #[derive(sqlx::FromRow)]
        struct Gone {
            id: i64,
            sha256: String,
            preview_sha256: Option<String>,
        }
        let gone: Vec<Gone> = self
            .fetch_all_as(
                sqlx::query(&sql)
                    .bind(unattached_before)
                    .bind(i64::from(limit)),
            )
            .await?;
        let mut hashes = Vec::new();
        for g in gone {
            // Checked again in the statement: a message may have taken it meanwhile.
            let sql = self.sql(
                "DELETE FROM files WHERE id = ? \
                 AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.file_id = ?)",
            );
            let done = self
                .execute(sqlx::query(&sql).bind(g.id).bind(g.id))
                .await?;
            if done.rows_affected() == 1 {
                hashes.push(g.sha256);
                hashes.extend(g.preview_sha256);
            }
        }
        hashes.sort();
        hashes.dedup();
        Ok(hashes)
    }

    /// Whether any file row still names this blob (as its content or its preview).
    pub async fn blob_in_use(&self, sha: &str) -> Result<bool> {
        let sql =
            self.sql("SELECT COUNT(*) AS scalar FROM files WHERE sha256 = ? OR preview_sha256 = ?");
        let n: i64 = self
            .fetch_scalar(sqlx::query(&sql).bind(sha).bind(sha))
            .await?;
        Ok(n > 0)
    }
}

//! Where attached files' bytes live: a directory of write-once files named by the
//! SHA-256 of their content (`files_dir/ab/abcdef…`), so identical content is stored
//! once. A file is written under a temporary name in `files_dir/tmp/` and moved into
//! place with one `rename` (atomic on any POSIX filesystem): a reader, on this node or
//! another mounting the same directory, sees a whole file or none. Names given by users
//! never reach a path; only hashes (checked hex) do.
//!
//! This is the small interface an object store (S3 and the like) would implement later:
//! `temp` + `put` (write once under a hash), `read`, `set_aside` + `discard` or `put_back`
//! (remove).

use std::io;
use std::path::{Path, PathBuf};

use rand::RngCore;
use tokio::io::AsyncWriteExt;

/// The files directory.
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

/// A file being written, removed when dropped unless [`Blobs::put`] moved it into place
/// (an upload cancelled, refused or failed leaves nothing behind).
#[derive(Debug)]
pub struct TempBlob {
    path: PathBuf,
    pub file: Option<tokio::fs::File>,
    kept: bool,
}

impl TempBlob {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes what was written to disk (before it is named by its hash).
    pub async fn finish(&mut self) -> io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
            file.sync_all().await?;
        }
        Ok(())
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.kept {
            self.file = None;
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether `sha` is a SHA-256 in lower-case hex (the only names a blob path is made of).
fn valid_hash(sha: &str) -> bool {
    sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Blobs {
    /// The directory (and its `tmp/`), created `0700` if missing. Temporary files a
    /// crash left behind more than a day ago are removed (younger ones may be uploads in
    /// progress on another node sharing the directory).
    pub fn open(dir: PathBuf) -> io::Result<Blobs> {
        crate::files::create_private_dir(&dir)?;
        let tmp = dir.join("tmp");
        crate::files::create_private_dir(&tmp)?;
        let day = std::time::Duration::from_secs(86_400);
        for entry in std::fs::read_dir(&tmp)?.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Blobs { dir })
    }

    /// The directory, as [`Blobs::open`] made it (no I/O).
    pub fn at(dir: PathBuf) -> Blobs {
        Blobs { dir }
    }

    fn path_of(&self, sha: &str) -> io::Result<PathBuf> {
        if !valid_hash(sha) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a hash"));
        }
        Ok(self.dir.join(&sha[..2]).join(sha))
    }

    /// Copies blob `sha` into `into` (a directory laid out as this one, made `0700`
    /// where needed), the copy owner-only; its size, or `None` if there is no such blob
    /// (removed since whoever named it looked). For `salon backup`.
    pub fn copy_to(&self, sha: &str, into: &Path) -> io::Result<Option<u64>> {
        let from = self.path_of(sha)?;
        let dir = into.join(&sha[..2]);
        crate::files::create_private_dir(&dir)?;
        let to = dir.join(sha);
        match std::fs::copy(&from, &to) {
            Ok(bytes) => {
                crate::files::restrict_file(&to)?;
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !from.exists() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A new temporary file to write an upload into.
    pub async fn temp(&self) -> io::Result<TempBlob> {
        let name = format!("upload-{:016x}", rand::rngs::OsRng.next_u64());
        let path = self.dir.join("tmp").join(name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(TempBlob {
            path,
            file: Some(file),
            kept: false,
        })
    }

    /// Writes bytes made by the server (a re-encoded image, a preview) as a temporary
    /// file, flushed.
    pub async fn temp_with(&self, bytes: &[u8]) -> io::Result<TempBlob> {
        let mut temp = self.temp().await?;
        if let Some(file) = temp.file.as_mut() {
            file.write_all(bytes).await?;
        }
        temp.finish().await?;
        Ok(temp)
    }

    /// Names a finished temporary file by its hash. If that blob exists already (the same
    /// content, uploaded before) it is replaced by identical bytes: harmless, and it
    /// makes sure the blob exists even if a sweep removed it a moment ago.
    pub async fn put(&self, mut temp: TempBlob, sha: &str) -> io::Result<()> {
        let path = self.path_of(sha)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        temp.finish().await?;
        tokio::fs::rename(&temp.path, &path).await?;
        temp.kept = true;
        Ok(())
    }

    /// The blob's content, to stream.
    pub async fn read(&self, sha: &str) -> io::Result<tokio::fs::File> {
        tokio::fs::File::open(self.path_of(sha)?).await
    }

    /// Moves blob `sha` out of its place (into `tmp/`, under a name of its own) before
    /// it is removed, so that whether a row names it can be asked again with the blob
    /// gone: a node storing the same content meanwhile commits its row, then moves its
    /// own copy into place, which this does not touch. `None` if there is no such blob.
    pub async fn set_aside(&self, sha: &str) -> io::Result<Option<PathBuf>> {
        let path = self.path_of(sha)?;
        let aside = self.dir.join("tmp").join(format!(
            "removing-{sha}-{:016x}",
            rand::thread_rng().next_u64()
        ));
        match tokio::fs::rename(&path, &aside).await {
            Ok(()) => Ok(Some(aside)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Puts a blob set aside back in its place (a row names it after all; a copy put
    /// there meanwhile has the same content).
    pub async fn put_back(&self, aside: &Path, sha: &str) -> io::Result<()> {
        tokio::fs::rename(aside, self.path_of(sha)?).await
    }

    /// Removes a blob set aside.
    pub async fn discard(&self, aside: &Path) -> io::Result<()> {
        match tokio::fs::remove_file(aside).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_set_aside_is_put_back_or_discarded_and_a_copy_stored_meanwhile_stays() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().join("files")).unwrap();
        let sha = "cd".repeat(32);
        let place = dir.path().join("files/cd").join(&sha);
        blobs
            .put(blobs.temp_with(b"same").await.unwrap(), &sha)
            .await
            .unwrap();
        // Set aside, then put back: in place again.
        let aside = blobs.set_aside(&sha).await.unwrap().unwrap();
        assert!(!place.exists() && aside.is_file());
        blobs.put_back(&aside, &sha).await.unwrap();
        assert!(place.is_file());
        // Set aside while another node stores the same content: discarding what was set
        // aside leaves that copy.
        let aside = blobs.set_aside(&sha).await.unwrap().unwrap();
        blobs
            .put(blobs.temp_with(b"same").await.unwrap(), &sha)
            .await
            .unwrap();
        blobs.discard(&aside).await.unwrap();
        assert_eq!(std::fs::read(&place).unwrap(), b"same");
        // Nothing to set aside.
        blobs.discard(&aside).await.unwrap();
        std::fs::remove_file(&place).unwrap();
        assert!(blobs.set_aside(&sha).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_blob_is_named_by_its_hash_and_temporaries_do_not_stay() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().join("files")).unwrap();
        let sha = "ab".repeat(32);
        let temp = blobs.temp_with(b"hello").await.unwrap();
        blobs.put(temp, &sha).await.unwrap();
        assert!(dir.path().join("files/ab").join(&sha).is_file());
        let dropped = blobs.temp_with(b"never kept").await.unwrap();
        let path = dropped.path().to_owned();
        drop(dropped);
        assert!(!path.exists());
        assert!(blobs.read("../../etc/passwd").await.is_err());
        assert!(blobs.set_aside("../../etc/passwd").await.is_err());
    }
}

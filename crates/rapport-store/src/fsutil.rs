//! File-system helpers for the workspace: private files and folders, durable renames
//! and content hashes.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};

/// Creates (truncating) a file only its owner can read and write (mode 0600).
pub fn create_private(path: &Path) -> Result<File> {
    private_options().truncate(true).open(path).map_err(|e| StoreError::io(path, e))
}

/// Creates a file only its owner can read and write (mode 0600); an error if it exists.
pub fn create_new_private(path: &Path) -> Result<File> {
    private_options().create_new(true).open(path).map_err(|e| StoreError::io(path, e))
}

fn private_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

/// Creates a folder and its missing parents, each new one private (mode 0700).
pub fn create_private_dir_all(path: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path).map_err(|e| StoreError::io(path, e))
}

/// Restricts an existing file or folder to its owner (0600 for files, 0700 for folders).
pub fn make_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| StoreError::io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Flushes a folder's entries (names created, renamed or removed in it) to disk: a
/// rename is durable only once the folders on both sides are synced.
pub fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = File::open(path).map_err(|e| StoreError::io(path, e))?;
        d.sync_all().map_err(|e| StoreError::io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A file being written, hashed (SHA-256) and counted on the way, so that its checksum
/// needs no second read.
pub struct HashingFile {
    file: File,
    hash: Sha256,
    bytes: u64,
}

impl HashingFile {
    pub fn new(file: File) -> Self {
        Self {
            file,
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    /// Syncs the file to disk; its SHA-256 (hex) and length.
    pub fn finish(self, path: &Path) -> Result<(String, u64)> {
        self.file.sync_all().map_err(|e| StoreError::io(path, e))?;
        Ok((hex::encode(self.hash.finalize()), self.bytes))
    }
}

impl std::io::Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The SHA-256 (hex) and length of a file's content.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| StoreError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(h.finalize()), len))
}

/// Aborts the process at a named commit step when a test asks for it
/// (`RAPPORT_TEST_CRASH_AT=<step>`). Only debug builds read the variable; a release
/// binary never stops here.
#[inline]
pub fn crash_point(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("RAPPORT_TEST_CRASH_AT").is_ok_and(|s| s == step) {
        eprintln!("crash injected at {step}");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}

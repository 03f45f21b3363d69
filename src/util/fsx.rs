//! Files vigil reads and writes, handled as possibly hostile: reads are bounded in size and
//! refuse anything but regular files (a FIFO, `/dev/zero`, a directory), new files are created
//! without following a symlink planted at their path, and replaced files are written atomically.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Size limits of the files vigil reads.
pub mod limits {
    /// A pipeline file.
    pub const PIPELINE: u64 = 1 << 20;
    /// A privacy-mask file.
    pub const MASK: u64 = 1 << 20;
    /// A key file.
    pub const KEY: u64 = 16 << 10;
    /// A model or head manifest.
    pub const MANIFEST: u64 = 1 << 20;
    /// An ONNX model.
    pub const MODEL: u64 = 1 << 30;
    /// A fitted head (JSON).
    pub const HEAD: u64 = 64 << 20;
    /// An accounts file.
    pub const USERS: u64 = 4 << 20;
    /// A labelled photo (`vigil fit`).
    pub const IMAGE: u64 = 64 << 20;
}

/// Reads a regular file of at most `max` bytes. A file that is not regular (FIFO, device,
/// directory, socket) or is larger is an error naming it; reading never blocks on a FIFO.
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    let meta = f.metadata().with_context(|| format!("{}: cannot stat", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("{}: not a regular file ({}); refusing to read it", path.display(), kind(&meta.file_type()));
    }
    if meta.len() > max {
        bail!("{}: {} bytes, more than the {} bytes such a file may have", path.display(), meta.len(), max);
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut out).with_context(|| format!("{}: cannot read", path.display()))?;
    if out.len() as u64 > max {
        bail!("{}: grew past {max} bytes while being read", path.display());
    }
    Ok(out)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    let b = read_limited(path, max)?;
    String::from_utf8(b).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))
}

fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a file"
    }
}

/// Creates `path` as a new file (never an existing one, never through a symlink at `path`)
/// with `mode`, and writes `bytes` to it, synced.
pub fn create_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{} already exists: refusing to overwrite it", path.display())
            }
            _ => anyhow::anyhow!("{}: {e}", path.display()),
        })?;
    f.write_all(bytes).with_context(|| format!("{}: write", path.display()))?;
    f.sync_all().with_context(|| format!("{}: sync", path.display()))?;
    Ok(())
}

/// Makes `path` a fresh directory to write into: created (mode 0700 for the leaf) if missing,
/// accepted if it is an empty directory, refused if it is a symbolic link, not a directory, or a
/// directory that already holds something (nothing there is overwritten or written through).
pub fn fresh_dir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!("{} is a symbolic link: refusing to write through it", path.display())
        }
        Ok(m) if !m.is_dir() => bail!("{} exists and is not a directory", path.display()),
        Ok(_) => {
            let mut rd = std::fs::read_dir(path).with_context(|| format!("{}: cannot read", path.display()))?;
            if rd.next().is_some() {
                bail!(
                    "{} already exists and is not empty: give a fresh directory (nothing is overwritten)",
                    path.display()
                );
            }
            Ok(())
        }
        Err(_) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create", parent.display()))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .with_context(|| format!("{}: cannot create", path.display()))
        }
    }
}

/// Replaces `path` atomically: writes a temporary file beside it, syncs, renames over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot replace", path.display()))?;
    Ok(())
}

/// Mode bits of a file (without following a symlink at `path`).
pub fn mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.permissions().mode() & 0o7777)
}

/// Whether `path` itself is a symbolic link.
pub fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Opens a file for appending (created with `mode` if missing), refusing a symlink at `path`.
pub fn open_append(path: &Path, mode: u32) -> std::io::Result<File> {
    std::fs::OpenOptions::new().create(true).append(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Appends `line` and a newline to an append-only line log, synced. A write that fails part
/// way (a full disk, no inodes) is rolled back: the file is cut back to its length before, so a
/// later line is never glued onto a fragment.
pub fn append_line(f: &mut File, line: &str) -> std::io::Result<()> {
    let before = f.metadata()?.len();
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let written = f.write_all(&buf).and_then(|()| f.sync_data());
    if let Err(e) = written {
        if let Err(cut) = f.set_len(before).and_then(|()| f.sync_data()) {
            tracing::error!(error = %cut, "line log: a failed append could not be rolled back; it is repaired at the next start");
        }
        return Err(e);
    }
    Ok(())
}

/// Repairs a line log whose last line was torn (a crash or a full disk mid-append): the file is
/// cut back to its last complete line and the fragment is set aside beside it
/// (`<name>.torn-<ulid>`). Returns the fragment, if there was one.
pub fn repair_line_log(path: &Path) -> Result<Option<Vec<u8>>> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(None) };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(None);
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let fragment = bytes[keep..].to_vec();
    let aside = path.with_file_name(format!(
        "{}.torn-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("log"),
        ulid::Ulid::new()
    ));
    create_new(&aside, &fragment, 0o600)?;
    let f = std::fs::OpenOptions::new().write(true).open(path).with_context(|| format!("{}", path.display()))?;
    f.set_len(keep as u64)?;
    f.sync_all()?;
    tracing::warn!(file = %path.display(), fragment_bytes = fragment.len(), set_aside = %aside.display(), "a torn last line (a crash or a full disk mid-append) was cut off and set aside");
    Ok(Some(fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_off_and_set_aside() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":").unwrap();
        assert_eq!(repair_line_log(&p).unwrap().as_deref(), Some(&b"{\"b\":"[..]));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        let aside: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("log.jsonl.torn-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(repair_line_log(&p).unwrap(), None, "a whole file is left alone");
        let mut f = open_append(&p, 0o600).unwrap();
        append_line(&mut f, "{\"c\":3}").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"c\":3}\n");
    }

    #[test]
    fn non_regular_and_oversized_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.toml");
        std::fs::write(&p, "x = 1").unwrap();
        assert_eq!(read_limited(&p, 100).unwrap(), b"x = 1");
        let e = read_limited(&p, 2).unwrap_err().to_string();
        assert!(e.contains("a.toml") && e.contains("more than the 2 bytes"), "{e}");
        let e = read_limited(Path::new("/dev/zero"), 100).unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("character device"), "{e}");
        let e = read_limited(d.path(), 100).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_limited(&fifo, 100).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = create_new(&link, b"y", 0o600).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"x = 1", "the symlink's target is untouched");
        write_atomic(&p, b"z").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"z");
    }
}

//! Snapshot files: written to a temporary file beside the target, fsynced, then
//! renamed over it, so a crash leaves either the old snapshot or the new one.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Buffer size for snapshot files.
const FILE_BUFFER: usize = 1 << 20;

/// A snapshot being written. Nothing appears at the target path until
/// [`commit`](Self::commit); dropping it uncommitted removes the temporary file.
///
/// ```
/// use std::io::Write;
/// let dir = std::env::temp_dir().join(format!("vmstate-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("snap.mig");
/// let mut f = vmstate::transport::AtomicFile::create(&path).unwrap();
/// f.write_all(b"QEVM").unwrap();
/// assert!(!path.exists());
/// f.commit().unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"QEVM");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct AtomicFile {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Starts writing a snapshot that will replace `target` on commit.
    pub fn create(target: impl AsRef<Path>) -> io::Result<Self> {
        let target = target.as_ref().to_path_buf();
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = target.with_file_name(tmp_name);
        let file = File::create(&tmp)?;
        Ok(AtomicFile {
            out: Some(BufWriter::with_capacity(FILE_BUFFER, file)),
            tmp,
            target,
        })
    }

    /// Flushes, fsyncs, renames over the target and fsyncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        let out = self.out.take().expect("not committed yet");
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, &self.target)?;
        let dir = match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(dir)?.sync_all()
    }

    /// The temporary file itself (another handle on it), for writers that need a
    /// `File` (positioned writes, holes: [`Writer::to_fd`](crate::Writer::to_fd)).
    /// Write through one of the two only, then [`commit`](Self::commit).
    pub fn file(&mut self) -> io::Result<File> {
        let out = self.out.as_mut().expect("not committed yet");
        out.flush()?;
        out.get_ref().try_clone()
    }

    /// The path the snapshot will have.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("not committed").write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.as_mut().expect("not committed").write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Opens a snapshot for reading, buffered.
pub fn open_snapshot(path: impl AsRef<Path>) -> io::Result<BufReader<File>> {
    Ok(BufReader::with_capacity(FILE_BUFFER, File::open(path)?))
}

//! The output and errors files: JSONL appended one whole line per write, so a kill leaves at
//! most one torn last line, which [`repair`] cuts off on the next run. What is already in these
//! files is what is done: [`scan`] reads them back on resume.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice::Usage;

use crate::input::Lines;

/// An append-only JSONL file.
#[derive(Debug)]
pub struct Appender {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
}

impl Appender {
    /// Open for appending (creating it), after repairing a torn last line.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        repair(path)?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Appender {
            file,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(256 * 1024 + 8192),
        })
    }

    /// Queue one record (a single line; the newline is added). Records reach the file in
    /// whole lines at the next [`Appender::flush`] (or when 256 KiB are queued): one write for
    /// many records. A kill can lose queued records (they are sent again on resume) or tear the
    /// last line of a write (cut off on resume); it can never leave half a record mid-file.
    pub fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(record);
        self.buf.push(b'\n');
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    /// Hand the queued records to the operating system (a killed process loses nothing
    /// flushed).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flush, then push everything to the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// If the file ends in the middle of a line (a write cut by a kill), cut that partial line off.
/// Returns how many bytes were removed.
pub fn repair(path: &Path) -> io::Result<u64> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Walk back from the end to the last newline.
    let mut pos = len;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let start = pos.saturating_sub(chunk.len() as u64);
        let n = (pos - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut chunk[..n])?;
        if pos == len && chunk[n - 1] == b'\n' {
            return Ok(0);
        }
        if let Some(i) = chunk[..n].iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            f.set_len(keep)?;
            tracing::warn!(file = %path.display(), removed = len - keep, "repaired a torn last line");
            return Ok(len - keep);
        }
        if start == 0 {
            f.set_len(0)?;
            tracing::warn!(file = %path.display(), removed = len, "repaired a torn last line");
            return Ok(len);
        }
        pos = start;
    }
}

/// What a record in an output or errors file says, as far as resuming needs.
#[derive(Debug, Default, Deserialize)]
pub struct Scanned {
    pub custom_id: Option<String>,
    /// Input line (errors file; and for lines without a readable custom_id).
    pub line: Option<u32>,
    /// A hash of the input line's text when an error was recorded for it (hex).
    pub line_hash: Option<String>,
    pub response: Option<ScannedResponse>,
    pub error: Option<ScannedError>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ScannedResponse {
    pub status_code: Option<u16>,
    pub body: Option<ScannedBody>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ScannedBody {
    pub model: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ScannedError {
    pub code: Option<String>,
}

/// Read every record of a file (missing file: none). Unreadable lines are skipped with a warning:
/// they cannot be ours (we write whole lines), but a person may have edited the file.
pub fn scan(path: &Path, mut f: impl FnMut(Scanned)) -> io::Result<()> {
    let mut lines = match Lines::open(path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    while let Some((n, text)) = lines.next_line()? {
        match serde_json::from_slice::<Scanned>(text) {
            Ok(s) => f(s),
            Err(e) => {
                tracing::warn!(file = %path.display(), line = n, error = %e, "skipping an unreadable record")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-out-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn torn_last_line_is_cut() {
        let p = tmp("torn");
        std::fs::write(&p, b"{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        assert_eq!(repair(&p).unwrap(), 5);
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(repair(&p).unwrap(), 0, "a whole file is left alone");
        std::fs::write(&p, b"{\"only\":").unwrap();
        assert_eq!(repair(&p).unwrap(), 8);
        assert_eq!(std::fs::read(&p).unwrap(), b"");
        let mut a = Appender::open(&p).unwrap();
        a.append(b"{\"custom_id\":\"x\"}").unwrap();
        a.flush().unwrap();
        let mut seen = Vec::new();
        scan(&p, |s| seen.push(s.custom_id)).unwrap();
        assert_eq!(seen, vec![Some("x".to_string())]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn long_torn_lines_are_found_across_chunks() {
        let p = tmp("long");
        let mut data = b"{\"a\":1}\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 200_000));
        std::fs::write(&p, &data).unwrap();
        assert_eq!(repair(&p).unwrap(), 200_000);
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}\n");
        std::fs::remove_file(&p).unwrap();
    }
}

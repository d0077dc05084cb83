//! Output files holding patient data (Observations, dead letters): created readable by their
//! owner only, and appended to on a line of their own.

use std::io::SeekFrom;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{Error, Result};

/// The permissions of an output file the pipeline creates, on Unix: read and write for the
/// owner only (`0600`), since Observations and dead letters hold patient data. A file that
/// already exists keeps its permissions.
pub const OUTPUT_FILE_MODE: u32 = 0o600;

/// Opens the file at `path` for writing, truncating it or (`append`) appending to it, creating
/// it when missing with [`OUTPUT_FILE_MODE`] (on Unix).
///
/// Appending to a file whose last byte is not a newline (a line torn by a crash mid-write)
/// first ends that line, so the next record starts a line of its own and is never merged into
/// the torn one (which a reader then skips, see
/// [`NdjsonSource`](super::NdjsonSource)).
pub(crate) async fn open_output(
    path: &Path,
    append: bool,
    what: &'static str,
) -> Result<tokio::fs::File> {
    let io = |source| Error::io(what, Some(path), source);
    let mut options = std::fs::OpenOptions::new();
    options
        .create(true)
        .write(true)
        // Reading is needed to look at the last byte of an appended file.
        .read(append)
        .append(append)
        .truncate(!append);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(OUTPUT_FILE_MODE);
    }
    let mut file = tokio::fs::OpenOptions::from(options)
        .open(path)
        .await
        .map_err(io)?;
    if append && ends_mid_line(&mut file).await.map_err(io)? {
        tracing::warn!(
            what,
            "the output file ends without a newline (a write torn by a crash): the next record starts a new line"
        );
        file.write_all(b"\n").await.map_err(io)?;
        file.flush().await.map_err(io)?;
    }
    Ok(file)
}

/// Whether the file is not empty and its last byte is not `\n`.
async fn ends_mid_line(file: &mut tokio::fs::File) -> std::io::Result<bool> {
    let len = file.metadata().await?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1)).await?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last).await?;
    Ok(last != *b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "carebridge-medtech-output-{}-{name}",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn new_output_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        for append in [false, true] {
            let tmp = TempFile::new(&format!("mode-{append}"));
            drop(open_output(&tmp.0, append, "test output").await.unwrap());
            let mode = std::fs::metadata(&tmp.0).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "append {append}");
        }
    }

    #[tokio::test]
    async fn appending_after_a_torn_line_starts_a_new_line() {
        let tmp = TempFile::new("torn");
        std::fs::write(&tmp.0, "{\"a\":1}\n{\"b\":").unwrap();
        let mut f = open_output(&tmp.0, true, "test output").await.unwrap();
        f.write_all(b"{\"c\":3}\n").await.unwrap();
        f.flush().await.unwrap();
        drop(f);
        assert_eq!(
            std::fs::read_to_string(&tmp.0).unwrap(),
            "{\"a\":1}\n{\"b\":\n{\"c\":3}\n"
        );
        // A file ending with a newline, or empty, gets nothing added.
        for before in ["{\"a\":1}\n", ""] {
            std::fs::write(&tmp.0, before).unwrap();
            let mut f = open_output(&tmp.0, true, "test output").await.unwrap();
            f.write_all(b"{\"c\":3}\n").await.unwrap();
            f.flush().await.unwrap();
            drop(f);
            assert_eq!(
                std::fs::read_to_string(&tmp.0).unwrap(),
                format!("{before}{{\"c\":3}}\n")
            );
        }
    }
}

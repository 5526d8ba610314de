//! The `file` directory kind: a YAML file with `users:` and `groups:`, read in one streaming
//! pass over saphyr-parser's events straight into a [`DirectorySnapshot`] (see
//! `observe::snapshot`): no intermediate document, so reading costs little beyond the file's
//! text and the snapshot itself. It never writes to a directory, and it knows nothing about
//! templates.

use std::path::{Path, PathBuf};

use saphyr_parser::Parser;

use super::snapshot::{DirectorySnapshot, UsersBuilder};
use build::Builder;
use events::{Events, Stop};

mod build;
mod events;
mod scalar;
#[cfg(test)]
mod tests;

/// Reading a `file` directory failed.
#[derive(Debug, thiserror::Error)]
pub enum FileDirectoryError {
    /// The file could not be read.
    #[error("{path}: cannot read directory file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("{path}:{line}: invalid directory file: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// What is wrong, with where in the document (`users[3].cn`).
        message: String,
    },
    /// The content is well-formed but inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Largest directory file read, to keep a hostile file from exhausting memory.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Nesting deeper than this is refused (a directory file is four levels deep).
const MAX_DEPTH: usize = 16;

/// Reads a `file` directory. The snapshot is complete when the file parsed.
pub fn read_file_directory(path: &Path) -> Result<DirectorySnapshot, FileDirectoryError> {
    let text = read_directory_text(path)?;
    parse_file_directory(path, &text)
}

/// Reads the text of a `file` directory (capped in size, UTF-8), for
/// [`parse_file_directory`]; a caller that also fingerprints the data reads it once this way.
pub fn read_directory_text(path: &Path) -> Result<String, FileDirectoryError> {
    use std::io::Read;
    let read_error = |source| FileDirectoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || FileDirectoryError::Invalid {
        path: path.to_path_buf(),
        message: format!("file is larger than {MAX_FILE_BYTES} bytes"),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let len = file.metadata().map_err(read_error)?.len();
    if len > MAX_FILE_BYTES {
        return Err(too_large());
    }
    // One buffer of the file's size; the cap also holds when the file grows while it is read.
    let mut text = String::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

/// Parses the text of a `file` directory; `path` only names it in errors.
///
/// One pass over the parser's events builds the snapshot directly. Errors keep the order of
/// the former two-pass reader (a guard pass, then serde_yaml): YAML syntax errors, anchors,
/// aliases and deep nesting anywhere in the text come first; then the first shape error
/// (unknown or duplicate field, wrong type, missing field, a second document); then
/// inconsistencies (empty or repeated uids, repeated groups, unknown members or subgroups).
pub fn parse_file_directory(
    path: &Path,
    text: &str,
) -> Result<DirectorySnapshot, FileDirectoryError> {
    let mut events = Events {
        path,
        parser: Parser::new_from_str(text),
        depth: 0,
    };
    // Every user has a `uid` key: their number is at most the number of times "uid" occurs,
    // and their strings at most the text itself. A user entry takes some 24 bytes at least,
    // which caps the estimate for a file that says "uid" everywhere.
    let users = memchr::memmem::find_iter(text.as_bytes(), b"uid")
        .count()
        .min(text.len() / 24);
    let mut builder = Builder {
        users: UsersBuilder::with_capacity(users, text.len()),
        ..Builder::default()
    };
    match builder.read_stream(&mut events) {
        Ok(()) => builder.finish(path),
        Err(Stop::Guard(e)) => Err(e),
        Err(Stop::Shape(e)) => Err(events.drain().unwrap_or(e)),
    }
}

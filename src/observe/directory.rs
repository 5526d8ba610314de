//! The `file` directory kind: a YAML file with `users:` and `groups:`, read in one streaming
//! pass over saphyr-parser's events straight into a [`DirectorySnapshot`] (see
//! `observe::snapshot`): no intermediate document, so reading costs little beyond the file's
//! text and the snapshot itself. It never writes to a directory, and it knows nothing about
//! templates.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser, ScalarStyle, StrInput, Tag};

use super::snapshot::{DirectoryGroup, DirectorySnapshot, Finished, NewUser, Users, UsersBuilder};

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

/// Why reading stopped.
enum Stop {
    /// Syntax error, anchor, alias or nesting too deep: reported whatever else is wrong.
    Guard(FileDirectoryError),
    /// The YAML does not have the shape of a directory file: reported unless a guard error
    /// follows later in the text.
    Shape(FileDirectoryError),
}

/// The parser's events, with the guard applied to each: anchors, aliases and deep nesting are
/// refused, because a directory file has no use for them and alias expansion is how a small
/// file becomes a huge document.
struct Events<'t> {
    path: &'t Path,
    parser: Parser<'t, StrInput<'t>>,
    depth: usize,
}

impl<'t> Events<'t> {
    /// The next event and its 1-based line.
    fn next(&mut self) -> Result<(Event<'t>, usize), Stop> {
        let (event, span) = match self.parser.next() {
            Some(Ok(item)) => item,
            Some(Err(e)) => {
                return Err(Stop::Guard(self.error(e.marker().line(), e.to_string())));
            }
            None => return Err(Stop::Guard(self.error(0, "unexpected end of input".into()))),
        };
        let line = span.start.line();
        let path = self.path;
        let refuse = |what: &str| {
            Err(Stop::Guard(FileDirectoryError::Parse {
                path: path.to_path_buf(),
                line,
                message: format!("{what} are not allowed in a directory file"),
            }))
        };
        match &event {
            Event::Alias(_) => return refuse("YAML aliases"),
            Event::Scalar(_, _, anchor, _) if *anchor != 0 => return refuse("YAML anchors"),
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if *anchor != 0 {
                    return refuse("YAML anchors");
                }
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return refuse("structures nested this deep");
                }
            }
            Event::MappingEnd | Event::SequenceEnd => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        Ok((event, line))
    }

    /// Reads the rest of the text and returns the first guard error in it, if any.
    fn drain(&mut self) -> Option<FileDirectoryError> {
        loop {
            match self.next() {
                Err(Stop::Guard(e)) => return Some(e),
                Err(Stop::Shape(_)) => return None,
                Ok((Event::StreamEnd, _)) => return None,
                Ok(_) => {}
            }
        }
    }

    fn error(&self, line: usize, message: String) -> FileDirectoryError {
        FileDirectoryError::Parse {
            path: self.path.to_path_buf(),
            line,
            message,
        }
    }

    fn shape(&self, line: usize, message: String) -> Stop {
        Stop::Shape(self.error(line, message))
    }

    /// `at: expected WHAT, found ...` for an event that is not what the format wants there.
    fn unexpected(&self, line: usize, at: At<'_>, what: &str, found: &Event<'_>) -> Stop {
        let found = match found {
            Event::Scalar(v, ScalarStyle::Plain, _, None) if v.is_empty() => "nothing".into(),
            Event::Scalar(v, ..) => format!("the scalar {v:?}"),
            Event::MappingStart(..) => "a mapping".into(),
            Event::SequenceStart(..) => "a sequence".into(),
            Event::DocumentStart(_) => "another document".into(),
            other => format!("{other:?}"),
        };
        self.shape(
            line,
            at.says(format_args!("expected {what}, found {found}")),
        )
    }

    /// Opens a mapping value: true when entries follow, false for an empty plain scalar
    /// (`key:` with no value), which reads as an empty mapping.
    fn open_mapping(&self, event: &Event<'_>, line: usize, at: At<'_>) -> Result<bool, Stop> {
        match event {
            Event::MappingStart(..) => Ok(true),
            Event::Scalar(v, ScalarStyle::Plain, _, _) if v.is_empty() => Ok(false),
            other => Err(self.unexpected(line, at, "a mapping", other)),
        }
    }

    /// Opens a sequence value: like [`Events::open_mapping`], nothing reads as empty.
    fn open_sequence(&mut self, at: At<'_>) -> Result<bool, Stop> {
        let (event, line) = self.next()?;
        match event {
            Event::SequenceStart(..) => Ok(true),
            Event::Scalar(v, ScalarStyle::Plain, _, _) if v.is_empty() => Ok(false),
            other => Err(self.unexpected(line, at, "a sequence", &other)),
        }
    }

    /// The next mapping key, or `None` at the end of the mapping. Keys are scalars.
    fn key(&mut self, at: At<'_>) -> Result<Option<(Cow<'t, str>, usize)>, Stop> {
        let (event, line) = self.next()?;
        match event {
            Event::MappingEnd => Ok(None),
            Event::Scalar(k, ..) => Ok(Some((k, line))),
            other => Err(self.unexpected(line, at, "a scalar key", &other)),
        }
    }

    /// A string value: any scalar, as written (`42` is the string "42").
    fn string(&mut self, at: At<'_>) -> Result<Cow<'t, str>, Stop> {
        let (event, line) = self.next()?;
        match event {
            Event::Scalar(v, ..) => Ok(v),
            other => Err(self.unexpected(line, at, "a string", &other)),
        }
    }

    /// An optional string: a plain null (`~`, `null`, nothing) is absent.
    fn optional_string(&mut self, at: At<'_>) -> Result<Option<Cow<'t, str>>, Stop> {
        let (event, line) = self.next()?;
        match event {
            Event::Scalar(v, ScalarStyle::Plain, _, tag) => match tag.as_deref().map(full_tag) {
                Some(t) if t == TAG_NULL => match is_null(&v) {
                    true => Ok(None),
                    false => Err(self.shape(line, at.says(format_args!("{v:?} is not a null")))),
                },
                Some(_) => Ok(Some(v)),
                None if v.is_empty() || is_null(&v) => Ok(None),
                None => Ok(Some(v)),
            },
            Event::Scalar(v, ..) => Ok(Some(v)),
            other => Err(self.unexpected(line, at, "a string", &other)),
        }
    }

    /// A boolean: a plain `true`/`True`/`TRUE` or `false`/`False`/`FALSE`.
    fn boolean(&mut self, at: At<'_>) -> Result<bool, Stop> {
        let (event, line) = self.next()?;
        match &event {
            Event::Scalar(v, ScalarStyle::Plain, _, _) if parse_bool(v).is_some() => {
                Ok(parse_bool(v).unwrap_or_default())
            }
            other => Err(self.unexpected(line, at, "a boolean", other)),
        }
    }

    /// A list of strings (member uids, subgroup names).
    fn strings(&mut self, at: At<'_>) -> Result<Vec<String>, Stop> {
        let mut out = Vec::new();
        if !self.open_sequence(at)? {
            return Ok(out);
        }
        loop {
            let (event, line) = self.next()?;
            match event {
                Event::SequenceEnd => return Ok(out),
                Event::Scalar(v, ..) => out.push(v.into_owned()),
                other => {
                    return Err(self.unexpected(line, at.item(out.len()), "a string", &other));
                }
            }
        }
    }

    /// A list of member uids resolved to rows of `users` as they are read, with the first
    /// uid that is not among them.
    fn rows(&mut self, at: At<'_>, users: &Users) -> Result<Members, Stop> {
        let (mut rows, mut unknown) = (Vec::new(), None);
        if self.open_sequence(at)? {
            for index in 0.. {
                let (event, line) = self.next()?;
                match event {
                    Event::SequenceEnd => break,
                    Event::Scalar(v, ..) => match users.index_of(&v) {
                        Some(row) => rows.push(row),
                        None if unknown.is_none() => unknown = Some(v.into_owned()),
                        None => {}
                    },
                    other => {
                        return Err(self.unexpected(line, at.item(index), "a string", &other));
                    }
                }
            }
        }
        Ok(Members::Rows(rows, unknown))
    }

    /// An attribute value: a string, number or boolean, as text. Numbers and booleans are
    /// written the way serde_yaml printed them (`0x1F` is "31", `1e3` is "1000.0", `True` is
    /// "true"); null, tagged values, mappings and sequences are refused.
    fn attribute(&mut self, at: At<'_>) -> Result<String, Stop> {
        let (event, line) = self.next()?;
        let wrong = |what: String| {
            self.shape(
                line,
                at.says(format_args!(
                    "an attribute must be a string, number or boolean, not {what}"
                )),
            )
        };
        let (v, style, tag) = match event {
            Event::Scalar(v, style, _, tag) => (v, style, tag),
            Event::MappingStart(..) => return Err(wrong("a mapping".into())),
            Event::SequenceStart(..) => return Err(wrong("a sequence".into())),
            other => return Err(self.unexpected(line, at, "an attribute value", &other)),
        };
        let Some(tag) = tag else {
            if style != ScalarStyle::Plain {
                return Ok(v.into_owned());
            }
            return match resolve_plain(&v) {
                Resolved::Null => Err(wrong("null".into())),
                Resolved::Text(t) => Ok(t.unwrap_or_else(|| v.into_owned())),
                Resolved::TooLarge => Err(wrong(format!("the out-of-range integer {v}"))),
            };
        };
        let tag = full_tag(&tag);
        if tag.starts_with('!') {
            return Err(wrong(format!("a value tagged {tag}")));
        }
        match tag.strip_prefix(CORE_TAG_PREFIX) {
            Some("bool") => match parse_bool(&v) {
                Some(b) => Ok(b.to_string()),
                None => Err(wrong(format!("{v:?} tagged !!bool"))),
            },
            Some("int") => match resolve_int(&v) {
                Some(Ok(i)) => Ok(i),
                Some(Err(())) => Err(wrong(format!("the out-of-range integer {v}"))),
                None => Err(wrong(format!("{v:?} tagged !!int"))),
            },
            Some("float") => match parse_float(&v) {
                Some(f) => Ok(format_float(f)),
                None => Err(wrong(format!("{v:?} tagged !!float"))),
            },
            Some("null") => Err(wrong("null".into())),
            _ => Ok(v.into_owned()),
        }
    }
}

/// Where a value sits in the document (`users[3].attributes.title`), for error messages.
/// Formatted only when an error is reported.
#[derive(Clone, Copy)]
struct At<'a> {
    parent: Option<&'a At<'a>>,
    name: &'a str,
    index: Option<usize>,
}

impl<'a> At<'a> {
    const ROOT: At<'static> = At {
        parent: None,
        name: "",
        index: None,
    };

    fn field(&'a self, name: &'a str) -> At<'a> {
        At {
            parent: Some(self),
            name,
            index: None,
        }
    }

    fn item(self, index: usize) -> At<'a> {
        At {
            index: Some(index),
            ..self
        }
    }

    /// `path: message`, or the bare message at the document's root.
    fn says(&self, message: impl std::fmt::Display) -> String {
        match self.parent {
            None if self.index.is_none() => message.to_string(),
            _ => format!("{self}: {message}"),
        }
    }
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}")?;
            if parent.parent.is_some() || parent.index.is_some() {
                f.write_str(".")?;
            }
        }
        f.write_str(self.name)?;
        match self.index {
            Some(i) => write!(f, "[{i}]"),
            None => Ok(()),
        }
    }
}

/// The YAML core schema's tag prefix (`!!x` is `tag:yaml.org,2002:x`).
const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";
/// `!!null`, resolved.
const TAG_NULL: &str = "tag:yaml.org,2002:null";

/// A tag as one string: `!local`, `tag:yaml.org,2002:str`, or a verbatim URI.
fn full_tag(tag: &Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

fn is_null(v: &str) -> bool {
    matches!(v, "~" | "null" | "Null" | "NULL")
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// What a plain, untagged scalar means under the YAML 1.2 core schema.
enum Resolved {
    /// `~`, `null` or nothing.
    Null,
    /// A boolean or number as canonical text, or `None`: the scalar is a string as written.
    Text(Option<String>),
    /// An integer beyond the 64-bit range (serde_yaml refused those).
    TooLarge,
}

fn resolve_plain(v: &str) -> Resolved {
    if v.is_empty() || is_null(v) {
        return Resolved::Null;
    }
    if let Some(b) = parse_bool(v) {
        return Resolved::Text(Some(b.to_string()));
    }
    match resolve_int(v) {
        Some(Ok(i)) => return Resolved::Text(Some(i)),
        Some(Err(())) => return Resolved::TooLarge,
        None => {}
    }
    if !leading_zero_digits(v)
        && let Some(f) = parse_float(v)
    {
        return Resolved::Text(Some(format_float(f)));
    }
    Resolved::Text(None)
}

/// `0123` and `-007` are strings in YAML 1.2, not octal or decimal numbers.
fn leading_zero_digits(v: &str) -> bool {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
}

/// An integer (decimal, `0x`, `0o` or `0b`, one optional sign) as decimal text; `Err` when it
/// is an integer outside `i64::MIN..=u64::MAX` but inside 128 bits; `None` when the scalar is
/// not an integer.
fn resolve_int(v: &str) -> Option<Result<String, ()>> {
    let (negative, unsigned) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let (radix, digits) = if let Some(d) = unsigned.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = unsigned.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = unsigned.strip_prefix("0b") {
        (2, d)
    } else {
        if leading_zero_digits(v) {
            return None;
        }
        (10, unsigned)
    };
    // from_str_radix would accept a sign of its own; YAML allows one sign, before any prefix.
    if digits.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    let fits = match negative {
        false => magnitude <= u128::from(u64::MAX),
        true => magnitude <= u128::from(i64::MIN.unsigned_abs()),
    };
    match (negative, fits) {
        (_, true) if magnitude == 0 => Some(Ok("0".into())),
        (false, true) => Some(Ok(magnitude.to_string())),
        (true, true) => Some(Ok(format!("-{magnitude}"))),
        (false, false) => Some(Err(())),
        (true, false) if magnitude <= i128::MIN.unsigned_abs() => Some(Err(())),
        (true, false) => None,
    }
}

/// A float: `.inf`, `-.inf`, `.nan` in their three spellings, or a finite decimal number.
fn parse_float(v: &str) -> Option<f64> {
    let unsigned = match v.strip_prefix('+') {
        Some(rest) if rest.starts_with(['+', '-']) => return None,
        Some(rest) => rest,
        None => v,
    };
    match unsigned {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    if matches!(v, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    unsigned.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A float as serde_yaml printed it (with ryu): the shortest digits that read back to the
/// same value, in positional notation with at least one decimal (`1000.0`, `0.001`) when the
/// decimal exponent is between -5 and 16, in scientific notation otherwise (`1e30`, `1.5e-7`).
fn format_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f < 0.0 { "-.inf" } else { ".inf" }.into();
    }
    // `{:e}` gives the shortest round-trip digits too: "-1.234e-7".
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let Ok(exponent) = exponent.parse::<i64>() else {
        return scientific;
    };
    let sign = if mantissa.starts_with('-') { "-" } else { "" };
    let digits = even_on_tie(
        f,
        mantissa.bytes().filter(u8::is_ascii_digit).collect(),
        exponent,
    );
    let digits = String::from_utf8(digits).unwrap_or_default();
    // Where the decimal point falls relative to the digits: 10^(point-1) <= |f| < 10^point.
    let point = exponent + 1;
    let len = digits.len() as i64;
    let body = if !(-5 < point && point <= 16) {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let dot = if rest.is_empty() { "" } else { "." };
        format!("{first}{dot}{rest}e{exponent}")
    } else if point >= len {
        let zeros = "0".repeat(usize::try_from(point - len).unwrap_or(0));
        format!("{digits}{zeros}.0")
    } else if point > 0 {
        let (int, frac) = digits.split_at(usize::try_from(point).unwrap_or(0));
        format!("{int}.{frac}")
    } else {
        let zeros = "0".repeat(usize::try_from(-point).unwrap_or(0));
        format!("0.{zeros}{digits}")
    };
    format!("{sign}{body}")
}

/// When two shortest digit strings are equally near `f` (`f` lies exactly halfway between
/// them), Rust's formatter takes the larger and ryu the even one: returns ryu's choice.
/// `digits` and `exponent` are Rust's shortest form of `f` (`d.ddd` times 10^exponent).
fn even_on_tie(f: f64, mut digits: Vec<u8>, exponent: i64) -> Vec<u8> {
    let Some(&last) = digits.last() else {
        return digits;
    };
    // ASCII digits: an even byte is an even digit.
    if last.is_multiple_of(2) || digits == b"1" {
        return digits;
    }
    let mut lower = digits.clone();
    if let Some(d) = lower.last_mut() {
        *d -= 1;
    }
    let as_number = |d: &[u8]| {
        let (first, rest) = d.split_at(1);
        format!(
            "{}.{}e{exponent}",
            String::from_utf8_lossy(first),
            String::from_utf8_lossy(rest)
        )
    };
    let round_trips = as_number(&lower).parse::<f64>().ok() == Some(f.abs());
    // Halfway: |f| is exactly the lower digits followed by a 5 (checked 20 digits further).
    let mut halfway = lower.clone();
    halfway.push(b'5');
    let precise = format!("{:.*e}", halfway.len() + 19, f.abs());
    let mut expected = as_number(&halfway);
    if let Some(e) = expected.find('e') {
        expected.insert_str(e, &"0".repeat(20));
    }
    if round_trips && precise == expected {
        digits = lower;
    }
    digits
}

/// The fields of a user entry, in declaration order (the order of "missing field" checks).
const USER_FIELDS: [&str; 7] = ["uid", "cn", "mail", "upn", "dn", "disabled", "attributes"];
const GROUP_FIELDS: [&str; 3] = ["name", "members", "groups"];

/// `unknown field `x`, expected one of `a`, `b``.
fn unknown_field(at: At<'_>, key: &str, fields: &[&str]) -> String {
    let expected: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    at.says(format_args!(
        "unknown field `{key}`, expected one of {}",
        expected.join(", ")
    ))
}

/// A group as read. When the users came first (the usual order) its members are resolved to
/// rows as they are read, so a group of 100,000 members never exists as 100,000 strings;
/// otherwise they wait, in file order, until the users are known.
struct PendingGroup {
    name: String,
    members: Members,
    groups: Vec<String>,
}

/// The members of a [`PendingGroup`].
enum Members {
    /// Resolved, with the first member who is not among the users.
    Rows(Vec<u32>, Option<String>),
    /// Not yet resolved: the users come later in the file.
    Uids(Vec<String>),
}

/// The snapshot under construction.
#[derive(Default)]
struct Builder {
    users: UsersBuilder,
    /// The users, once the `users:` list was read completely and a `groups:` list follows.
    finished: Option<Finished>,
    /// Position of the first user with an empty uid (repeated uids show when sorting).
    empty_uid: Option<usize>,
    groups: Vec<PendingGroup>,
}

impl Builder {
    /// Reads the whole stream: one document (or none), a mapping with `users` and `groups`.
    fn read_stream(&mut self, ev: &mut Events<'_>) -> Result<(), Stop> {
        let mut documents = 0usize;
        loop {
            let (event, line) = ev.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(()),
                Event::DocumentStart(_) if documents > 0 => {
                    return Err(ev.shape(
                        line,
                        "a directory file is one YAML document, this is a second one".into(),
                    ));
                }
                Event::DocumentStart(_) => {
                    documents += 1;
                    let (root, line) = ev.next()?;
                    if ev.open_mapping(&root, line, At::ROOT)? {
                        self.read_root(ev)?;
                    }
                }
                other => return Err(ev.unexpected(line, At::ROOT, "a document", &other)),
            }
        }
    }

    fn read_root(&mut self, ev: &mut Events<'_>) -> Result<(), Stop> {
        let (mut users, mut groups) = (false, false);
        while let Some((key, line)) = ev.key(At::ROOT)? {
            let seen = match key.as_ref() {
                "users" => &mut users,
                "groups" => &mut groups,
                other => {
                    let message = unknown_field(At::ROOT, other, &["users", "groups"]);
                    return Err(ev.shape(line, message));
                }
            };
            if std::mem::replace(seen, true) {
                let message = At::ROOT.says(format_args!("duplicate field `{key}`"));
                return Err(ev.shape(line, message));
            }
            match key.as_ref() {
                "users" => self.read_users(ev)?,
                _ => {
                    if users {
                        self.finished = Some(std::mem::take(&mut self.users).finish());
                    }
                    self.read_groups(ev)?;
                }
            }
        }
        Ok(())
    }

    fn read_users(&mut self, ev: &mut Events<'_>) -> Result<(), Stop> {
        if !ev.open_sequence(At::ROOT.field("users"))? {
            return Ok(());
        }
        for index in 0.. {
            let (event, line) = ev.next()?;
            if let Event::SequenceEnd = event {
                break;
            }
            let user = read_user(ev, &event, line, At::ROOT.field("users").item(index))?;
            if user.uid.is_empty() && self.empty_uid.is_none() {
                self.empty_uid = Some(self.users.len());
            }
            let fields = NewUser {
                uid: &user.uid,
                cn: &user.cn,
                dn: user.dn.as_deref(),
                mail: user.mail.as_deref(),
                upn: user.upn.as_deref(),
                stable_id: None,
                disabled: user.disabled,
            };
            // The file is capped far below what a snapshot indexes.
            let pushed = self.users.push(fields, user.attributes);
            pushed.map_err(|e| ev.shape(line, e.to_string()))?;
        }
        Ok(())
    }

    fn read_groups(&mut self, ev: &mut Events<'_>) -> Result<(), Stop> {
        if !ev.open_sequence(At::ROOT.field("groups"))? {
            return Ok(());
        }
        for index in 0.. {
            let (event, line) = ev.next()?;
            if let Event::SequenceEnd = event {
                break;
            }
            let at = At::ROOT.field("groups").item(index);
            let users = self.finished.as_ref().map(|f| &f.users);
            let group = read_group(ev, &event, line, at, users)?;
            self.groups.push(group);
        }
        Ok(())
    }

    /// Checks consistency (users first, then groups in file order, then nesting) and builds
    /// the snapshot.
    fn finish(self, path: &Path) -> Result<DirectorySnapshot, FileDirectoryError> {
        let invalid = |message: String| FileDirectoryError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let finished = match self.finished {
            Some(f) => f,
            None => self.users.finish(),
        };
        let users = finished.users;
        // The first inconsistency in file order: an empty uid or a uid listed before.
        let repeated = finished.repeated.first().copied();
        match (self.empty_uid, repeated) {
            (Some(e), r) if r.is_none_or(|(r, _)| e < r as usize) => {
                return Err(invalid("a user has an empty uid".into()));
            }
            (_, Some((_, kept))) => {
                return Err(invalid(format!(
                    "user {:?} is listed twice",
                    users.uid_at(kept)
                )));
            }
            _ => {}
        }
        let mut groups = BTreeMap::new();
        for g in self.groups {
            let unknown_member = |m: &str| {
                invalid(format!(
                    "group {:?} lists member {m:?}, who is not among the users",
                    g.name
                ))
            };
            let rows = match g.members {
                Members::Rows(_, Some(unknown)) => return Err(unknown_member(&unknown)),
                Members::Rows(rows, None) => rows,
                Members::Uids(uids) => {
                    let mut rows = Vec::with_capacity(uids.len());
                    for m in &uids {
                        rows.push(users.index_of(m).ok_or_else(|| unknown_member(m))?);
                    }
                    rows
                }
            };
            let group = DirectoryGroup::new(g.name.clone(), rows, g.groups.into_iter().collect());
            if let Some(previous) = groups.insert(g.name, group) {
                return Err(invalid(format!(
                    "group {:?} is listed twice",
                    previous.name
                )));
            }
        }
        for g in groups.values() {
            if let Some(unknown) = g.groups.iter().find(|n| !groups.contains_key(*n)) {
                return Err(invalid(format!(
                    "group {:?} nests unknown group {unknown:?}",
                    g.name
                )));
            }
        }
        Ok(DirectorySnapshot {
            users,
            groups,
            complete: true,
            ..DirectorySnapshot::default()
        })
    }
}

/// One `users:` entry, whose first event (`event` on `line`) is already read.
fn read_user<'t>(
    ev: &mut Events<'t>,
    event: &Event<'_>,
    line: usize,
    at: At<'_>,
) -> Result<ReadUser<'t>, Stop> {
    let mut seen = [false; USER_FIELDS.len()];
    let mut user = ReadUser::default();
    if ev.open_mapping(event, line, at)? {
        while let Some((key, key_line)) = ev.key(at)? {
            let Some(field) = USER_FIELDS.iter().position(|f| *f == key.as_ref()) else {
                return Err(ev.shape(key_line, unknown_field(at, &key, &USER_FIELDS)));
            };
            if std::mem::replace(&mut seen[field], true) {
                let message = at.says(format_args!("duplicate field `{key}`"));
                return Err(ev.shape(key_line, message));
            }
            let at = at.field(&key);
            match field {
                0 => user.uid = ev.string(at)?,
                1 => user.cn = ev.string(at)?,
                2 => user.mail = ev.optional_string(at)?,
                3 => user.upn = ev.optional_string(at)?,
                4 => user.dn = ev.optional_string(at)?,
                5 => user.disabled = ev.boolean(at)?,
                _ => user.attributes = read_attributes(ev, at)?,
            }
        }
    }
    for (required, name) in seen.iter().zip(USER_FIELDS).take(2) {
        if !required {
            return Err(ev.shape(line, at.says(format_args!("missing field `{name}`"))));
        }
    }
    Ok(user)
}

/// A user entry as read, borrowing what it can from the text.
#[derive(Default)]
struct ReadUser<'t> {
    uid: Cow<'t, str>,
    cn: Cow<'t, str>,
    dn: Option<Cow<'t, str>>,
    mail: Option<Cow<'t, str>>,
    upn: Option<Cow<'t, str>>,
    disabled: bool,
    /// In file order; a repeated name keeps its last value (as serde_yaml's map reading did).
    attributes: Vec<(Cow<'t, str>, String)>,
}

fn read_attributes<'t>(
    ev: &mut Events<'t>,
    at: At<'_>,
) -> Result<Vec<(Cow<'t, str>, String)>, Stop> {
    let mut out = Vec::new();
    let (event, line) = ev.next()?;
    if !ev.open_mapping(&event, line, at)? {
        return Ok(out);
    }
    while let Some((key, _)) = ev.key(at)? {
        let value = ev.attribute(at.field(&key))?;
        out.push((key, value));
    }
    Ok(out)
}

/// One `groups:` entry, whose first event is already read.
/// `users` are the users when they are already known (members are then resolved at once).
fn read_group(
    ev: &mut Events<'_>,
    event: &Event<'_>,
    line: usize,
    at: At<'_>,
    users: Option<&Users>,
) -> Result<PendingGroup, Stop> {
    let mut seen = [false; GROUP_FIELDS.len()];
    let mut group = PendingGroup {
        name: String::new(),
        members: Members::Uids(Vec::new()),
        groups: Vec::new(),
    };
    if ev.open_mapping(event, line, at)? {
        while let Some((key, key_line)) = ev.key(at)? {
            let Some(field) = GROUP_FIELDS.iter().position(|f| *f == key.as_ref()) else {
                return Err(ev.shape(key_line, unknown_field(at, &key, &GROUP_FIELDS)));
            };
            if std::mem::replace(&mut seen[field], true) {
                let message = at.says(format_args!("duplicate field `{key}`"));
                return Err(ev.shape(key_line, message));
            }
            let at = at.field(&key);
            match field {
                0 => group.name = ev.string(at)?.into_owned(),
                1 => {
                    group.members = match users {
                        Some(users) => ev.rows(at, users)?,
                        None => Members::Uids(ev.strings(at)?),
                    }
                }
                _ => group.groups = ev.strings(at)?,
            }
        }
    }
    if !seen[0] {
        return Err(ev.shape(line, at.says("missing field `name`")));
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
users:
  - {uid: alice, cn: Alice, mail: alice@example.org}
  - {uid: bob, cn: Bob, disabled: true, attributes: {employeeNumber: 42}}
  - {uid: "*)(uid=*", cn: "Hostile, Inc.\\"}
groups:
  - {name: a, members: [alice], groups: [b]}
  - {name: b, members: [bob], groups: [a]}
  - {name: c, members: ["*)(uid=*"]}
"#;

    #[test]
    fn nested_members_resolve_through_cycles() {
        let s = parse_file_directory(Path::new("t.yaml"), SAMPLE).unwrap();
        assert!(s.complete);
        let direct: Vec<_> = s.members("a", false).into_iter().collect();
        assert_eq!(direct, ["alice"]);
        let nested: Vec<_> = s.members("a", true).into_iter().collect();
        assert_eq!(nested, ["alice", "bob"]);
        assert_eq!(
            s.users.get("bob").unwrap().to_user().attributes["employeeNumber"],
            "42"
        );
        assert!(s.users.get("bob").unwrap().to_user().disabled);
        assert!(s.members("nope", true).is_empty());
        assert_eq!(s.members("c", false).len(), 1);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_file_directory(
            Path::new("d.yaml"),
            "users:\n  - {uid: a, cn: A, colour: red}\n",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("d.yaml:2:"), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
        let e = parse_file_directory(
            Path::new("d.yaml"),
            "users: [{uid: a, cn: A}]\ngroups: [{name: g, members: [zed]}]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"zed\""), "{e}");
        let e = parse_file_directory(Path::new("d.yaml"), "groups: [{name: g, groups: [h]}]")
            .unwrap_err();
        assert!(e.to_string().contains("unknown group \"h\""), "{e}");
        let bomb = "a: &a [x, x]\nb: &b [*a, *a]\nusers: [{uid: u, cn: *b}]\n";
        let e = parse_file_directory(Path::new("d.yaml"), bomb).unwrap_err();
        assert!(e.to_string().starts_with("d.yaml:1:"), "{e}");
        assert!(e.to_string().contains("anchors are not allowed"), "{e}");
        let deep = format!("users: {}{}", "[".repeat(40), "]".repeat(40));
        let e = parse_file_directory(Path::new("d.yaml"), &deep).unwrap_err();
        assert!(e.to_string().contains("nested"), "{e}");
    }

    fn parse(text: &str) -> Result<DirectorySnapshot, FileDirectoryError> {
        parse_file_directory(Path::new("d.yaml"), text)
    }

    /// The error for `text`, asserting it is a parse error on `line` whose message contains
    /// every one of `words`.
    fn parse_error(text: &str, line: usize, words: &[&str]) {
        let e = parse(text).expect_err(text);
        let msg = e.to_string();
        assert!(
            matches!(e, FileDirectoryError::Parse { line: l, .. } if l == line),
            "want line {line}: {msg}"
        );
        assert!(msg.starts_with(&format!("d.yaml:{line}: ")), "{msg}");
        for w in words {
            assert!(msg.contains(w), "{w:?} not in {msg}");
        }
    }

    fn invalid(text: &str, words: &[&str]) {
        let e = parse(text).expect_err(text);
        let msg = e.to_string();
        assert!(
            matches!(e, FileDirectoryError::Invalid { .. }),
            "want an inconsistency: {msg}"
        );
        for w in words {
            assert!(msg.contains(w), "{w:?} not in {msg}");
        }
    }

    #[test]
    fn block_and_flow_styles_read_alike() {
        let block = "\
users:
  - uid: alice
    cn: Alice
    mail: alice@example.org
    upn: alice@corp.example.org
    dn: \"uid=alice,ou=people,dc=example,dc=org\"
    attributes:
      title: Engineer
      floor: 3
  - uid: bob
    cn: 'Bob ''B'' Jones'
    disabled: True
groups:
  - name: staff
    members:
      - alice
      - bob
    groups:
      - admins
  - name: admins
    members: [alice]
";
        let flow = r#"{users: [{uid: alice, cn: Alice, mail: alice@example.org,
  upn: alice@corp.example.org, dn: "uid=alice,ou=people,dc=example,dc=org",
  attributes: {title: Engineer, floor: 3}},
  {uid: bob, cn: "Bob 'B' Jones", disabled: true}],
 groups: [{name: staff, members: [alice, bob], groups: [admins]},
  {name: admins, members: [alice]}]}"#;
        let a = parse(block).unwrap();
        assert_eq!(a, parse(flow).unwrap());
        assert!(a.complete);
        let alice = &a.users.get("alice").unwrap().to_user();
        assert_eq!(alice.mail.as_deref(), Some("alice@example.org"));
        assert_eq!(alice.upn.as_deref(), Some("alice@corp.example.org"));
        assert_eq!(
            alice.dn.as_deref(),
            Some("uid=alice,ou=people,dc=example,dc=org")
        );
        assert_eq!(alice.attributes["floor"], "3");
        assert!(!alice.disabled);
        assert_eq!(a.users.get("bob").unwrap().to_user().cn, "Bob 'B' Jones");
        assert!(a.users.get("bob").unwrap().to_user().disabled);
        assert_eq!(a.members("staff", true).len(), 2);
        assert_eq!(a.groups["staff"].groups.len(), 1);
    }

    #[test]
    fn empty_and_absent_parts_read_as_empty() {
        for text in [
            "",
            "# nothing\n",
            "---\n",
            "users:\ngroups:\n",
            "{}",
            "users: []\n",
        ] {
            let s = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(
                s.complete && s.users.is_empty() && s.groups.is_empty(),
                "{text:?}"
            );
        }
        let s = parse("users: [{uid: a, cn: A, mail: ~, upn: null, dn:}]\ngroups: [{name: g}]")
            .unwrap();
        let a = &s.users.get("a").unwrap().to_user();
        assert_eq!((&a.mail, &a.upn, &a.dn), (&None, &None, &None));
        assert!(s.groups["g"].member_rows().is_empty());
        // Quoted, a null word is a value.
        let s = parse("users: [{uid: a, cn: A, mail: \"~\"}]").unwrap();
        assert_eq!(
            s.users.get("a").unwrap().to_user().mail.as_deref(),
            Some("~")
        );
    }

    #[test]
    fn numbers_and_booleans_become_strings_as_before() {
        let text = r#"users: [{uid: 7, cn: 1.50, attributes: {
  int: 42, neg: -7, plus: +5, hex: 0x1F, oct: 0o17, bin: 0b101, zero: 007,
  float: 1.50, exp: 1e3, small: 0.0001, tiny: 1.5e-7, big: 1e30, huge: 1e400,
  inf: .inf, ninf: -.Inf, nan: .NaN, yes: True, no: FALSE, word: yes,
  quoted: "42", single: 'true', str: !!str 42, tint: !!int "0x10", tfloat: !!float 3,
  tbool: !!bool "false", under: 1_000, max: 18446744073709551615,
  min: -9223372036854775808, neg0: -0}}]"#;
        let s = parse(text).unwrap();
        let u = &s.users.get("7").unwrap().to_user();
        assert_eq!(u.cn, "1.50", "string fields keep the scalar as written");
        let want = [
            ("int", "42"),
            ("neg", "-7"),
            ("plus", "5"),
            ("hex", "31"),
            ("oct", "15"),
            ("bin", "5"),
            ("zero", "007"),
            ("float", "1.5"),
            ("exp", "1000.0"),
            ("small", "0.0001"),
            ("tiny", "1.5e-7"),
            ("big", "1e30"),
            ("huge", "1e400"),
            ("inf", ".inf"),
            ("ninf", "-.inf"),
            ("nan", ".nan"),
            ("yes", "true"),
            ("no", "false"),
            ("word", "yes"),
            ("quoted", "42"),
            ("single", "true"),
            ("str", "42"),
            ("tint", "16"),
            ("tfloat", "3.0"),
            ("tbool", "false"),
            ("under", "1_000"),
            ("max", "18446744073709551615"),
            ("min", "-9223372036854775808"),
            ("neg0", "0"),
        ];
        for (k, v) in want {
            assert_eq!(u.attributes.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(u.attributes.len(), want.len());
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        parse_error(
            "users: []\ncolour: red\n",
            2,
            &["unknown field `colour`", "`users`"],
        );
        parse_error(
            "users:\n  - uid: a\n    cn: A\n    colour: red\n",
            4,
            &["users[0]: unknown field `colour`", "`attributes`"],
        );
        parse_error(
            "users: []\ngroups:\n  - name: g\n    owner: a\n",
            4,
            &["groups[0]: unknown field `owner`", "`members`"],
        );
    }

    #[test]
    fn wrong_types_are_refused_with_their_line() {
        parse_error(
            "users:\n  - uid: a\n    cn: A\n    attributes:\n      room: {floor: 3}\n",
            5,
            &["users[0].attributes.room", "not a mapping"],
        );
        parse_error(
            "users: [{uid: a, cn: A, attributes: {rooms: [1, 2]}}]",
            1,
            &["attributes.rooms", "not a sequence"],
        );
        parse_error(
            "users:\n- {uid: a, cn: A, attributes: {x: ~}}",
            2,
            &["not null"],
        );
        parse_error(
            "users:\n- {uid: a, cn: A, attributes: {x: !custom 1}}",
            2,
            &["tagged"],
        );
        parse_error(
            "users:\n- {uid: a, cn: A, attributes: {x: 99999999999999999999}}",
            2,
            &["out-of-range integer"],
        );
        parse_error(
            "\n\nusers:\n  - uid: {a: 1}\n    cn: A\n",
            4,
            &["users[0].uid", "a string"],
        );
        parse_error(
            "users: [{uid: [a], cn: A}]",
            1,
            &["users[0].uid", "a sequence"],
        );
        parse_error(
            "users: [{uid: a, cn: A, disabled: yes}]",
            1,
            &["disabled", "a boolean"],
        );
        parse_error(
            "users: [{uid: a, cn: A, disabled: 'true'}]",
            1,
            &["a boolean"],
        );
        parse_error("users: {alice: {}}", 1, &["users", "expected a sequence"]);
        parse_error("users: ~", 1, &["users", "expected a sequence"]);
        parse_error("users: [alice]", 1, &["users[0]", "expected a mapping"]);
        parse_error(
            "groups: [{name: g, members: [[a]]}]",
            1,
            &["groups[0].members[0]"],
        );
        parse_error("- a\n- b\n", 1, &["expected a mapping"]);
        parse_error(
            "users: [{uid: a, cn: A, mail: !!null x}]",
            1,
            &["not a null"],
        );
    }

    #[test]
    fn missing_and_repeated_fields_are_refused() {
        parse_error("users:\n  - uid: a\n", 2, &["users[0]: missing field `cn`"]);
        parse_error("users:\n  - cn: A\n", 2, &["missing field `uid`"]);
        parse_error("users:\n  -\n", 2, &["missing field `uid`"]);
        parse_error("groups: [{members: []}]", 1, &["missing field `name`"]);
        parse_error("users: []\nusers: []\n", 2, &["duplicate field `users`"]);
        parse_error(
            "users:\n- {uid: a, cn: A,\n   uid: b}",
            3,
            &["duplicate field `uid`"],
        );
        // A repeated attribute keeps its last value, as before.
        let s = parse("users: [{uid: a, cn: A, attributes: {x: 1, x: 2}}]").unwrap();
        assert_eq!(s.users.get("a").unwrap().to_user().attributes["x"], "2");
    }

    #[test]
    fn inconsistencies_are_refused() {
        invalid("users: [{uid: '', cn: A}]", &["a user has an empty uid"]);
        invalid(
            "users: [{uid: a, cn: A}, {uid: a, cn: B}]",
            &["user \"a\" is listed twice"],
        );
        invalid(
            "users: [{uid: a, cn: A}]\ngroups: [{name: g}, {name: g}]",
            &["group \"g\" is listed twice"],
        );
        invalid(
            "groups: [{name: g, members: [a, zed]}]\nusers: [{uid: a, cn: A}]",
            &["group \"g\" lists member \"zed\""],
        );
        invalid(
            "groups: [{name: g, groups: [h]}]",
            &["group \"g\" nests unknown group \"h\""],
        );
        // Members may be listed before the users section.
        let s = parse("groups: [{name: g, members: [a]}]\nusers: [{uid: a, cn: A}]").unwrap();
        assert!(s.is_member("a", "g", false));
    }

    #[test]
    fn errors_come_in_the_former_order() {
        // A shape error gives way to an anchor later in the text (the guard ran first).
        parse_error(
            "colour: red\nusers: [{uid: a, cn: &x A}]\n",
            2,
            &["anchors"],
        );
        // An alias is refused too: with anchors refused, it can only name an unknown one.
        parse_error("users: [{uid: a, cn: *x}]\n", 1, &["unknown anchor"]);
        // A syntax error anywhere beats a shape error before it.
        let e = parse("colour: red\nusers: [\n").unwrap_err();
        assert!(
            matches!(e, FileDirectoryError::Parse { line, .. } if line >= 2),
            "{e}"
        );
        // Shape errors beat inconsistencies before them.
        parse_error(
            "users: [{uid: a, cn: A}, {uid: a, cn: A}]\ngroups: 3\n",
            2,
            &["groups"],
        );
        // The first inconsistency among users beats those among groups.
        invalid(
            "groups: [{name: g, members: [zed]}]\nusers: [{uid: a, cn: A}, {uid: a, cn: A}]",
            &["listed twice"],
        );
    }

    #[test]
    fn a_second_document_is_refused() {
        parse_error("users: []\n---\ngroups: []\n", 2, &["one YAML document"]);
        parse_error("---\nusers: []\n...\n---\n", 4, &["one YAML document"]);
        assert!(parse("---\nusers: []\n...\n").is_ok());
    }

    #[test]
    fn oversized_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: no disk space, no memory; the reader must refuse it on its size.
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = read_file_directory(&path).unwrap_err();
        assert!(matches!(e, FileDirectoryError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("larger than"), "{e}");
        let e = read_file_directory(&dir.path().join("absent.yaml")).unwrap_err();
        assert!(matches!(e, FileDirectoryError::Read { .. }), "{e}");
        std::fs::write(&path, SAMPLE).unwrap();
        let s = read_file_directory(&path).unwrap();
        assert_eq!(s, parse(SAMPLE).unwrap());
    }

    #[test]
    fn floats_print_as_serde_yaml_printed_them() {
        for f in [
            0.1,
            1.0,
            -1.0,
            1e15,
            1e16,
            1.5e16,
            123456.789,
            1e-5,
            1.25e-4,
            -0.0,
            5e-324,
            1e308,
            -841468054880354.3,
            0.3,
            2.5,
            1e23,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let want = serde_yaml::Number::from(f).to_string();
            assert_eq!(format_float(f), want, "{f:e}");
        }
    }

    /// The former reader (a saphyr guard pass, then serde_yaml into intermediate structs),
    /// kept as the reference the streaming reader must agree with.
    mod reference {
        use std::collections::BTreeMap;
        use std::path::Path;

        use serde::Deserialize;

        use super::super::{DirectoryGroup, DirectorySnapshot, Events, FileDirectoryError, Stop};
        use crate::observe::snapshot::DirectoryUser;

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileDoc {
            #[serde(default)]
            users: Vec<FileUser>,
            #[serde(default)]
            groups: Vec<FileGroup>,
        }

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileUser {
            uid: String,
            cn: String,
            #[serde(default)]
            mail: Option<String>,
            #[serde(default)]
            upn: Option<String>,
            #[serde(default)]
            dn: Option<String>,
            #[serde(default)]
            disabled: bool,
            #[serde(default)]
            attributes: BTreeMap<String, serde_yaml::Value>,
        }

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileGroup {
            name: String,
            #[serde(default)]
            members: Vec<String>,
            #[serde(default)]
            groups: Vec<String>,
        }

        fn guard(path: &Path, text: &str) -> Result<(), FileDirectoryError> {
            let mut events = Events {
                path,
                parser: saphyr_parser::Parser::new_from_str(text),
                depth: 0,
            };
            loop {
                match events.next() {
                    Err(Stop::Guard(e) | Stop::Shape(e)) => return Err(e),
                    Ok((saphyr_parser::Event::StreamEnd, _)) => return Ok(()),
                    Ok(_) => {}
                }
            }
        }

        pub(super) fn parse(text: &str) -> Result<DirectorySnapshot, FileDirectoryError> {
            let path = Path::new("d.yaml");
            guard(path, text)?;
            let doc: FileDoc =
                serde_yaml::from_str(text).map_err(|e| FileDirectoryError::Parse {
                    path: path.to_path_buf(),
                    line: e.location().map(|l| l.line()).unwrap_or(0),
                    message: e.to_string(),
                })?;
            let invalid = |message: String| FileDirectoryError::Invalid {
                path: path.to_path_buf(),
                message,
            };
            let mut users = Vec::new();
            let mut uids = std::collections::BTreeSet::new();
            for u in doc.users {
                if u.uid.is_empty() {
                    return Err(invalid("a user has an empty uid".into()));
                }
                let mut attributes = BTreeMap::new();
                for (k, v) in u.attributes {
                    let value = match v {
                        serde_yaml::Value::String(s) => s,
                        serde_yaml::Value::Number(n) => n.to_string(),
                        serde_yaml::Value::Bool(b) => b.to_string(),
                        other => return Err(invalid(format!("attribute {k:?}: {other:?}"))),
                    };
                    attributes.insert(k, value);
                }
                let user = DirectoryUser {
                    uid: u.uid.clone(),
                    dn: u.dn,
                    cn: u.cn,
                    mail: u.mail,
                    upn: u.upn,
                    disabled: u.disabled,
                    stable_id: None,
                    attributes,
                };
                if !uids.insert(u.uid.clone()) {
                    return Err(invalid(format!("user {:?} is listed twice", u.uid)));
                }
                users.push(user);
            }
            let mut snapshot = DirectorySnapshot {
                users: users.into_iter().collect(),
                complete: true,
                ..DirectorySnapshot::default()
            };
            for g in doc.groups {
                if let Some(unknown) = g.members.iter().find(|m| !snapshot.users.contains_key(m)) {
                    return Err(invalid(format!(
                        "group {:?} lists member {unknown:?}, who is not among the users",
                        g.name
                    )));
                }
                let rows = g.members.iter().filter_map(|m| snapshot.users.index_of(m));
                let group = DirectoryGroup::new(
                    g.name.clone(),
                    rows.collect(),
                    g.groups.into_iter().collect(),
                );
                if snapshot.groups.insert(g.name.clone(), group).is_some() {
                    return Err(invalid(format!("group {:?} is listed twice", g.name)));
                }
            }
            for g in snapshot.groups.values() {
                if let Some(unknown) = g.groups.iter().find(|n| !snapshot.groups.contains_key(*n)) {
                    return Err(invalid(format!(
                        "group {:?} nests unknown group {unknown:?}",
                        g.name
                    )));
                }
            }
            Ok(snapshot)
        }
    }

    mod agreement {
        use proptest::prelude::*;

        use super::reference;
        use super::*;

        /// A string scalar as YAML: plain when that is safe, else double- or single-quoted.
        fn quote(s: &str, style: u8) -> String {
            let plain_safe = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && parse_bool(s).is_none()
                && !is_null(s);
            match style % 3 {
                0 if plain_safe => s.to_owned(),
                1 => format!("'{}'", s.replace('\'', "''")),
                _ => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
            }
        }

        fn text() -> impl Strategy<Value = String> {
            "[a-z0-9 ._@,=*()'\"\\\\-]{0,10}"
        }

        fn attribute_value() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "42",
                    "-7",
                    "+5",
                    "0x1F",
                    "0xff",
                    "0o17",
                    "0b101",
                    "007",
                    "-00",
                    "1.5",
                    "1.50",
                    "1e3",
                    "-2.5e-8",
                    "1E5",
                    ".5",
                    "5.",
                    ".inf",
                    "-.Inf",
                    "+.INF",
                    ".NaN",
                    "true",
                    "False",
                    "TRUE",
                    "yes",
                    "no",
                    "1_000",
                    "0x",
                    "1e400",
                    "+-1",
                    "-0",
                    "18446744073709551615",
                    "-9223372036854775808",
                    "!!str 42",
                    "!!int 0x10",
                    "!!float 3",
                    "!!bool true",
                    "!!str ~",
                    "\"42\"",
                    "'x y'",
                    "a b",
                    "a:b",
                ])
                .prop_map(str::to_owned),
                any::<i64>().prop_map(|i| i.to_string()),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| format!("{f:?}")),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| format!("{f:e}")),
                (text(), any::<u8>()).prop_map(|(s, q)| quote(&s, q.max(1))),
            ]
        }

        #[derive(Debug, Clone)]
        struct User {
            uid: String,
            cn: String,
            optional: [Option<String>; 3],
            disabled: Option<bool>,
            attributes: Vec<(String, String)>,
            quoting: u8,
            flow: bool,
        }

        fn user() -> impl Strategy<Value = User> {
            (
                text(),
                text(),
                [
                    proptest::option::of(text()),
                    proptest::option::of(text()),
                    proptest::option::of(text()),
                ],
                proptest::option::of(any::<bool>()),
                prop::collection::vec(("[a-z][a-zA-Z0-9]{0,6}", attribute_value()), 0..4),
                any::<u8>(),
                any::<bool>(),
            )
                .prop_map(
                    |(uid, cn, optional, disabled, attributes, quoting, flow)| User {
                        uid,
                        cn,
                        optional,
                        disabled,
                        attributes,
                        quoting,
                        flow,
                    },
                )
        }

        /// A valid directory as YAML text: unique uids and group names, members among the
        /// users, subgroups among the groups; block or flow style per entry.
        fn directory() -> impl Strategy<Value = String> {
            (
                prop::collection::vec(user(), 0..8),
                prop::collection::vec(
                    (
                        prop::collection::vec(any::<prop::sample::Index>(), 0..5),
                        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                        any::<bool>(),
                    ),
                    0..5,
                ),
                any::<bool>(),
            )
                .prop_map(|(users, groups, groups_first)| render(&users, &groups, groups_first))
        }

        type GroupSpec = (Vec<prop::sample::Index>, Vec<prop::sample::Index>, bool);

        fn render(users: &[User], groups: &[GroupSpec], groups_first: bool) -> String {
            let uids: Vec<String> = users
                .iter()
                .enumerate()
                .map(|(i, u)| format!("{}{i}", u.uid))
                .collect();
            let mut users_text = String::from("users:\n");
            for (u, uid) in users.iter().zip(&uids) {
                let q = |s: &str| quote(s, u.quoting);
                let mut fields = vec![format!("uid: {}", q(uid)), format!("cn: {}", q(&u.cn))];
                for (name, value) in ["mail", "upn", "dn"].iter().zip(&u.optional) {
                    if let Some(v) = value {
                        fields.push(format!("{name}: {}", q(v)));
                    }
                }
                if let Some(d) = u.disabled {
                    fields.push(format!("disabled: {d}"));
                }
                let attrs: Vec<String> = u
                    .attributes
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                if u.flow {
                    if !attrs.is_empty() {
                        fields.push(format!("attributes: {{{}}}", attrs.join(", ")));
                    }
                    users_text += &format!("  - {{{}}}\n", fields.join(", "));
                } else {
                    users_text += &format!("  - {}\n", fields.join("\n    "));
                    if !attrs.is_empty() {
                        users_text +=
                            &format!("    attributes:\n      {}\n", attrs.join("\n      "));
                    }
                }
            }
            let mut groups_text = String::from("groups:\n");
            for (i, (members, nested, flow)) in groups.iter().enumerate() {
                let members: Vec<String> = match uids.is_empty() {
                    true => Vec::new(),
                    false => members
                        .iter()
                        .map(|m| quote(m.get::<String>(&uids), 2))
                        .collect(),
                };
                let nested: Vec<String> = nested
                    .iter()
                    .map(|n| format!("g{}", n.index(groups.len())))
                    .collect();
                if *flow {
                    groups_text += &format!(
                        "  - {{name: g{i}, members: [{}], groups: [{}]}}\n",
                        members.join(", "),
                        nested.join(", ")
                    );
                } else {
                    groups_text += &format!("  - name: g{i}\n    members:\n");
                    for m in &members {
                        groups_text += &format!("      - {m}\n");
                    }
                    groups_text += "    groups:\n";
                    for n in &nested {
                        groups_text += &format!("      - {n}\n");
                    }
                }
            }
            match groups_first {
                true => groups_text + &users_text,
                false => users_text + &groups_text,
            }
        }

        /// The streaming reader accepts every text the former reader accepted and builds the
        /// same snapshot; with `strict`, it also refuses every text the former one refused.
        /// (On arbitrary text it may accept what the former one refused: libyaml, under
        /// serde_yaml, reads some odd syntax differently from saphyr, e.g. U+2028 as a line
        /// break inside a comment, or `---` at the start of a line inside a flow mapping.)
        fn agree(text: &str, strict: bool) -> Result<(), TestCaseError> {
            let new = parse(text);
            let old = reference::parse(text);
            match (&new, &old) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", text),
                (Err(_), Err(_)) => {}
                (Ok(_), Err(_)) if !strict => {}
                _ => prop_assert!(
                    false,
                    "disagree on {:?}: new {:?}, old {:?}",
                    text,
                    new,
                    old
                ),
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn agrees_with_the_former_reader_on_valid_directories(text in directory()) {
                prop_assert!(parse(&text).is_ok(), "{:?}: {:?}", text, parse(&text));
                agree(&text, true)?;
            }

            #[test]
            fn never_panics_and_agrees_on_arbitrary_text(text in "\\PC{0,120}") {
                agree(&text, false)?;
            }

            #[test]
            fn never_panics_and_agrees_on_damaged_directories(
                text in directory(),
                cut in any::<prop::sample::Index>(),
                insert in prop::sample::select(vec![
                    "", "\n", " ", "- ", ": ", "{", "}", "[", "]", ",", "&a ", "*a", "!t ", "~",
                    "\"", "'", "#", "---\n", "...\n", "? ", "|\n", "\t", "x: y\n", "  ", "%",
                ]),
                drop in 0usize..4,
            ) {
                // The generated text is ASCII: every index is a character boundary.
                let at = cut.index(text.len() + 1);
                let head = text.get(..at).unwrap_or_default();
                let tail: String = text.get(at..).unwrap_or_default().chars().skip(drop).collect();
                agree(&format!("{head}{insert}{tail}"), false)?;
            }
        }
    }
}

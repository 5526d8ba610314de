//! The YAML event stream of a `file` directory: saphyr-parser's events with their positions,
//! the limits on depth, and the located errors.

use std::borrow::Cow;
use std::path::Path;

use saphyr_parser::{Event, Parser, ScalarStyle, StrInput};

use crate::observe::snapshot::Users;

use super::build::Members;
use super::scalar::{
    CORE_TAG_PREFIX, Resolved, TAG_NULL, format_float, full_tag, is_null, parse_bool, parse_float,
    resolve_int, resolve_plain,
};
use super::{FileDirectoryError, MAX_DEPTH};

/// Why reading stopped.
pub(super) enum Stop {
    /// Syntax error, anchor, alias or nesting too deep: reported whatever else is wrong.
    Guard(FileDirectoryError),
    /// The YAML does not have the shape of a directory file: reported unless a guard error
    /// follows later in the text.
    Shape(FileDirectoryError),
}

/// The parser's events, with the guard applied to each: anchors, aliases and deep nesting are
/// refused, because a directory file has no use for them and alias expansion is how a small
/// file becomes a huge document.
pub(super) struct Events<'t> {
    pub(super) path: &'t Path,
    pub(super) parser: Parser<'t, StrInput<'t>>,
    pub(super) depth: usize,
}

impl<'t> Events<'t> {
    /// The next event and its 1-based line.
    pub(super) fn next(&mut self) -> Result<(Event<'t>, usize), Stop> {
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
    pub(super) fn drain(&mut self) -> Option<FileDirectoryError> {
        loop {
            match self.next() {
                Err(Stop::Guard(e)) => return Some(e),
                Err(Stop::Shape(_)) => return None,
                Ok((Event::StreamEnd, _)) => return None,
                Ok(_) => {}
            }
        }
    }

    pub(super) fn error(&self, line: usize, message: String) -> FileDirectoryError {
        FileDirectoryError::Parse {
            path: self.path.to_path_buf(),
            line,
            message,
        }
    }

    pub(super) fn shape(&self, line: usize, message: String) -> Stop {
        Stop::Shape(self.error(line, message))
    }

    /// `at: expected WHAT, found ...` for an event that is not what the format wants there.
    pub(super) fn unexpected(
        &self,
        line: usize,
        at: At<'_>,
        what: &str,
        found: &Event<'_>,
    ) -> Stop {
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
    pub(super) fn open_mapping(
        &self,
        event: &Event<'_>,
        line: usize,
        at: At<'_>,
    ) -> Result<bool, Stop> {
        match event {
            Event::MappingStart(..) => Ok(true),
            Event::Scalar(v, ScalarStyle::Plain, _, _) if v.is_empty() => Ok(false),
            other => Err(self.unexpected(line, at, "a mapping", other)),
        }
    }

    /// Opens a sequence value: like [`Events::open_mapping`], nothing reads as empty.
    pub(super) fn open_sequence(&mut self, at: At<'_>) -> Result<bool, Stop> {
        let (event, line) = self.next()?;
        match event {
            Event::SequenceStart(..) => Ok(true),
            Event::Scalar(v, ScalarStyle::Plain, _, _) if v.is_empty() => Ok(false),
            other => Err(self.unexpected(line, at, "a sequence", &other)),
        }
    }

    /// The next mapping key, or `None` at the end of the mapping. Keys are scalars.
    pub(super) fn key(&mut self, at: At<'_>) -> Result<Option<(Cow<'t, str>, usize)>, Stop> {
        let (event, line) = self.next()?;
        match event {
            Event::MappingEnd => Ok(None),
            Event::Scalar(k, ..) => Ok(Some((k, line))),
            other => Err(self.unexpected(line, at, "a scalar key", &other)),
        }
    }

    /// A string value: any scalar, as written (`42` is the string "42").
    pub(super) fn string(&mut self, at: At<'_>) -> Result<Cow<'t, str>, Stop> {
        let (event, line) = self.next()?;
        match event {
            Event::Scalar(v, ..) => Ok(v),
            other => Err(self.unexpected(line, at, "a string", &other)),
        }
    }

    /// An optional string: a plain null (`~`, `null`, nothing) is absent.
    pub(super) fn optional_string(&mut self, at: At<'_>) -> Result<Option<Cow<'t, str>>, Stop> {
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
    pub(super) fn boolean(&mut self, at: At<'_>) -> Result<bool, Stop> {
        let (event, line) = self.next()?;
        match &event {
            Event::Scalar(v, ScalarStyle::Plain, _, _) if parse_bool(v).is_some() => {
                Ok(parse_bool(v).unwrap_or_default())
            }
            other => Err(self.unexpected(line, at, "a boolean", other)),
        }
    }

    /// A list of strings (member uids, subgroup names).
    pub(super) fn strings(&mut self, at: At<'_>) -> Result<Vec<String>, Stop> {
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
    pub(super) fn rows(&mut self, at: At<'_>, users: &Users) -> Result<Members, Stop> {
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
    pub(super) fn attribute(&mut self, at: At<'_>) -> Result<String, Stop> {
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
pub(super) struct At<'a> {
    pub(super) parent: Option<&'a At<'a>>,
    pub(super) name: &'a str,
    pub(super) index: Option<usize>,
}

impl<'a> At<'a> {
    pub(super) const ROOT: At<'static> = At {
        parent: None,
        name: "",
        index: None,
    };

    pub(super) fn field(&'a self, name: &'a str) -> At<'a> {
        At {
            parent: Some(self),
            name,
            index: None,
        }
    }

    pub(super) fn item(self, index: usize) -> At<'a> {
        At {
            index: Some(index),
            ..self
        }
    }

    /// `path: message`, or the bare message at the document's root.
    pub(super) fn says(&self, message: impl std::fmt::Display) -> String {
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

//! The defensive YAML pre-pass: before serde_yaml sees a policy file, one streaming pass with
//! saphyr-parser records where every node starts (per document, by JSON pointer) and refuses
//! files that would expand too far (alias bombs, one anchor referenced thousands of times,
//! absurd nesting).
//!
//! This module does not build values or know about policy kinds; it only maps positions and
//! enforces budgets. Size and encoding checks on the raw bytes live in `load`.

use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser, ScanError};

/// Most nodes a file may expand to, counting every alias as a full copy of its anchor.
pub const MAX_EXPANDED_NODES: u64 = 100_000;
/// Most aliases a file may contain.
pub const MAX_ALIASES: u64 = 1_000;
/// Deepest nesting of mappings and sequences.
pub const MAX_DEPTH: usize = 64;

/// A position in a file: 1-based line, 1-based column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Where each node of one document starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocMap {
    /// Line of the document start (`---` or its first content).
    pub start: usize,
    /// Node start positions by JSON pointer (`""` is the root). For mapping entries this is
    /// the position of the key, which is what a reader looks for.
    pub nodes: BTreeMap<String, Pos>,
}

impl DocMap {
    /// The position of `pointer`, or of its nearest ancestor that has one.
    pub fn locate(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.nodes.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => {
                    return Pos {
                        line: self.start.max(1),
                        column: 1,
                    };
                }
            }
        }
    }
}

/// Why a file was refused by the pre-pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanProblem {
    /// The YAML does not parse.
    #[error("YAML syntax error: {message}")]
    Syntax {
        /// Where.
        pos: Pos,
        /// The parser's description.
        message: String,
    },
    /// Expanding aliases would create too many nodes (billion laughs and its cousins).
    #[error(
        "refusing YAML that expands to more than {MAX_EXPANDED_NODES} nodes through aliases (alias bomb?)"
    )]
    TooManyNodes {
        /// Where the budget ran out.
        pos: Pos,
    },
    /// More aliases than any policy needs.
    #[error("refusing YAML with more than {MAX_ALIASES} aliases")]
    TooManyAliases {
        /// Where the budget ran out.
        pos: Pos,
    },
    /// Nested deeper than any policy needs.
    #[error("refusing YAML nested deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// Where.
        pos: Pos,
    },
}

impl ScanProblem {
    /// Where the problem was found.
    pub fn pos(&self) -> Pos {
        match self {
            ScanProblem::Syntax { pos, .. }
            | ScanProblem::TooManyNodes { pos }
            | ScanProblem::TooManyAliases { pos }
            | ScanProblem::TooDeep { pos } => *pos,
        }
    }
}

enum Frame {
    Mapping {
        pointer: String,
        /// The key just read and its position, when the next node is its value.
        pending_key: Option<(String, Pos)>,
        anchor: usize,
        size: u64,
    },
    Sequence {
        pointer: String,
        next: usize,
        anchor: usize,
        size: u64,
    },
}

impl Frame {
    fn add_size(&mut self, n: u64) {
        match self {
            Frame::Mapping { size, .. } | Frame::Sequence { size, .. } => {
                *size = size.saturating_add(n);
            }
        }
    }
}

/// Escapes one JSON pointer segment (`~` → `~0`, `/` → `~1`).
pub fn escape_pointer_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn pos_of(mark: &saphyr_parser::Marker) -> Pos {
    Pos {
        line: mark.line().max(1),
        column: mark.col() + 1,
    }
}

fn syntax(e: &ScanError) -> ScanProblem {
    ScanProblem::Syntax {
        pos: pos_of(e.marker()),
        message: e.info().to_string(),
    }
}

/// Scans a whole file; returns one [`DocMap`] per document, in order.
pub fn scan(text: &str) -> Result<Vec<DocMap>, ScanProblem> {
    let mut docs: Vec<DocMap> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: BTreeMap<usize, u64> = BTreeMap::new();
    let mut expanded: u64 = 0;
    let mut aliases: u64 = 0;

    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| syntax(&e))?;
        let pos = pos_of(&span.start);
        let (node_size, anchor, container) = match &event {
            Event::DocumentStart(_) => {
                docs.push(DocMap {
                    start: pos.line,
                    nodes: BTreeMap::new(),
                });
                stack.clear();
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let Some(frame) = stack.pop() else { continue };
                let (anchor, size) = match frame {
                    Frame::Mapping { anchor, size, .. } | Frame::Sequence { anchor, size, .. } => {
                        (anchor, size.saturating_add(1))
                    }
                };
                if anchor != 0 {
                    anchors.insert(anchor, size);
                }
                if let Some(parent) = stack.last_mut() {
                    parent.add_size(size);
                }
                continue;
            }
            Event::Scalar(_, _, anchor, _) => (1, *anchor, None),
            Event::Alias(id) => {
                aliases += 1;
                if aliases > MAX_ALIASES {
                    return Err(ScanProblem::TooManyAliases { pos });
                }
                (anchors.get(id).copied().unwrap_or(1), 0, None)
            }
            Event::MappingStart(anchor, _) => (1, *anchor, Some(true)),
            Event::SequenceStart(anchor, _) => (1, *anchor, Some(false)),
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
        };

        expanded = expanded.saturating_add(node_size);
        if expanded > MAX_EXPANDED_NODES {
            return Err(ScanProblem::TooManyNodes { pos });
        }

        // Work out this node's pointer, and whether it is a mapping key.
        let pointer: Option<(String, Pos)> = match stack.last_mut() {
            None => Some((String::new(), pos)),
            Some(Frame::Sequence { pointer, next, .. }) => {
                let p = format!("{pointer}/{next}");
                *next += 1;
                Some((p, pos))
            }
            Some(Frame::Mapping {
                pointer,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some((key, key_pos)) => Some((
                    format!("{pointer}/{}", escape_pointer_segment(&key)),
                    key_pos,
                )),
                None => {
                    let key = match &event {
                        Event::Scalar(v, ..) => v.to_string(),
                        _ => "?".to_string(),
                    };
                    *pending_key = Some((key, pos));
                    None
                }
            },
        };
        // Containers add their size to the parent when they end.
        if container.is_none()
            && let Some(parent) = stack.last_mut()
        {
            parent.add_size(node_size);
        }
        if let (Some((p, at)), Some(doc)) = (&pointer, docs.last_mut()) {
            doc.nodes.entry(p.clone()).or_insert(*at);
        }
        if container.is_none() && anchor != 0 {
            anchors.insert(anchor, 1);
        }

        if let Some(is_mapping) = container {
            if stack.len() >= MAX_DEPTH {
                return Err(ScanProblem::TooDeep { pos });
            }
            // A container used as a mapping key gets a throwaway pointer.
            let pointer = pointer.map(|(p, _)| p).unwrap_or_else(|| "/?".to_string());
            stack.push(if is_mapping {
                Frame::Mapping {
                    pointer,
                    pending_key: None,
                    anchor,
                    size: 0,
                }
            } else {
                Frame::Sequence {
                    pointer,
                    next: 0,
                    anchor,
                    size: 0,
                }
            });
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_pointers_to_lines() {
        let text = "# c\napiVersion: v1\nspec:\n  certificates:\n  - name: a\n    slot: 9A\n  - name: b\n---\nkind: X\n";
        let docs = scan(text).unwrap();
        assert_eq!(docs.len(), 2);
        let d = &docs[0];
        assert_eq!(d.nodes["/apiVersion"].line, 2);
        assert_eq!(d.nodes["/spec"].line, 3);
        assert_eq!(d.nodes["/spec/certificates"].line, 4);
        assert_eq!(d.nodes["/spec/certificates/0"].line, 5);
        assert_eq!(d.nodes["/spec/certificates/0/slot"].line, 6);
        assert_eq!(d.nodes["/spec/certificates/1/name"].line, 7);
        assert_eq!(d.locate("/spec/certificates/1/colour").line, 7);
        assert_eq!(docs[1].nodes["/kind"].line, 9);
        assert_eq!(docs[1].locate("/nothing/here").line, docs[1].nodes[""].line);
    }

    #[test]
    fn escapes_pointer_segments() {
        let docs = scan("a/b: {c~d: 1}\n").unwrap();
        assert!(docs[0].nodes.contains_key("/a~1b/c~0d"));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = scan("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(matches!(err, ScanProblem::Syntax { .. }), "{err:?}");
        assert!(err.pos().line >= 2);
    }

    #[test]
    fn refuses_billion_laughs() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        assert!(matches!(scan(&text), Err(ScanProblem::TooManyNodes { .. })));
    }

    #[test]
    fn refuses_quadratic_anchor_reuse() {
        let items = vec!["x"; 500].join(", ");
        let refs = vec!["*big"; 500].join(", ");
        let text = format!("big: &big [{items}]\nuse: [{refs}]\n");
        assert!(matches!(scan(&text), Err(ScanProblem::TooManyNodes { .. })));
    }

    #[test]
    fn refuses_thousands_of_aliases() {
        let refs = vec!["*s"; 2000].join(", ");
        let text = format!("s: &s x\nuse: [{refs}]\n");
        assert!(matches!(
            scan(&text),
            Err(ScanProblem::TooManyAliases { .. })
        ));
    }

    #[test]
    fn refuses_deep_nesting() {
        let text = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(scan(&text), Err(ScanProblem::TooDeep { .. })));
    }

    #[test]
    fn allows_modest_aliases() {
        let text = "base: &b {length: 6}\nx: *b\ny: *b\n";
        assert_eq!(scan(text).unwrap().len(), 1);
    }
}

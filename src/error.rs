//! The library's error type. Every message names the file, node, value or field at fault, so
//! the CLI can print it on one line and exit with code 2; [`suggestion`] adds the "did you
//! mean" of unknown names.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading, transforming or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a decodable ONNX ModelProto.
    #[error("{what} is not a valid ONNX model: {reason}")]
    Decode { what: String, reason: String },
    /// The model decodes but breaks a structural rule of ONNX (names, wiring, tensors).
    #[error("invalid model: {0}")]
    Invalid(String),
    /// A tensor's external data cannot be used.
    #[error("external data of tensor '{tensor}': {reason}")]
    ExternalData { tensor: String, reason: String },
    /// The model uses something intone does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A pipeline or pass option given by the user is wrong.
    #[error("{0}")]
    Usage(String),
    /// A pass failed; the message names the node.
    #[error("pass {pass}: {message}")]
    Pass { pass: String, message: String },
    /// The IR broke an invariant (after a pass: a compiler bug; the message says which pass).
    #[error("IR verification failed{}: {message}", after.as_ref().map(|p| format!(" after pass {p}")).unwrap_or_default())]
    Verify {
        after: Option<String>,
        message: String,
    },
    /// tract could not load or run a model.
    #[error("tract: {0}")]
    Runtime(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported(message.into())
    }
}

/// `; did you mean 'x'?` for the closest candidate within a small edit distance, else a list.
pub fn suggestion(word: &str, candidates: &[&str]) -> String {
    let best = candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .min();
    match best {
        Some((d, c)) if d <= 2.max(word.len() / 3) => format!("; did you mean '{c}'?"),
        _ if candidates.is_empty() => String::new(),
        _ => format!("; known: {}", candidates.join(", ")),
    }
}

/// Levenshtein distance.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

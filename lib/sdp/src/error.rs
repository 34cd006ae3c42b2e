//! The crate's single error type.

use crate::model::MediaKind;

/// Everything that can go wrong while reading a description or building one.
///
/// Each message names the line or m-line concerned and says what the server needed, so it can be
/// passed to the person (or log) that produced the SDP unchanged: the control daemon sends it back
/// in an `error` message with code `sdp`. m-lines are numbered from 0 in description order, lines
/// from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not SDP, or one line of it cannot be read.
    #[error("SDP line {line}: {message}")]
    Syntax {
        /// 1-based line number (0 when the problem is the text as a whole).
        line: usize,
        /// What is wrong with the line, quoting it.
        message: String,
    },
    /// One m-line cannot be used as it is.
    #[error("m-line {index} ({kind}): {message}")]
    Media {
        /// 0-based position of the m-line.
        index: usize,
        /// Its media type.
        kind: MediaKind,
        /// What is wrong and what the server needs instead.
        message: String,
    },
    /// A transport attribute (`a=ice-ufrag`, `a=ice-pwd`, `a=fingerprint`) is in neither the
    /// session section nor any m-line in use.
    #[error("the description has no a={attribute} at session level or on any m-line in use; the server needs it to set up the ICE/DTLS transport")]
    MissingTransport {
        /// The attribute name, without `a=`.
        attribute: &'static str,
    },
    /// Two bundled m-lines disagree on a transport attribute.
    #[error("a={attribute} differs between m-line {first} and m-line {other}; the server runs one ICE/DTLS transport per connection, so all m-lines must share it (BUNDLE)")]
    TransportMismatch {
        /// The attribute name, without `a=`.
        attribute: &'static str,
        /// The first m-line in use.
        first: usize,
        /// The m-line that disagrees with it.
        other: usize,
    },
    /// The peer chose a DTLS role the server cannot take.
    #[error("{message}")]
    Setup {
        /// Which `a=setup` was found and which one the server needs.
        message: String,
    },
    /// The media is not bundled the way the server requires.
    #[error("{message}")]
    Bundle {
        /// What is missing from the BUNDLE group.
        message: String,
    },
    /// An answer does not line up with the offer it answers.
    #[error("{message}")]
    AnswerMismatch {
        /// Which m-line differs and how.
        message: String,
    },
    /// The caller's input to an SDP builder is unusable (empty slot list, duplicate mid, a value
    /// that would break the SDP syntax, ...).
    #[error("{message}")]
    InvalidInput {
        /// What is wrong with the input.
        message: String,
    },
}

impl Error {
    pub(crate) fn media(index: usize, kind: &MediaKind, message: impl Into<String>) -> Self {
        Error::Media {
            index,
            kind: kind.clone(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput {
            message: message.into(),
        }
    }
}

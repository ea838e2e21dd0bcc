//! The text that embedding and NLP take: at most [`MAX_TEXT_CHARS`] characters, not blank.

/// Longest text, in characters, that embedding and NLP accept.
pub const MAX_TEXT_CHARS: usize = 100_000;

/// Why a text was refused before any work. Both are client errors (bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The text is empty or only whitespace.
    #[error("text must not be empty")]
    Empty,
    /// The text is longer than [`MAX_TEXT_CHARS`].
    #[error("text is {length} characters long; the limit is {limit}")]
    TooLong {
        /// Length of the text, in characters.
        length: usize,
        /// The limit, in characters.
        limit: usize,
    },
}

impl TextError {
    /// A stable machine-readable code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_text",
            Self::TooLong { .. } => "text_too_long",
        }
    }
}

/// Checks `text`; `length` is its length in characters, which the caller counts before (it goes
/// on the caller's span even when the text is refused).
///
/// # Errors
///
/// [`TextError::TooLong`] past [`MAX_TEXT_CHARS`], [`TextError::Empty`] for a blank text.
pub fn check(text: &str, length: usize) -> Result<(), TextError> {
    if length > MAX_TEXT_CHARS {
        return Err(TextError::TooLong {
            length,
            limit: MAX_TEXT_CHARS,
        });
    }
    if text.trim().is_empty() {
        return Err(TextError::Empty);
    }
    Ok(())
}

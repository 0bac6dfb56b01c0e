//! A command line that parsed but cannot be used.

/// A command line that parsed but cannot be used (exit code 2, like a parse error);
/// nothing has been opened or written when it is returned.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

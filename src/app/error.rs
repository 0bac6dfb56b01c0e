//! Why a use case did not complete.

use aggregates::catalog::Capability;

use crate::executor::CommandError;

/// Why a use case did not complete. Maps one to one onto HTTP errors.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The thing does not exist, or the caller may not know it does.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller is a member but lacks the capability.
    #[error("this action needs the `{0}` capability")]
    Forbidden(Capability),
    /// The request is well-formed but contradicts the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The views have not reached the position the read must see, in time.
    #[error("the read models are at log position {reached}, behind {target}")]
    Lagging {
        /// The position the read must see.
        target: i64,
        /// Where the slowest view stands.
        reached: i64,
    },
    /// The database cannot be reached or written right now; retrying later
    /// may succeed (see [`crate::store::is_unavailable`]).
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Something failed on our side.
    #[error("{0}")]
    Internal(String),
}

impl<E: std::error::Error> From<CommandError<E>> for AppError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(e) => Self::Internal(format!("unexpected refusal: {e}")),
            CommandError::Conflict { attempts } => Self::Internal(format!(
                "the stream kept changing; gave up after {attempts} attempts"
            )),
            CommandError::Store(error) => error.into(),
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(error: anyhow::Error) -> Self {
        if crate::store::is_unavailable(error.as_ref()) {
            Self::Unavailable(error)
        } else {
            Self::Internal(format!("{error:#}"))
        }
    }
}

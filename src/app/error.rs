//! Why a use case did not complete.
//!
//! Every domain refusal has its answer here, decided once per variant: the
//! conversions below are exhaustive `match`es without a wildcard, so a new
//! variant in the domain does not compile until someone decides its status.
//! A refusal the application makes impossible by construction (it draws fresh
//! ids, it builds the scope from the operation) is [`AppError::Internal`]: if
//! it ever happens it is our defect, not the caller's.

use aggregates::catalog::Capability;
use aggregates::connection::ConnectionError;
use aggregates::registry::AlreadyExists;
use aggregates::tenant::TenantError;
use aggregates::user::UserError;

use crate::write::executor::CommandError;

/// Why a use case did not complete. Maps one to one onto HTTP errors.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The caller's token is not (or no longer) valid.
    #[error("unauthenticated")]
    Unauthenticated,
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
    /// may succeed (see [`crate::write::store::is_unavailable`]).
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Something failed on our side. The error and its causes, as they were:
    /// logged once, with the chain, where it becomes a 500.
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl AppError {
    /// A refusal the application makes impossible by construction.
    fn unexpected(refusal: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(anyhow::Error::new(refusal).context("unexpected refusal"))
    }
}

impl From<ConnectionError> for AppError {
    fn from(error: ConnectionError) -> Self {
        use ConnectionError as E;
        match error {
            // A connection of another tenant is hidden as not found.
            E::NotFound | E::WrongTenant => Self::NotFound("provider connection"),
            E::RunNotFound => Self::NotFound("operation run"),
            E::RunEnded(_)
            | E::AlreadyClaimed
            | E::NotClaimed
            | E::NotHolder
            | E::LeaseExpired
            | E::NotAnExecutionReason(_)
            | E::InvalidLease
            | E::CancelNotRequested => Self::Conflict(error.to_string()),
            // What the worker reported does not fit the run.
            E::Result(_) => Self::Invalid(error.to_string()),
            // Every connection and every proposed run gets a fresh id, and the
            // scope is built from the operation.
            E::AlreadyExists | E::ScopeMismatch | E::RunIdTaken => Self::unexpected(error),
        }
    }
}

impl From<TenantError> for AppError {
    fn from(error: TenantError) -> Self {
        use TenantError as E;
        match error {
            E::NotFound => Self::NotFound("tenant"),
            E::NotMember => Self::NotFound("member"),
            E::UnknownConnection => Self::NotFound("provider connection"),
            // The start resolves again on this one (see `start_authorized`).
            E::HasDefault(_) => Self::Conflict(error.to_string()),
            // Every tenant gets a fresh id.
            E::AlreadyExists => Self::unexpected(error),
        }
    }
}

impl From<UserError> for AppError {
    fn from(error: UserError) -> Self {
        match error {
            UserError::NotFound => Self::NotFound("user"),
            UserError::AlreadyExists => Self::Conflict(error.to_string()),
        }
    }
}

impl From<AlreadyExists> for AppError {
    /// Workspaces and restore runs get fresh ids.
    fn from(error: AlreadyExists) -> Self {
        Self::unexpected(error)
    }
}

impl<E: Into<AppError> + std::error::Error> From<CommandError<E>> for AppError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(refusal) => refusal.into(),
            CommandError::Conflict { attempts } => Self::Internal(anyhow::anyhow!(
                "the stream kept changing; gave up after {attempts} attempts"
            )),
            CommandError::Stale => {
                Self::Internal(anyhow::anyhow!("the streams a decision read kept changing"))
            }
            CommandError::Store(error) => error.into(),
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(error: anyhow::Error) -> Self {
        if crate::write::store::is_unavailable(error.as_ref()) {
            Self::Unavailable(error)
        } else {
            Self::Internal(error)
        }
    }
}

/// An error and its causes on one line, each cause once: a cause whose text the
/// message before it already ends with (`sqlx` repeats its IO error) is left out.
pub fn error_line(error: &anyhow::Error) -> String {
    cause_line(error.as_ref())
}

/// [`error_line`] for any error: the error and its `source()` chain.
pub fn cause_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in anyhow::Chain::new(error) {
        let text = cause.to_string();
        if !previous.is_empty() && previous.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        previous = text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like `sqlx::Error::Io`: its message ends with its source's.
    #[derive(Debug, thiserror::Error)]
    #[error("error communicating with database: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn it_should_print_a_cause_its_error_already_ends_with_once() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = anyhow::Error::new(Repeats(refused)).context("cannot connect");
        assert_eq!(
            error_line(&error),
            "cannot connect: error communicating with database: refused"
        );
    }

    #[test]
    fn it_should_keep_every_cause_that_adds_something() {
        let error = anyhow::anyhow!("root").context("middle").context("top");
        assert_eq!(error_line(&error), "top: middle: root");
    }

    #[test]
    fn an_internal_error_keeps_its_cause_chain() {
        let store: CommandError<ConnectionError> = CommandError::Store(
            anyhow::Error::new(std::io::Error::other("disk on fire")).context("appending"),
        );
        let AppError::Internal(error) = AppError::from(store) else {
            panic!("not internal");
        };
        assert_eq!(format!("{error:#}"), "appending: disk on fire");
        assert!(error.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn a_refusal_made_impossible_by_construction_is_internal_and_keeps_the_refusal() {
        let error = AppError::from(CommandError::Rejected(ConnectionError::RunIdTaken));
        let AppError::Internal(error) = error else {
            panic!("not internal");
        };
        assert_eq!(
            format!("{error:#}"),
            "unexpected refusal: the proposed run id is already in use"
        );
        assert_eq!(
            error.downcast_ref::<ConnectionError>(),
            Some(&ConnectionError::RunIdTaken)
        );
    }
}

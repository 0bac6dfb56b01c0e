//! Who is signed in, and the header every page shows them.

use crate::app::Principal;

/// A signed-in operator: who, and the CSRF token their forms carry.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Who.
    pub principal: Principal,
    /// The session's CSRF token (in every form as `csrf`).
    pub csrf: String,
}

impl Signed {
    /// The name shown in the header.
    pub fn name(&self) -> &str {
        match &self.principal {
            Principal::Admin => "admin",
            Principal::User { name, .. } => name,
        }
    }
}

/// The header of every page: who is signed in, and the sign-out form's token.
#[derive(Debug, Clone)]
pub struct Nav {
    /// The operator's name.
    pub name: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// The page the header marks as current.
    pub current: &'static str,
    /// The log position the page's views showed (0: unknown): live updates
    /// follow from there, so nothing between rendering and connecting is missed.
    pub position: i64,
}

impl Nav {
    /// The header for a signed-in operator on `current`.
    pub fn new(signed: &Signed, current: &'static str) -> Option<Self> {
        Some(Self {
            name: signed.name().to_owned(),
            csrf: signed.csrf.clone(),
            current,
            position: crate::read::consistency::seen_so_far(),
        })
    }
}

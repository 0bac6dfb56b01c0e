//! The HTTP edge: the JSON API ([`api`]) and the operator console
//! ([`console`]), siblings over what they share.

pub mod api;
pub mod console;

//! The read side: the catch-up that numbers the log and feeds the projections
//! ([`catchup`]), the view tables' SQL ([`views`]), the view queries
//! ([`queries`]), a hot standby serving them ([`replica`]), and each
//! principal's last written position ([`consistency`]).

pub mod catchup;
pub mod consistency;
pub mod queries;
pub mod replica;
pub(crate) mod views;

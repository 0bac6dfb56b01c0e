//! Checks on the repository itself rather than on behaviour: the layers of
//! `src/` (no import against the order, no cycle at any depth) and the docs
//! (every relative link leads somewhere, every page is reachable).

mod architecture;
mod docs;

//! Opaque list cursors. A cursor carries the log position of the last item a
//! page showed, encrypted (a position would tell how busy other tenants were)
//! and bound by a MAC to the list, its filters and the principal it was issued
//! to: any other cursor is a 400.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::ApiError;
use super::state::AppState;
use crate::app::Principal;

type HmacSha256 = Hmac<Sha256>;

const NONCE: usize = 8;
const TAG: usize = 16;

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        // Length-prefixed, so that no two different part lists read the same.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn pad(key: &[u8; 32], nonce: &[u8]) -> [u8; 8] {
    let block = mac(key, &[b"pad", nonce]);
    block[..8].try_into().expect("8 bytes")
}

/// A cursor for `position` in `list` (the list and its filters) for `principal`.
pub fn seal(key: &[u8; 32], list: &str, principal: &str, position: i64) -> String {
    let nonce: [u8; NONCE] = rand::random();
    let mut sealed = position.to_be_bytes();
    for (byte, p) in sealed.iter_mut().zip(pad(key, &nonce)) {
        *byte ^= p;
    }
    let tag = mac(
        key,
        &[
            b"tag",
            &nonce,
            &sealed,
            list.as_bytes(),
            principal.as_bytes(),
        ],
    );
    let mut bytes = Vec::with_capacity(NONCE + 8 + TAG);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    bytes.extend_from_slice(&tag[..TAG]);
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The position a cursor carries, if this server issued it for this list and
/// principal.
pub fn open(key: &[u8; 32], list: &str, principal: &str, cursor: &str) -> Result<i64, ApiError> {
    let refused = || {
        ApiError::invalid(
            "`cursor` is not a cursor this API returned for this list (cursors are valid only \
             for the list, filters and caller they were issued to)",
        )
    };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| refused())?;
    if bytes.len() != NONCE + 8 + TAG {
        return Err(refused());
    }
    let (nonce, rest) = bytes.split_at(NONCE);
    let (sealed, tag) = rest.split_at(8);
    let expected = mac(
        key,
        &[b"tag", nonce, sealed, list.as_bytes(), principal.as_bytes()],
    );
    // Compared in constant time.
    let differs = expected[..TAG]
        .iter()
        .zip(tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 {
        return Err(refused());
    }
    let mut position: [u8; 8] = sealed.try_into().expect("8 bytes");
    for (byte, p) in position.iter_mut().zip(pad(key, nonce)) {
        *byte ^= p;
    }
    let position = i64::from_be_bytes(position);
    if position <= 0 {
        return Err(refused());
    }
    Ok(position)
}

/// One list with its filters, as seen by one principal: the scope a cursor
/// is valid in (see [`crate::web::cursor`]).
pub(crate) struct ListScope<'a> {
    app: &'a AppState,
    list: String,
    principal: String,
}

impl<'a> ListScope<'a> {
    pub(crate) fn new(app: &'a AppState, principal: &Principal, list: String) -> Self {
        Self {
            app,
            list,
            principal: principal.actor().id_string(),
        }
    }

    /// The position a client's cursor carries; 400 for any other cursor.
    pub(crate) fn open(&self, cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
        cursor
            .map(|c| {
                crate::web::cursor::open(
                    self.app.dispatcher.cursor_key(),
                    &self.list,
                    &self.principal,
                    c,
                )
            })
            .transpose()
    }

    /// The cursor of the next page.
    pub(crate) fn seal(&self, position: Option<i64>) -> Option<String> {
        position.map(|p| {
            crate::web::cursor::seal(
                self.app.dispatcher.cursor_key(),
                &self.list,
                &self.principal,
                p,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_cursor_opens_only_for_its_list_and_principal() {
        let cursor = seal(&KEY, "runs", "admin", 42);
        assert_eq!(open(&KEY, "runs", "admin", &cursor).unwrap(), 42);
        assert!(open(&KEY, "notifications", "admin", &cursor).is_err());
        assert!(open(&KEY, "runs", "someone", &cursor).is_err());
        assert!(open(&[8; 32], "runs", "admin", &cursor).is_err());
        assert!(open(&KEY, "runs", "admin", "p42").is_err());
    }

    #[test]
    fn a_cursor_does_not_show_its_position() {
        let a = seal(&KEY, "runs", "admin", 42);
        let b = seal(&KEY, "runs", "admin", 42);
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(!a.contains("42"));
    }
}

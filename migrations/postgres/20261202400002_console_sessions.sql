-- Console sign-in sessions (server-side; the cookie holds only a random id).
-- Not events: a session is no fact of the domain, and expires by itself.
-- id_sha256: SHA-256 of the cookie's id (a leaked table opens no session);
-- user_id: NULL for the admin token; token_sha256: the token signed in with,
-- checked again on every request (a revoked or rotated token ends the session).
CREATE TABLE console_sessions
(
    id_sha256    text PRIMARY KEY,
    user_id      text,
    token_sha256 text    NOT NULL,
    csrf         text    NOT NULL,
    expires_ms   bigint  NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_ms);

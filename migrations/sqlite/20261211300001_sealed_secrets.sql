-- Provider secrets in custody: sealed (ChaCha20-Poly1305) under a key the
-- database does not hold (`serve --secrets-key-file`); never plaintext. Keyed
-- by connection and the secret's fingerprint, so the row the log names is the
-- one opened: a rotation whose event never committed leaves the old row usable.
CREATE TABLE provider_secrets (
    connection_id text NOT NULL,
    fingerprint text NOT NULL,
    nonce blob NOT NULL,
    ciphertext blob NOT NULL,
    stored_at text NOT NULL,
    PRIMARY KEY (connection_id, fingerprint)
);

-- Idempotency keys (see src/idempotency.rs): one row per principal and key.
--
-- A request that holds a key tags every event it commits with its attempt id
-- (metadata `idempotency.attempt`). The trigger below runs inside the commit's
-- own transaction: it marks the key `committed` there, so "these events were
-- written under this key" is committed with the events or not at all, and it
-- refuses the commit when the attempt no longer holds the key (it was taken
-- over after its lease ran out), so a stalled first attempt can never write
-- beside the one that replaced it.
CREATE TABLE idempotency_keys
(
    principal     text    NOT NULL,
    key_sha256    text    NOT NULL,
    fingerprint   text    NOT NULL,
    attempt       text    NOT NULL UNIQUE,
    created_at    bigint  NOT NULL,
    lease_until   bigint  NOT NULL,
    committed     integer NOT NULL DEFAULT 0,
    status        integer,
    content_type  text,
    gate_position bigint,
    body          bytea,
    PRIMARY KEY (principal, key_sha256)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE FUNCTION dg_idempotency_commit() RETURNS trigger
LANGUAGE plpgsql AS
$$
BEGIN
    UPDATE idempotency_keys SET committed = 1
    WHERE attempt = NEW.metadata ->> 'idempotency.attempt';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'idempotency attempt % no longer holds its key',
            NEW.metadata ->> 'idempotency.attempt';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_idempotency
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.metadata ? 'idempotency.attempt')
EXECUTE FUNCTION dg_idempotency_commit();

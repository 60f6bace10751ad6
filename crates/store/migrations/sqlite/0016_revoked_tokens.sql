-- Revoked tokens, by `jti` (`airlock token revoke`): refused by every process within a
-- second (each caches an answer for at most that long). A row is kept until the token would
-- have expired anyway, then retention removes it.
CREATE TABLE revoked_tokens (
    jti TEXT NOT NULL PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

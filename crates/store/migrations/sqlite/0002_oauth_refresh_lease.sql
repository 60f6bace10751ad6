-- OAuth2 token refresh lease: the one process (and within it, the one task) refreshing a
-- connection's access token holds the lease until it writes the new envelope or the lease
-- expires (unix milliseconds). Others wait for the row's token to change.
ALTER TABLE connections ADD COLUMN refresh_lease_until BIGINT;
ALTER TABLE connections ADD COLUMN refresh_lease_owner TEXT;

-- Tenants and their API keys. Portable SQL: the same migration runs on PostgreSQL and
-- on the SQLite file of embedded mode. Keys are stored only as peppered HMAC-SHA256 hashes.
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id  TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id     TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (tenant_id),
    key_hash   TEXT NOT NULL,
    label      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant_id);

//! Connections: a tenant's credentials for a connector. Non-secret fields are JSON; the
//! secret fields are one encrypted envelope (text), never plaintext.

use airlock_model::AuthType;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, findable, now_ms, parse_json};

#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub id: String,
    pub connector: String,
    pub name: String,
    pub auth_type: AuthType,
    /// Non-secret credential fields (user name, client id, header names, expiry).
    pub fields: Value,
    /// The encoded envelope of the secret fields, if the auth type has any.
    pub secret: Option<String>,
    /// The non-secret config (an object), as checked against the connector's
    /// `config_schema` when saved. Shared: every invocation hands it to the runtime.
    pub config: std::sync::Arc<Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What the API hands over to create a connection; the secret is already encrypted.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub id: String,
    pub connector: String,
    pub name: String,
    pub auth_type: AuthType,
    pub fields: Value,
    pub secret: Option<String>,
    pub config: Value,
}

/// What [`Store::update_connection`] writes; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct ConnectionChange {
    pub name: Option<String>,
    pub credential: Option<NewCredential>,
    pub config: Option<Value>,
}

/// A replacement credential: its auth type, clear fields and sealed envelope.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub auth_type: AuthType,
    pub fields: Value,
    pub secret: Option<String>,
}

const COLUMNS: &str =
    "id, connector, name, auth_type, fields, secret, config, created_at, updated_at";

fn connection(row: &AnyRow) -> Result<ConnectionRecord, StoreError> {
    let fields: String = row.try_get("fields")?;
    let config: String = row.try_get("config")?;
    Ok(ConnectionRecord {
        id: row.try_get("id")?,
        connector: row.try_get("connector")?,
        name: row.try_get("name")?,
        auth_type: row.try_get::<String, _>("auth_type")?.parse().map_err(
            |e: airlock_model::auth::UnknownAuthType| StoreError::Corrupt(e.to_string()),
        )?,
        fields: parse_json(&fields, "connection fields")?,
        secret: row.try_get("secret")?,
        config: std::sync::Arc::new(parse_json(&config, "connection config")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates a connection; a name already used in the tenant is a conflict.
    pub async fn create_connection(
        &self,
        tenant_id: &str,
        new: NewConnection,
    ) -> Result<ConnectionRecord, StoreError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO connections (tenant_id, id, connector, name, auth_type, fields, secret, config, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(tenant_id)
        .bind(&new.id)
        .bind(&new.connector)
        .bind(&new.name)
        .bind(new.auth_type.as_str())
        .bind(new.fields.to_string())
        .bind(new.secret.clone())
        .bind(new.config.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.commit_change(tx, tenant_id, &new.id).await?;
        Ok(ConnectionRecord {
            id: new.id,
            connector: new.connector,
            name: new.name,
            auth_type: new.auth_type,
            fields: new.fields,
            secret: new.secret,
            config: std::sync::Arc::new(new.config),
            created_at: now,
            updated_at: now,
        })
    }

    pub async fn list_connections(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM connections WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(connection).collect()
    }

    pub async fn connection(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<ConnectionRecord, StoreError> {
        findable(&[tenant_id, id])?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM connections WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        connection(&row)
    }

    /// Changes a connection's name, credential or config; what `change` leaves `None` is
    /// not written, so a refresh of an OAuth2 token racing a rename is not undone. A new
    /// credential also drops the refresh lease: a refresh of the old one that is in flight
    /// then finds it gone and does not write the old credential's tokens over the new one.
    /// A name already used in the tenant is a conflict.
    pub async fn update_connection(
        &self,
        tenant_id: &str,
        id: &str,
        change: ConnectionChange,
    ) -> Result<ConnectionRecord, StoreError> {
        findable(&[tenant_id, id])?;
        let mut columns: Vec<(&str, Option<String>)> = Vec::new();
        if let Some(name) = change.name {
            columns.push(("name", Some(name)));
        }
        let new_credential = change.credential.is_some();
        if let Some(credential) = change.credential {
            columns.push(("auth_type", Some(credential.auth_type.as_str().to_owned())));
            columns.push(("fields", Some(credential.fields.to_string())));
            columns.push(("secret", credential.secret));
        }
        if let Some(config) = change.config {
            columns.push(("config", Some(config.to_string())));
        }
        let mut sets = vec!["updated_at = $3".to_owned()];
        sets.extend(
            columns
                .iter()
                .enumerate()
                .map(|(i, (column, _))| format!("{column} = ${}", i + 4)),
        );
        if new_credential {
            sets.push("refresh_lease_until = NULL, refresh_lease_owner = NULL".to_owned());
        }
        let sql = format!(
            "UPDATE connections SET {} WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}",
            sets.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(tenant_id).bind(id).bind(now_ms());
        for (_, value) in columns {
            query = query.bind(value);
        }
        let mut tx = self.begin_write().await?;
        let row = query
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let record = connection(&row)?;
        self.commit_change(tx, tenant_id, id).await?;
        Ok(record)
    }

    pub async fn delete_connection(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        findable(&[tenant_id, id])?;
        let mut tx = self.begin_write().await?;
        // The tenant's row first, as `state_set` does: a guest write racing the delete either
        // lands before it (and is deleted below) or sees the connection gone.
        super::lock_tenant(&mut tx, tenant_id).await?;
        let done = sqlx::query("DELETE FROM connections WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // The connection's guest state goes with it: nothing else can reach that scope.
        sqlx::query("DELETE FROM connector_state WHERE tenant_id = $1 AND connection_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit_change(tx, tenant_id, id).await
    }
}

/// The OAuth2 refresh lease: a compare-and-swap on the connection row, so that of every
/// process sharing the database exactly one refreshes a connection's token at a time.
impl Store {
    /// Takes the refresh lease until `until` (unix ms) if nobody holds an unexpired one.
    /// Returns whether `owner` now holds it.
    pub async fn try_refresh_lease(
        &self,
        tenant_id: &str,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET refresh_lease_until = $4, refresh_lease_owner = $3 \
             WHERE tenant_id = $1 AND id = $2 \
             AND (refresh_lease_until IS NULL OR refresh_lease_until < $5)",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(owner)
        .bind(until)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Writes the refreshed envelope and clear fields and releases the lease, if `owner` still
    /// holds it. Returns whether it wrote.
    pub async fn finish_refresh(
        &self,
        tenant_id: &str,
        id: &str,
        owner: &str,
        fields: &Value,
        secret: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET fields = $4, secret = $5, updated_at = $6, \
             refresh_lease_until = NULL, refresh_lease_owner = NULL \
             WHERE tenant_id = $1 AND id = $2 AND refresh_lease_owner = $3",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(owner)
        .bind(fields.to_string())
        .bind(secret)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up without writing (the refresh failed).
    pub async fn release_refresh_lease(
        &self,
        tenant_id: &str,
        id: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET refresh_lease_until = NULL, refresh_lease_owner = NULL \
             WHERE tenant_id = $1 AND id = $2 AND refresh_lease_owner = $3",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

//! Typed ids, so a tenant id cannot be passed where a connection id is expected. Each is the
//! id's text as stored; cheap to clone.

use std::fmt;
use std::sync::Arc;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(id: impl AsRef<str>) -> Self {
                Self(Arc::from(id.as_ref()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self::new(id)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(Arc::from(id))
            }
        }
    };
}

id!(
    /// A tenant's id (`tenants.id`).
    TenantId
);
id!(
    /// A connection's id (`conn_…`), unique within its tenant.
    ConnectionId
);
id!(
    /// A connector's name, unique within its tenant.
    ConnectorName
);

/// Whose guest key-value state an invocation reads and writes. The guest never chooses it:
/// the host sets it from the invocation. Two connections of one connector are two scopes (each
/// keeps its own polling cursors); so are two tenants. An invocation without a connection has
/// the connector's connection-less scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateScope {
    pub tenant: TenantId,
    pub connector: ConnectorName,
    pub connection: Option<ConnectionId>,
}

impl StateScope {
    /// The connection column's value: the connection id, or the empty string for none (no
    /// connection id is empty, and a primary key column cannot be NULL).
    pub fn connection_key(&self) -> &str {
        self.connection.as_ref().map_or("", ConnectionId::as_str)
    }
}

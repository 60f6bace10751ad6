//! Airlock: a multi-tenant connector runtime.

//! What an org-scoped statement reaches on SQLite: the first three parameters every such
//! statement binds (who acts, as [`IN_ORG`](crate::orgs::IN_ORG)'s kind and id, and in which
//! org), and the meaning of a failed write. Shared by the tables whose rows belong to an org
//! (licensing, webhooks).

use bastion_store::{Scope, StoreError};
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments};

use crate::db_err;
use crate::orgs::actor;

/// The row is of org `?3`, or `?3` is NULL (the system, which reaches every org). Always
/// together with [`IN_ORG`](crate::orgs::IN_ORG), which decides whether the scope is inside
/// `?3`.
pub(crate) const OWN_ORG: &str = "(?3 IS NULL OR org_id = ?3)";

/// What a scope reaches, as the first three parameters of every statement: the kind (`?1`)
/// and user or key id (`?2`) that [`IN_ORG`](crate::orgs::IN_ORG) reads, and the org (`?3`;
/// `None` only for the system when no org is named).
#[derive(Clone, Copy)]
pub(crate) struct Reach<'a> {
    pub(crate) kind: &'static str,
    pub(crate) id: &'a str,
    pub(crate) org: Option<&'a str>,
}

impl<'a> Reach<'a> {
    /// The rows of whatever org the scope is inside (every org for the system); `None` for a
    /// scope inside no org (anonymous, a user outside any org).
    pub(crate) fn of(scope: &'a Scope) -> Option<Self> {
        match scope {
            Scope::System(_) => Some(Self {
                kind: "system",
                id: "",
                org: None,
            }),
            _ => {
                let org = scope.org_id()?;
                Self::within(scope, org)
            }
        }
    }

    /// The rows of `org_id`; `None` when the scope cannot be inside that org.
    pub(crate) fn within(scope: &'a Scope, org_id: &'a str) -> Option<Self> {
        actor(scope, org_id).map(|(kind, id)| Self {
            kind,
            id,
            org: Some(org_id),
        })
    }

    /// `sql` with the three reach parameters bound; the caller binds `?4` on.
    pub(crate) fn query<'q>(self, sql: &'q str) -> Query<'q, Sqlite, SqliteArguments<'q>>
    where
        'a: 'q,
    {
        sqlx::query(sql)
            .bind(self.kind)
            .bind(self.id)
            .bind(self.org)
    }
}

/// A write's error: a duplicate name, hash or id is `duplicate`; a parent that is not there
/// (or is of another org: the keys include the org) is `NotFound`.
pub(crate) fn write_err(e: sqlx::Error, duplicate: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(duplicate),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound,
        _ => db_err(e),
    }
}

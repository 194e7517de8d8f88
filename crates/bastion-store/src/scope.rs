/// Who is acting, for which organization. Every store call carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Work no user initiated (start-up, background jobs, audit chain, CLI administration),
    /// named so that each system path can be found and reviewed.
    System(&'static str),
    /// A request on behalf of an authenticated user, optionally inside one organization.
    User {
        user_id: String,
        org_id: Option<String>,
    },
    /// A request made with an organization's API key: always inside that organization.
    ApiKey {
        key_id: String,
        org_id: String,
        kind: KeyKind,
    },
    /// An unauthenticated request: sees no tenant rows.
    Anonymous,
}

/// The two kinds of API key (SPEC R6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `bst_sk_…`: an org's backend; the Admin permission set; never from a browser.
    Service,
    /// `bst_pk_…`: may ship in a client; only the reads the publishable set allows.
    Publishable,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Publishable => "publishable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "service" => Some(Self::Service),
            "publishable" => Some(Self::Publishable),
            _ => None,
        }
    }
}

impl Scope {
    pub fn is_system(&self) -> bool {
        matches!(self, Self::System(_))
    }

    /// The acting user, if a user acts.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Self::User { user_id, .. } => Some(user_id),
            _ => None,
        }
    }

    /// The organization the scope is inside, if any.
    pub fn org_id(&self) -> Option<&str> {
        match self {
            Self::User { org_id, .. } => org_id.as_deref(),
            Self::ApiKey { org_id, .. } => Some(org_id),
            _ => None,
        }
    }
}

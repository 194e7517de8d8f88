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
    /// An unauthenticated request: sees no tenant rows.
    Anonymous,
}

impl Scope {
    pub fn is_system(&self) -> bool {
        matches!(self, Self::System(_))
    }
}

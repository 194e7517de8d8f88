//! The six membership levels, `resource.action` permissions per level, and the rules for
//! changing a member's level.
//!
//! Levels are ordered (100 Super Admin … 20 Viewer). The permission map lists, for each level,
//! what it adds; a level holds its own permissions and those of every level below it, so a
//! higher level can never hold less. Nobody grants, changes or removes a level at or above
//! their own — Super Admins excepted — and the last Super Admin can be neither demoted nor
//! removed, so an organization always has an owner.

use std::collections::{BTreeMap, BTreeSet};

/// A membership level. The numbers are the stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Viewer = 20,
    Learner = 30,
    User = 40,
    Manager = 60,
    Admin = 80,
    SuperAdmin = 100,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Viewer,
        Level::Learner,
        Level::User,
        Level::Manager,
        Level::Admin,
        Level::SuperAdmin,
    ];

    pub fn value(self) -> i32 {
        self as i32
    }

    pub fn from_value(v: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|l| i64::from(l.value()) == v)
    }

    /// The name used in configuration and the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Learner => "learner",
            Self::User => "user",
            Self::Manager => "manager",
            Self::Admin => "admin",
            Self::SuperAdmin => "super_admin",
        }
    }

    /// A name (`admin`) or a number (`80`).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .or_else(|| s.parse().ok().and_then(Self::from_value))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("{0:?} is not a permission: use resource.action in lower case, e.g. members.invite")]
    BadPermission(String),
    #[error("{0:?} is not a level: use viewer, learner, user, manager, admin or super_admin")]
    BadLevel(String),
    /// The actor may not grant, change or remove this level.
    #[error("you cannot grant, change or remove a level at or above your own")]
    LevelTooHigh,
    #[error(
        "the last super admin cannot leave or be demoted; make another member super admin first"
    )]
    LastSuperAdmin,
}

/// A permission: `resource.action`, each part lower-case letters and underscores.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission(String);

impl Permission {
    pub fn parse(s: &str) -> Result<Self, RoleError> {
        let part = |p: &str| {
            !p.is_empty()
                && p.len() <= 40
                && p.starts_with(|c: char| c.is_ascii_lowercase())
                && p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        };
        match s.split_once('.') {
            Some((resource, action)) if part(resource) && part(action) => Ok(Self(s.to_owned())),
            _ => Err(RoleError::BadPermission(s.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What each level may do, cumulative upwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionMap {
    effective: BTreeMap<Level, BTreeSet<Permission>>,
    /// What a publishable API key may do (reads only; see [`PermissionMap::with_publishable`]).
    publishable: BTreeSet<Permission>,
}

impl PermissionMap {
    /// Builds the map from what each level adds (`level name -> permissions`). Every level must
    /// be listed (an empty list is fine), so a typo cannot silently drop one.
    pub fn from_additions(additions: &BTreeMap<String, Vec<String>>) -> Result<Self, RoleError> {
        let mut own: BTreeMap<Level, BTreeSet<Permission>> = BTreeMap::new();
        for (name, perms) in additions {
            let level = Level::ALL
                .into_iter()
                .find(|l| l.name() == name)
                .ok_or_else(|| RoleError::BadLevel(name.clone()))?;
            let set = perms
                .iter()
                .map(|p| Permission::parse(p))
                .collect::<Result<BTreeSet<_>, _>>()?;
            own.insert(level, set);
        }
        if let Some(missing) = Level::ALL.into_iter().find(|l| !own.contains_key(l)) {
            return Err(RoleError::BadLevel(format!("{} (missing)", missing.name())));
        }
        let mut effective = BTreeMap::new();
        let mut acc = BTreeSet::new();
        for level in Level::ALL {
            acc.extend(own.get(&level).into_iter().flatten().cloned());
            effective.insert(level, acc.clone());
        }
        Ok(Self {
            effective,
            publishable: BTreeSet::new(),
        })
    }

    /// Sets what publishable keys may do. Keys that ship inside an app or a web page must
    /// never write, so only `*.read` permissions are accepted.
    pub fn with_publishable(mut self, perms: &[String]) -> Result<Self, RoleError> {
        let set = perms
            .iter()
            .map(|p| Permission::parse(p))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if let Some(w) = set.iter().find(|p| !p.as_str().ends_with(".read")) {
            return Err(RoleError::BadPermission(format!(
                "{} (publishable keys may only read)",
                w.as_str()
            )));
        }
        self.publishable = set;
        Ok(self)
    }

    /// Everything a publishable key may do.
    pub fn publishable(&self) -> impl Iterator<Item = &Permission> {
        self.publishable.iter()
    }

    /// The decision for a publishable key (deny unless granted).
    pub fn publishable_allows(&self, permission: &str) -> bool {
        self.publishable.iter().any(|p| p.as_str() == permission)
    }

    /// `(level, permission)` for every effective grant, level 0 being the publishable set:
    /// the rows the database's `has_permission()` reads.
    pub fn rows(&self) -> Vec<(i32, String)> {
        let levels = self
            .effective
            .iter()
            .flat_map(|(l, set)| set.iter().map(|p| (l.value(), p.as_str().to_owned())));
        self.publishable
            .iter()
            .map(|p| (0, p.as_str().to_owned()))
            .chain(levels)
            .collect()
    }

    /// Everything `level` may do.
    pub fn effective(&self, level: Level) -> impl Iterator<Item = &Permission> {
        self.effective.get(&level).into_iter().flatten()
    }

    /// The authorization decision for one action (deny unless granted).
    pub fn allows(&self, level: Level, permission: &str) -> bool {
        self.effective
            .get(&level)
            .is_some_and(|set| set.iter().any(|p| p.as_str() == permission))
    }
}

/// Checks that `actor` may move a member from `from` (`None`: not a member yet, an invitation)
/// to `to` (`None`: removal). `super_admins` is how many Super Admins the organization has now;
/// `is_self` when the actor changes their own membership (leaving, or a self-demotion).
pub fn check_level_change(
    actor: Level,
    from: Option<Level>,
    to: Option<Level>,
    super_admins: usize,
    is_self: bool,
) -> Result<(), RoleError> {
    // A non-owner's refusal is about their own level, whatever else holds.
    if actor != Level::SuperAdmin {
        // Leaving is always allowed for non-owners: it gives nothing away.
        let leaving = is_self && to.is_none();
        let below = |l: Option<Level>| l.is_none_or(|l| l < actor);
        if !leaving && !(below(from) && below(to) && !(is_self && from.is_some())) {
            return Err(RoleError::LevelTooHigh);
        }
    }
    let loses_super_admin = from == Some(Level::SuperAdmin) && to != Some(Level::SuperAdmin);
    if loses_super_admin && super_admins <= 1 {
        return Err(RoleError::LastSuperAdmin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::*;

    fn map() -> PermissionMap {
        let mut m = BTreeMap::new();
        for l in Level::ALL {
            m.insert(l.name().to_owned(), Vec::new());
        }
        m.insert("viewer".into(), vec!["org.read".into()]);
        m.insert("admin".into(), vec!["members.invite".into()]);
        m.insert("super_admin".into(), vec!["org.delete".into()]);
        PermissionMap::from_additions(&m).unwrap()
    }

    #[test]
    fn r2_levels_are_ordered_and_parse_by_name_or_number() {
        assert!(SuperAdmin > Admin && Admin > Manager && Manager > User);
        assert!(User > Learner && Learner > Viewer);
        assert_eq!(Level::parse("admin"), Some(Admin));
        assert_eq!(Level::parse("80"), Some(Admin));
        assert_eq!(Level::parse("100"), Some(SuperAdmin));
        for bad in ["", "root", "90", "-20", "Admin"] {
            assert_eq!(Level::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn r3_permissions_are_resource_dot_action() {
        assert!(Permission::parse("members.invite").is_ok());
        assert!(Permission::parse("api_keys.create").is_ok());
        for bad in [
            "members",
            ".invite",
            "members.",
            "Members.invite",
            "a.b.c",
            "a.b-c",
            "1a.b",
        ] {
            assert!(Permission::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn r3_permissions_accumulate_upwards_and_deny_by_default() {
        let m = map();
        assert!(m.allows(Viewer, "org.read"));
        assert!(m.allows(SuperAdmin, "org.read") && m.allows(SuperAdmin, "members.invite"));
        assert!(!m.allows(Manager, "members.invite"));
        assert!(!m.allows(Admin, "org.delete"));
        assert!(!m.allows(SuperAdmin, "no.such"));
        assert_eq!(m.effective(Admin).count(), 2);
    }

    #[test]
    fn r6_publishable_keys_may_only_read_and_rows_carry_every_grant() {
        assert!(map().with_publishable(&["members.invite".into()]).is_err());
        let m = map().with_publishable(&["org.read".into()]).unwrap();
        assert!(m.publishable_allows("org.read"));
        assert!(!m.publishable_allows("members.read"));
        let rows = m.rows();
        assert!(rows.contains(&(0, "org.read".into())));
        assert!(rows.contains(&(100, "org.read".into())));
        assert!(rows.contains(&(80, "members.invite".into())));
        assert!(!rows.contains(&(60, "members.invite".into())));
    }

    #[test]
    fn r3_a_map_must_name_every_level_and_only_real_ones() {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        m.insert("viewer".into(), vec![]);
        assert!(matches!(
            PermissionMap::from_additions(&m),
            Err(RoleError::BadLevel(_))
        ));
        for l in Level::ALL {
            m.insert(l.name().to_owned(), vec![]);
        }
        m.insert("root".into(), vec![]);
        assert!(matches!(
            PermissionMap::from_additions(&m),
            Err(RoleError::BadLevel(_))
        ));
        m.remove("root");
        m.insert("admin".into(), vec!["Members.Invite".into()]);
        assert!(matches!(
            PermissionMap::from_additions(&m),
            Err(RoleError::BadPermission(_))
        ));
    }

    #[test]
    fn r2_nobody_grants_or_changes_a_level_at_or_above_their_own() {
        use RoleError::*;
        // A Manager (60) may invite and manage Users, not Managers or Admins.
        assert_eq!(
            check_level_change(Manager, None, Some(User), 1, false),
            Ok(())
        );
        assert_eq!(
            check_level_change(Manager, Some(User), Some(Viewer), 1, false),
            Ok(())
        );
        assert_eq!(
            check_level_change(Manager, Some(Viewer), None, 1, false),
            Ok(())
        );
        assert_eq!(
            check_level_change(Manager, None, Some(Admin), 1, false),
            Err(LevelTooHigh)
        );
        assert_eq!(
            check_level_change(Manager, None, Some(Manager), 1, false),
            Err(LevelTooHigh)
        );
        assert_eq!(
            check_level_change(Manager, Some(User), Some(Admin), 1, false),
            Err(LevelTooHigh)
        );
        assert_eq!(
            check_level_change(Manager, Some(Manager), Some(User), 1, false),
            Err(LevelTooHigh),
            "a peer"
        );
        assert_eq!(
            check_level_change(Manager, Some(Admin), None, 1, false),
            Err(LevelTooHigh),
            "a superior"
        );
        // Nobody promotes (or otherwise changes) themselves; anyone but the last owner may leave.
        assert_eq!(
            check_level_change(Admin, Some(Admin), Some(SuperAdmin), 1, true),
            Err(LevelTooHigh)
        );
        assert_eq!(
            check_level_change(Admin, Some(Admin), Some(User), 1, true),
            Err(LevelTooHigh)
        );
        assert_eq!(check_level_change(User, Some(User), None, 1, true), Ok(()));
        assert_eq!(
            check_level_change(Admin, Some(SuperAdmin), Some(User), 1, false),
            Err(LevelTooHigh),
            "an Admin is refused for their level, not told how many owners there are"
        );
        // Super Admins may do anything but orphan the organization.
        assert_eq!(
            check_level_change(SuperAdmin, Some(Admin), Some(SuperAdmin), 1, false),
            Ok(())
        );
        assert_eq!(
            check_level_change(SuperAdmin, Some(SuperAdmin), Some(Admin), 2, false),
            Ok(())
        );
        assert_eq!(
            check_level_change(SuperAdmin, Some(SuperAdmin), Some(Admin), 1, true),
            Err(LastSuperAdmin)
        );
        assert_eq!(
            check_level_change(SuperAdmin, Some(SuperAdmin), None, 1, true),
            Err(LastSuperAdmin)
        );
        assert_eq!(
            check_level_change(SuperAdmin, Some(SuperAdmin), None, 2, true),
            Ok(())
        );
    }
}

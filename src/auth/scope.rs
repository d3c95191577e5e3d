//! Actions and scopes as the Docker token protocol spells them.
//!
//! ```text
//! scope        ::= resourcetype ":" resourcename ":" action ("," action)*
//! resourcetype ::= "repository" | "registry"
//! resourcename ::= [hostname "/"] component ("/" component)*     (hostname may hold ":port")
//! action       ::= "pull" | "push" | "delete" | "*"
//! ```
//! The type ends at the first `:` and the actions start after the last one, so a name may carry
//! `host:port`. `registry:catalog:*` is the catalog.

use std::fmt;

/// A set of repository actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    /// Every repository action (`*`): pull, push, delete. Not `admin`, which a rule must name.
    pub const ALL: Actions = Actions(7);
    /// The admin API (`/v2/_berth/...`): granted by a rule for every repository (`*`) only.
    pub const ADMIN: Actions = Actions(8);

    const NAMES: [(Actions, &'static str); 4] =
        [(Actions::PULL, "pull"), (Actions::PUSH, "push"), (Actions::DELETE, "delete"), (Actions::ADMIN, "admin")];

    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// One action by name (`*` is all of them).
    pub fn named(name: &str) -> Option<Actions> {
        match name {
            "*" => Some(Actions::ALL),
            _ => Actions::NAMES.iter().find(|(_, n)| *n == name).map(|(a, _)| *a),
        }
    }

    /// `pull,push`: unknown names are left out (a client may ask for what Berth does not know).
    pub fn parse_lenient(list: &str) -> Actions {
        list.split(',').filter_map(|a| Actions::named(a.trim())).fold(Actions::NONE, Actions::union)
    }

    pub fn names(self) -> Vec<&'static str> {
        Actions::NAMES.iter().filter(|(a, _)| self.contains(*a)).map(|(_, n)| *n).collect()
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// What a scope is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Repository(String),
    Catalog,
    /// The admin API.
    Admin,
}

/// A resource and the actions wanted (or granted) on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub resource: Resource,
    pub actions: Actions,
}

impl Scope {
    pub fn repository(name: &str, actions: Actions) -> Scope {
        Scope { resource: Resource::Repository(name.to_owned()), actions }
    }

    pub fn catalog() -> Scope {
        Scope { resource: Resource::Catalog, actions: Actions::ALL }
    }

    pub fn admin() -> Scope {
        Scope { resource: Resource::Admin, actions: Actions::ADMIN }
    }

    /// One scope; `None` for a malformed one or a type Berth does not serve.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "repository" => Some(Scope::repository(name, Actions::parse_lenient(actions))),
            "registry" if name == "catalog" && actions.split(',').any(|a| a == "*") => Some(Scope::catalog()),
            "registry" if name == "admin" && actions.split(',').any(|a| a == "*" || a == "admin") => {
                Some(Scope::admin())
            }
            _ => None,
        }
    }

    /// Every scope in `scope` parameters: repeated, and each may hold several separated by spaces
    /// (the OAuth2 form).
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        values.into_iter().flat_map(str::split_whitespace).filter_map(Scope::parse).collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource {
            Resource::Repository(name) => write!(f, "repository:{name}:{}", self.actions),
            Resource::Catalog => f.write_str("registry:catalog:*"),
            Resource::Admin => f.write_str("registry:admin:*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_with_host_and_port_in_the_name() {
        let cases = [
            ("repository:team/app:pull", Scope::repository("team/app", Actions::PULL)),
            ("repository:team/app:pull,push", Scope::repository("team/app", Actions::PULL.union(Actions::PUSH))),
            ("repository:localhost:5000/app:push", Scope::repository("localhost:5000/app", Actions::PUSH)),
            ("repository:127.0.0.1:5000/a/b:*", Scope::repository("127.0.0.1:5000/a/b", Actions::ALL)),
            ("repository:app:pull,frobnicate", Scope::repository("app", Actions::PULL)),
            ("registry:catalog:*", Scope::catalog()),
        ];
        for (text, scope) in cases {
            assert_eq!(Scope::parse(text), Some(scope), "{text}");
        }
    }

    #[test]
    fn malformed_and_foreign_scopes_are_none() {
        for text in ["", "repository", "repository:app", "repository::pull", "plugin:x:pull", "registry:catalog:pull"] {
            assert_eq!(Scope::parse(text), None, "{text}");
        }
    }

    #[test]
    fn repeated_and_space_separated_scopes() {
        let scopes = Scope::parse_all(["repository:a:pull repository:b:push", "registry:catalog:*"]);
        assert_eq!(scopes.len(), 3);
        assert_eq!(scopes[1], Scope::repository("b", Actions::PUSH));
    }

    #[test]
    fn scopes_print_as_they_parse() {
        assert_eq!(Scope::repository("a/b", Actions::ALL).to_string(), "repository:a/b:pull,push,delete");
        assert_eq!(Scope::catalog().to_string(), "registry:catalog:*");
    }

    #[test]
    fn action_sets() {
        let pull_push = Actions::parse_lenient("push,pull");
        assert!(pull_push.contains(Actions::PULL) && !pull_push.contains(Actions::DELETE));
        assert_eq!(pull_push.intersect(Actions::PULL.union(Actions::DELETE)), Actions::PULL);
        assert!(Actions::NONE.is_empty());
        assert_eq!(Actions::parse_lenient("*"), Actions::ALL);
    }
}

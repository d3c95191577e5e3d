//! Event endpoints (the `events` variable): where notifications of what happens in the registry
//! are sent (`crate::registry::events`).
//!
//! One endpoint per entry, entries separated by newlines or `;`:
//! `<name> <http[s]://host[:port]/path> [format=distribution|cloudevents] [repositories=<glob>,...]
//! [actions=push,pull,delete,gc,mirror] [bearer=<token>] [header=<Name>:<value>]... [outbox=<n>]`.
//! - `format`: CNCF Distribution's envelope (`application/vnd.docker.distribution.events.v1+json`,
//!   the default) or CloudEvents 1.0 in structured mode, one event per request.
//! - `repositories`: the repositories whose events go there (default every one).
//! - `actions`: which events (default `push,delete,gc,mirror`: pulls are many, and opt-in).
//! - `bearer`, `header`: sent with every request (the variable is a secret).
//! - `outbox`: events kept for the endpoint while it cannot take them (default 10000); when full,
//!   the oldest are dropped and counted.

use crate::wire::glob::glob_match;
use crate::wire::name::RepoName;

/// What happened, as endpoints filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// A manifest pushed (with its tags).
    Push,
    /// A manifest pulled (GET).
    Pull,
    /// A manifest, a tag or a blob deleted by a client, or by retention.
    Delete,
    /// A blob removed by garbage collection.
    Gc,
    /// A manifest fetched from a mirror's upstream into the cache.
    Mirror,
}

impl Action {
    pub const ALL: [Action; 5] = [Action::Push, Action::Pull, Action::Delete, Action::Gc, Action::Mirror];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
            Action::Gc => "gc",
            Action::Mirror => "mirror",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Distribution,
    CloudEvents,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `[a-z0-9-]`, at most 32: names its outbox in the stores and its log lines.
    pub name: String,
    pub url: String,
    pub format: Format,
    pub repositories: Vec<String>,
    pub actions: Vec<Action>,
    pub headers: Vec<(String, String)>,
    pub outbox: u64,
}

impl Endpoint {
    /// Whether `action` on `repository` goes to this endpoint.
    pub fn wants(&self, action: Action, repository: &RepoName) -> bool {
        self.actions.contains(&action) && self.repositories.iter().any(|g| glob_match(g, repository.as_str()))
    }
}

pub const DEFAULT_OUTBOX: u64 = 10_000;
const MAX_OUTBOX: u64 = 1_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events(Vec<Endpoint>);

impl Events {
    pub fn parse(text: &str) -> Result<Events, String> {
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for (number, entry) in text.split(['\n', ';']).map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let at = |message: String| format!("entry {}: {message}", number + 1);
            let mut words = entry.split_whitespace();
            let name = words.next().expect("non-empty").to_owned();
            if name.is_empty()
                || name.len() > 32
                || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(at(format!("{name:?} is not an endpoint name (a-z, 0-9, -; at most 32)")));
            }
            if endpoints.iter().any(|e| e.name == name) {
                return Err(at(format!("endpoint {name:?} is named twice")));
            }
            let url = words.next().ok_or_else(|| at(format!("endpoint {name} has no URL")))?;
            let parsed = url::Url::parse(url).map_err(|e| at(format!("{url:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(at(format!("{url:?} is not an http:// or https:// URL")));
            }
            let mut endpoint = Endpoint {
                name,
                url: url.to_owned(),
                format: Format::Distribution,
                repositories: vec!["*".to_owned()],
                actions: vec![Action::Push, Action::Delete, Action::Gc, Action::Mirror],
                headers: Vec::new(),
                outbox: DEFAULT_OUTBOX,
            };
            for word in words {
                // Not quoted: a word may be part of a token.
                let (key, value) = word
                    .split_once('=')
                    .ok_or_else(|| at("a setting is not key=value (spaces end a setting)".to_owned()))?;
                match key {
                    "format" => {
                        endpoint.format = match value {
                            "distribution" => Format::Distribution,
                            "cloudevents" => Format::CloudEvents,
                            _ => return Err(at(format!("format={value:?} is not distribution or cloudevents"))),
                        }
                    }
                    "repositories" => {
                        endpoint.repositories = value.split(',').filter(|g| !g.is_empty()).map(str::to_owned).collect()
                    }
                    "actions" => {
                        endpoint.actions = value
                            .split(',')
                            .filter(|a| !a.is_empty())
                            .map(|a| {
                                Action::parse(a).ok_or_else(|| {
                                    at(format!("{a:?} is not an action (push, pull, delete, gc, mirror)"))
                                })
                            })
                            .collect::<Result<_, _>>()?
                    }
                    "bearer" => endpoint.headers.push(("authorization".to_owned(), format!("Bearer {value}"))),
                    "header" => {
                        let (header, text) = value
                            .split_once(':')
                            .filter(|(h, _)| http::HeaderName::from_bytes(h.as_bytes()).is_ok())
                            .filter(|(_, v)| http::HeaderValue::from_str(v).is_ok())
                            .ok_or_else(|| at("a header= is not <Name>:<value> (its value is not shown)".to_owned()))?;
                        endpoint.headers.push((header.to_ascii_lowercase(), text.to_owned()));
                    }
                    "outbox" => {
                        endpoint.outbox = value
                            .parse()
                            .ok()
                            .filter(|n| (1..=MAX_OUTBOX).contains(n))
                            .ok_or_else(|| at(format!("outbox={value:?} is not a count from 1 to {MAX_OUTBOX}")))?
                    }
                    _ => {
                        return Err(at(format!(
                            "unknown setting {key:?} (format, repositories, actions, bearer, header, outbox)"
                        )));
                    }
                }
            }
            endpoints.push(endpoint);
        }
        Ok(Events(endpoints))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some endpoint wants `action` at all (pulls are recorded only then).
    pub fn want(&self, action: Action) -> bool {
        self.0.iter().any(|e| e.actions.contains(&action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_their_settings_and_mistakes_are_refused_by_entry() {
        let events = Events::parse(
            "hooks https://hooks.example/registry bearer=s3cret actions=push,pull repositories=team-a/*\n\
             ce http://127.0.0.1:9000/ format=cloudevents header=X-Team:a outbox=5",
        )
        .unwrap();
        let all: Vec<&Endpoint> = events.iter().collect();
        assert_eq!(all[0].headers, [("authorization".to_owned(), "Bearer s3cret".to_owned())]);
        assert_eq!(all[0].actions, [Action::Push, Action::Pull]);
        let (team, other) = (RepoName::parse("team-a/app").unwrap(), RepoName::parse("team-b/app").unwrap());
        assert!(all[0].wants(Action::Push, &team) && !all[0].wants(Action::Push, &other));
        assert!(!all[0].wants(Action::Delete, &team));
        assert_eq!(all[1].format, Format::CloudEvents);
        assert_eq!(all[1].outbox, 5);
        assert!(all[1].wants(Action::Gc, &other) && !all[1].wants(Action::Pull, &other), "defaults: no pulls");
        assert!(events.want(Action::Pull));
        for (bad, says) in [
            ("Hooks http://a/", "not an endpoint name"),
            ("a", "has no URL"),
            ("a ftp://x/", "not an http"),
            ("a http://x/ format=xml", "format="),
            ("a http://x/ actions=push,poke", "\"poke\" is not an action"),
            ("a http://x/; a http://y/", "entry 2: endpoint \"a\" is named twice"),
            ("a http://x/ outbox=0", "outbox="),
            ("a http://x/ header=novalue", "header="),
            ("a http://x/ colour=red", "unknown setting"),
        ] {
            let err = Events::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}

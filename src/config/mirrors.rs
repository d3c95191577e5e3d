//! Mirrored upstream registries (the `mirror_upstreams` and `mirror_credentials` variables):
//! their settings and the naming of their local repositories (what the mirror does:
//! `crate::mirror`).

use crate::wire::errcode::RegistryError;
use crate::wire::glob::glob_match;
use crate::wire::name::RepoName;

/// A tag pulled through the mirror is asked about upstream again after this long, unless the
/// upstream's rule says otherwise.
pub const DEFAULT_TAG_TTL_SECS: u64 = 300;

/// One upstream registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The first component of the local repositories that mirror it (`docker.io`, `ghcr.io`).
    pub name: String,
    /// `http[s]://host[:port]`, without a trailing slash.
    pub origin: String,
    /// How long a tag resolved upstream is served without asking again.
    pub tag_ttl_secs: u64,
    /// `user`, `password` for the upstream's Basic auth or token endpoint.
    pub credentials: Option<(String, String)>,
    /// A blob GET the upstream redirects (to object storage) is redirected there for the client
    /// too, instead of being pulled through and cached: the edge mode, where a response cannot
    /// carry a large layer.
    pub pass_redirects: bool,
}

impl Upstream {
    /// The upstream's name for the repository (`docker.io`'s one-component names are under
    /// `library/`, as Docker resolves `alpine`).
    pub fn remote(&self, rest: &str) -> String {
        if self.name == "docker.io" && !rest.contains('/') { format!("library/{rest}") } else { rest.to_owned() }
    }
}

/// Every upstream, from the `mirror_upstreams` and `mirror_credentials` variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirrors {
    upstreams: Vec<Upstream>,
    /// The upstream for pulls of repositories that are neither here nor namespaced (its index),
    /// and the repository patterns it answers for (`default` alone: every name).
    default: Option<(usize, Vec<String>)>,
}

/// Where a mirrored repository's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub upstream: &'a Upstream,
    /// The repository's name upstream.
    pub remote: String,
}

impl Mirrors {
    /// `mirror_upstreams`: rules `<name> <http[s]://host[:port]> [tag_ttl=<age>]
    /// [redirects=pass|follow] [default[=<pattern>,...]]`,
    /// separated by newlines or `;`. `mirror_credentials` (a secret): `<name> <user>:<password>`,
    /// separated the same way.
    pub fn parse(upstreams: &str, credentials: &str) -> Result<Mirrors, String> {
        let mut mirrors = Mirrors::default();
        for rule in rules(upstreams) {
            let mut words = rule.split_whitespace();
            let name = words.next().expect("rules are not empty");
            check_name(name)?;
            if mirrors.upstreams.iter().any(|u| u.name == name) {
                return Err(format!("upstream {name} is named twice"));
            }
            let origin = words.next().ok_or_else(|| format!("upstream {name} has no URL"))?;
            let origin = parse_origin(origin).ok_or_else(|| {
                format!("upstream {name}: {origin:?} is not http(s)://host[:port] (no path, no query)")
            })?;
            let mut upstream = Upstream {
                name: name.to_owned(),
                origin,
                tag_ttl_secs: DEFAULT_TAG_TTL_SECS,
                credentials: None,
                pass_redirects: false,
            };
            for word in words {
                match word.split_once('=') {
                    Some(("tag_ttl", age)) => {
                        upstream.tag_ttl_secs = crate::config::retention::parse_age(age)
                            .ok_or_else(|| format!("upstream {name}: tag_ttl={age} is not an age like 300, 5m, 1h"))?;
                    }
                    Some(("redirects", "pass")) => upstream.pass_redirects = true,
                    Some(("redirects", "follow")) => upstream.pass_redirects = false,
                    None if word == "default" => mirrors.set_default(name, vec!["*".to_owned()])?,
                    Some(("default", list)) => {
                        let patterns: Vec<String> = list.split(',').map(str::to_owned).collect();
                        if patterns.iter().any(|p| p.is_empty() || p.starts_with('/') || p.ends_with('/')) {
                            return Err(format!(
                                "upstream {name}: default={list} is not a list of repository patterns like library/*"
                            ));
                        }
                        mirrors.set_default(name, patterns)?;
                    }
                    _ => {
                        return Err(format!(
                            "upstream {name}: unknown option {word:?} (tag_ttl=<age>, redirects=pass|follow, \
                             default[=<pattern>,...])"
                        ));
                    }
                }
            }
            mirrors.upstreams.push(upstream);
        }
        for rule in rules(credentials) {
            // The password is never quoted back: the message names the upstream only, and only a
            // first word that can be an upstream's name (an entry without one starts with the
            // secret itself).
            let (name, secret) = rule.split_once(char::is_whitespace).unwrap_or((rule, ""));
            let shown = if check_name(name).is_ok() { name } else { "an entry without an upstream name" };
            let (user, password) = secret
                .trim()
                .split_once(':')
                .filter(|(user, _)| !user.is_empty())
                .ok_or_else(|| format!("mirror_credentials for {shown}: expected <upstream> <user>:<password>"))?;
            let upstream = mirrors
                .upstreams
                .iter_mut()
                .find(|u| u.name == name)
                .ok_or_else(|| format!("mirror_credentials names {shown}, which is not in mirror_upstreams"))?;
            upstream.credentials = Some((user.to_owned(), password.to_owned()));
        }
        Ok(mirrors)
    }

    /// Every upstream, in the order configured.
    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.upstreams.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    pub fn named(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    fn set_default(&mut self, name: &str, patterns: Vec<String>) -> Result<(), String> {
        if self.default.is_some() {
            return Err(format!("upstream {name}: only one upstream can be the default"));
        }
        self.default = Some((self.upstreams.len(), patterns));
        Ok(())
    }

    /// The default upstream, if it answers for pulls of `name` (a repository that is not
    /// namespaced).
    pub fn default_for(&self, name: &RepoName) -> Option<&Upstream> {
        let (index, patterns) = self.default.as_ref()?;
        patterns.iter().any(|p| glob_match(p, name.as_str())).then(|| &self.upstreams[*index])
    }

    /// The upstream containerd means by `?ns=<namespace>`: the registry host it would have asked
    /// (`host[:port]` of an upstream's URL, `docker.io` for Docker Hub's registry host) or an
    /// upstream's own name.
    pub fn for_namespace(&self, ns: &str) -> Option<&Upstream> {
        let host = |u: &Upstream| u.origin.split_once("://").map_or(String::new(), |(_, host)| host.to_owned());
        self.named(ns).or_else(|| {
            self.upstreams.iter().find(|u| {
                let host = host(u);
                host.eq_ignore_ascii_case(ns) || (ns == "docker.io" && host == "registry-1.docker.io")
            })
        })
    }

    /// The upstream a local repository mirrors, if it is a mirrored one.
    pub fn target(&self, name: &RepoName) -> Option<Target<'_>> {
        let (first, rest) = name.as_str().split_once('/')?;
        let upstream = self.named(first)?;
        Some(Target { upstream, remote: upstream.remote(rest) })
    }

    /// The local repository for `name` of upstream `upstream`.
    pub fn local_name(upstream: &Upstream, name: &RepoName) -> Result<RepoName, RegistryError> {
        RepoName::parse(&format!("{}/{name}", upstream.name))
    }
}

fn rules(text: &str) -> impl Iterator<Item = &str> {
    text.split(['\n', ';']).map(str::trim).filter(|r| !r.is_empty() && !r.starts_with('#'))
}

/// An upstream's name becomes a repository's first component: lowercase letters, digits, `.`,
/// `-`, `_`, starting and ending with a letter or digit.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if valid && RepoName::parse(&format!("{name}/x")).is_ok() {
        Ok(())
    } else {
        Err(format!("upstream name {name:?} cannot be a repository's first component (lowercase, digits, . - _)"))
    }
}

fn parse_origin(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn upstreams_are_named_with_their_url_ttl_and_default() {
        let m = Mirrors::parse(
            "docker.io https://registry-1.docker.io tag_ttl=10m default; ghcr.io https://ghcr.io/\n# note\norigin http://127.0.0.1:5000 redirects=pass",
            "ghcr.io bot:p:a:ss",
        )
        .unwrap();
        let hub = m.named("docker.io").unwrap();
        assert_eq!((hub.origin.as_str(), hub.tag_ttl_secs), ("https://registry-1.docker.io", 600));
        assert_eq!(m.default_for(&name("corp/app")).unwrap().name, "docker.io", "default alone: every name");
        let ghcr = m.named("ghcr.io").unwrap();
        assert_eq!((ghcr.origin.as_str(), ghcr.tag_ttl_secs), ("https://ghcr.io", DEFAULT_TAG_TTL_SECS));
        assert_eq!(ghcr.credentials, Some(("bot".into(), "p:a:ss".into())));
        let origin = m.named("origin").unwrap();
        assert_eq!((origin.origin.as_str(), origin.pass_redirects), ("http://127.0.0.1:5000", true));
        assert!(!hub.pass_redirects);
    }

    #[test]
    fn a_mirrored_repository_is_one_whose_first_component_names_an_upstream() {
        let m = Mirrors::parse("docker.io https://registry-1.docker.io; ghcr.io https://ghcr.io", "").unwrap();
        let t = m.target(&name("docker.io/alpine")).unwrap();
        assert_eq!((t.upstream.name.as_str(), t.remote.as_str()), ("docker.io", "library/alpine"));
        assert_eq!(m.target(&name("docker.io/grafana/loki")).unwrap().remote, "grafana/loki");
        assert_eq!(m.target(&name("ghcr.io/org/app")).unwrap().remote, "org/app");
        assert_eq!(m.target(&name("ghcr.io/app")).unwrap().remote, "app", "library/ is Docker Hub's only");
        assert!(m.target(&name("team/app")).is_none());
        assert!(m.target(&name("docker.io")).is_none(), "the bare namespace is not a repository upstream");
    }

    #[test]
    fn the_default_upstream_answers_only_for_its_patterns() {
        let m = Mirrors::parse("hub https://registry-1.docker.io default=library/*,grafana/loki", "").unwrap();
        assert_eq!(m.default_for(&name("library/alpine")).unwrap().name, "hub");
        assert!(m.default_for(&name("grafana/loki")).is_some());
        assert!(m.default_for(&name("corp/app")).is_none(), "a name outside the patterns is never looked up");
        assert!(m.default_for(&name("grafana/tempo")).is_none());
    }

    #[test]
    fn ns_names_an_upstream_by_its_name_or_its_registry_host() {
        let m =
            Mirrors::parse("hub https://registry-1.docker.io; lab http://127.0.0.1:5001; ghcr.io https://ghcr.io", "")
                .unwrap();
        assert_eq!(m.for_namespace("docker.io").unwrap().name, "hub");
        assert_eq!(m.for_namespace("127.0.0.1:5001").unwrap().name, "lab", "containerd sends host:port");
        assert_eq!(m.for_namespace("lab").unwrap().name, "lab");
        assert_eq!(m.for_namespace("ghcr.io").unwrap().name, "ghcr.io");
        assert!(m.for_namespace("127.0.0.1:5002").is_none(), "another registry is no upstream of ours");
        assert!(m.for_namespace("quay.io").is_none());
    }

    #[test]
    fn bad_rules_name_what_is_wrong_without_quoting_passwords() {
        for (upstreams, credentials, expected) in [
            ("Docker.io https://x", "", "cannot be a repository's first component"),
            ("hub", "", "has no URL"),
            ("hub ftp://x", "", "is not http(s)://host[:port]"),
            ("hub https://x/v2", "", "is not http(s)://host[:port]"),
            ("hub https://x tag_ttl=soon", "", "tag_ttl=soon is not an age"),
            ("hub https://x default; lab https://y default", "", "only one upstream can be the default"),
            ("hub https://x; hub https://y", "", "named twice"),
            ("hub https://x fast", "", "unknown option"),
            ("hub https://x default=", "", "is not a list of repository patterns"),
            ("hub https://x default=library/*,", "", "is not a list of repository patterns"),
            ("hub https://x", "lab u:secretpw", "not in mirror_upstreams"),
            ("hub https://x", "hub secretpw", "expected <upstream> <user>:<password>"),
            ("hub https://x", "bot:secretpw", "an entry without an upstream name"),
            ("hub https://x", "bot:secretpw hub", "an entry without an upstream name"),
        ] {
            let err = Mirrors::parse(upstreams, credentials).unwrap_err();
            assert!(err.contains(expected), "{upstreams} / {credentials}: {err}");
            assert!(!err.contains("secretpw"), "{err}");
        }
    }
}

//! An upstream's `WWW-Authenticate` challenge and its token endpoint's answer (the Docker token
//! flow: <https://distribution.github.io/distribution/spec/auth/token/>).

/// What a 401 from an upstream asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// A token from `realm`, for `service` and `scope` (both optional).
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
    /// A password on every request.
    Basic,
}

impl Challenge {
    /// Parse a `WWW-Authenticate` value; `None` for a scheme Berth does not speak.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params);
        let get = |key: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone());
        Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
    }
}

/// `key="value", key=value, ...`; quoted values may hold commas (scopes of several actions:
/// `repository:a/b:pull,push`) and backslash escapes.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            return out;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_owned();
        }
        out.push((key.trim().to_owned(), value));
    }
}

/// A token endpoint's answer: the token and how long it lasts (60 s when it does not say, as
/// the token spec has it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expires_in: u64,
}

impl Token {
    pub fn parse(body: &[u8]) -> Option<Token> {
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: Answer = serde_json::from_slice(body).ok()?;
        let token = answer.token.or(answer.access_token).filter(|t| !t.is_empty())?;
        Some(Token { token, expires_in: answer.expires_in.unwrap_or(60).max(1) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_gives_realm_service_and_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
        let c = Challenge::parse("bearer realm=http://127.0.0.1:5000/token, service=berth");
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5000/token".into(),
                service: Some("berth".into()),
                scope: None
            })
        );
    }

    #[test]
    fn basic_is_basic_and_other_schemes_or_no_realm_are_none() {
        assert_eq!(Challenge::parse(r#"Basic realm="registry""#), Some(Challenge::Basic));
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse(r#"Bearer service="x""#), None);
    }

    #[test]
    fn a_token_answer_is_token_or_access_token_with_60_seconds_by_default() {
        assert_eq!(
            Token::parse(br#"{"token":"t","expires_in":300}"#),
            Some(Token { token: "t".into(), expires_in: 300 })
        );
        assert_eq!(Token::parse(br#"{"access_token":"a"}"#), Some(Token { token: "a".into(), expires_in: 60 }));
        assert_eq!(Token::parse(br#"{"token":""}"#), None);
        assert_eq!(Token::parse(b"<html>"), None);
    }
}

//! Quota rules (the `quotas` variable): `<repository-glob> <size>`, e.g. `team-a/* 10GiB` (what
//! they do: `crate::registry::quota`).

use crate::wire::digest::{Algorithm, Digest};
use crate::wire::glob::glob_match;
use crate::wire::name::RepoName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub pattern: String,
    pub limit: u64,
}

impl Quota {
    /// The namespace's key part: stable while the rule's glob is (its position may change).
    pub fn id(&self) -> String {
        Digest::of(Algorithm::Sha256, self.pattern.as_bytes()).hex()[..32].to_owned()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas(pub(crate) Vec<Quota>);

/// `10GiB`, `500 MiB`, `1.5G`, `2048` (bytes): binary units, with or without the `i` and `B`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim().to_ascii_lowercase());
    let number: f64 = number.parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let scale = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1u64,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let bytes = number * scale as f64;
    (bytes <= u64::MAX as f64 / 2.0).then_some(bytes as u64)
}

/// Bytes for people: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

impl Quotas {
    /// Rules separated by newlines or `;`; empty: no quota.
    pub fn parse(text: &str) -> Result<Quotas, String> {
        let mut quotas = Vec::new();
        for (number, entry) in text.split(['\n', ';']).map(str::trim).enumerate() {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let Some((pattern, size)) = entry.split_once(char::is_whitespace) else {
                return Err(format!("entry {}: expected <repository-glob> <size>, e.g. team-a/* 10GiB", number + 1));
            };
            let limit = parse_size(size)
                .ok_or_else(|| format!("entry {}: {:?} is not a size (e.g. 500MiB, 10GiB)", number + 1, size.trim()))?;
            quotas.push(Quota { pattern: pattern.to_owned(), limit });
        }
        Ok(Quotas(quotas))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Quota> {
        self.0.iter()
    }

    pub fn applying<'a>(&'a self, name: &RepoName) -> impl Iterator<Item = &'a Quota> + use<'a> {
        let name = name.as_str().to_owned();
        self.0.iter().filter(move |q| glob_match(&q.pattern, &name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size("500 MiB"), Some(500 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(parse_size("5 parsecs"), None);
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(12), "12 B");
    }

    #[test]
    fn rules_are_refused_by_number() {
        assert_eq!(Quotas::parse("").unwrap(), Quotas::default());
        assert!(Quotas::parse("team-a/*").unwrap_err().contains("entry 1"));
        assert!(Quotas::parse("a 1GiB; b lots").unwrap_err().contains("entry 2"));
    }
}

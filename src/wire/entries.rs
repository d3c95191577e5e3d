//! The syntax of list settings (users, policy rules): entries separated by newlines or `;`,
//! `#` starting a comment.

/// The entries of a list variable: split on newlines or `;`, comments and blanks dropped.
pub fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(['\n', ';']).map(|e| e.split('#').next().unwrap_or("").trim()).filter(|e| !e.is_empty())
}

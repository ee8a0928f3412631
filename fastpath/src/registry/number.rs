//! What the registry accepts as a telephone number: E.164, stored as its digits.

use fastpath_common::{RouteKey, normalize_number};

/// Why a string is not an E.164 number; the API shows this text to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error(
        "'{0}' is not an E.164 number: only digits, an optional leading '+', spaces, '-', '.', '(' and ')'"
    )]
    BadCharacter(String),
    #[error("'{0}' is not an E.164 number: 2 to 15 digits")]
    BadLength(String),
    #[error("'{0}' is not an E.164 number: it starts with a country code, never 0")]
    LeadingZero(String),
}

/// Validates `input` as E.164 and returns its digits without the `+` (the stored form).
/// Visual separators are allowed because people paste numbers as they see them.
pub fn parse_e164(input: &str) -> Result<String, NumberError> {
    let trimmed = input.trim();
    let body = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut digits = String::with_capacity(15);
    for c in body.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(NumberError::BadCharacter(input.to_owned())),
        }
    }
    if !(2..=15).contains(&digits.len()) {
        return Err(NumberError::BadLength(input.to_owned()));
    }
    if digits.starts_with('0') {
        return Err(NumberError::LeadingZero(input.to_owned()));
    }
    Ok(digits)
}

/// The `ROUTES` key of a stored number: the same normalizer the fast path uses, so a
/// dialed `+1 555…` and the stored `1555…` meet on one key.
pub fn route_key(digits: &str) -> Option<RouteKey> {
    normalize_number(digits.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164_with_separators() {
        assert_eq!(parse_e164("+1 (555) 010-0001").unwrap(), "15550100001");
        assert_eq!(parse_e164("442079460000").unwrap(), "442079460000");
    }

    #[test]
    fn rejects_what_is_not_e164() {
        assert!(matches!(
            parse_e164("alice"),
            Err(NumberError::BadCharacter(_))
        ));
        assert!(matches!(parse_e164("+1"), Err(NumberError::BadLength(_))));
        assert!(matches!(
            parse_e164("1234567890123456"),
            Err(NumberError::BadLength(_))
        ));
        assert!(matches!(
            parse_e164("0044207946"),
            Err(NumberError::LeadingZero(_))
        ));
        assert!(matches!(
            parse_e164("++15"),
            Err(NumberError::BadCharacter(_))
        ));
    }

    #[test]
    fn stored_digits_have_the_dialed_key() {
        assert_eq!(
            route_key("15550100001"),
            normalize_number(b"+1-555-010-0001").ok()
        );
    }
}

//! Verification codes: drawn from the OS CSPRNG, compared in constant time.

use subtle::ConstantTimeEq;

/// Digits in a code: 10^6 guesses against 5 attempts.
pub const DEFAULT_DIGITS: usize = 6;

/// A fresh code of `digits` decimal digits, uniform (rejection sampling: bytes ≥ 250
/// would make 0–5 likelier than 6–9).
pub fn generate(digits: usize) -> Result<String, getrandom::Error> {
    let mut code = String::with_capacity(digits);
    let mut buf = [0u8; 32];
    while code.len() < digits {
        getrandom::fill(&mut buf)?;
        for &b in buf.iter().filter(|&&b| b < 250) {
            if code.len() == digits {
                break;
            }
            code.push(char::from(b'0' + b % 10));
        }
    }
    Ok(code)
}

/// Whether `given` is `expected`, in time independent of where they differ. The length
/// is not secret (every code has the same), so a length mismatch may return early.
pub fn matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_digits_and_vary() {
        let codes: std::collections::HashSet<String> =
            (0..50).map(|_| generate(DEFAULT_DIGITS).unwrap()).collect();
        assert!(codes.len() > 45, "50 draws gave only {} codes", codes.len());
        for c in &codes {
            assert_eq!(c.len(), DEFAULT_DIGITS);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
        // Every digit shows up across many draws (a biased or constant generator would not).
        let all: String = (0..200).map(|_| generate(8).unwrap()).collect();
        for d in '0'..='9' {
            assert!(all.contains(d), "digit {d} never drawn");
        }
    }

    #[test]
    fn compare() {
        assert!(matches("123456", "123456"));
        assert!(!matches("123456", "123457"));
        assert!(!matches("123456", "12345"));
        assert!(!matches("123456", ""));
    }
}

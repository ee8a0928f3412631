//! Header values made of addresses and parameters (RFC 3261 §20.10, §25.1): the URI of a
//! name-addr or addr-spec, its header parameters (`;tag=…`), and comma-separated lists.
//! All read the value in place.

use super::{eq_fold, trim};

/// The elements of a comma-separated header value, each trimmed, with its offsets in
/// the value. Commas inside quoted strings and `<…>` are not separators (a URI in a
/// Contact or P-Asserted-Identity may carry commas in its parameters).
pub struct ListValues<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> ListValues<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Self { text, pos: 0 }
    }
}

impl<'a> Iterator for ListValues<'a> {
    /// (offset of the element in the value, the element trimmed, offset just past it).
    type Item = (usize, &'a [u8], usize);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let (mut quoted, mut angle) = (false, false);
        let mut end = self.text.len();
        let mut i = start;
        while i < self.text.len() {
            match self.text[i] {
                b'"' => quoted = !quoted,
                b'\\' if quoted => i += 1,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    end = i;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        self.pos = end + 1;
        let raw = &self.text[start..end];
        let value = trim(raw);
        let offset = start + (value.as_ptr() as usize - raw.as_ptr() as usize).min(raw.len());
        Some((offset, value, offset + value.len()))
    }
}

/// The elements of a comma-separated header value, trimmed (see [`ListValues`]).
pub fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    ListValues::new(value).map(|(_, element, _)| element)
}

/// The URI of a name-addr or addr-spec value: `"Bob" <sip:1@h>;tag=x` → `sip:1@h`.
/// `None` when there is none (empty, or a `<` or quote left open).
pub fn uri_of(value: &[u8]) -> Option<&[u8]> {
    let rest = skip_display_name(value)?;
    let uri = match memchr::memchr(b'<', rest) {
        Some(open) => {
            let inner = &rest[open + 1..];
            trim(&inner[..memchr::memchr(b'>', inner)?])
        }
        // An addr-spec's own parameters are header parameters (§20.10).
        None => trim(rest.split(|&c| c == b';').next().unwrap_or_default()),
    };
    (!uri.is_empty()).then_some(uri)
}

/// The value of header parameter `name` of a name-addr or addr-spec value (`tag` of
/// `<sip:1@h;x=y>;tag=t`); `Some(b"")` for a parameter without a value. Parameters
/// inside the `<>` belong to the URI and are not looked at.
pub fn param_of<'a>(value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    params_after_address(value)
        .split(|&c| c == b';')
        .skip(1)
        .find_map(|param| {
            // RFC 3261 §25.1: EQUAL is SWS "=" SWS, so `tag = x` is `tag=x`.
            let (key, value) = match memchr::memchr(b'=', param) {
                Some(eq) => (&param[..eq], trim(&param[eq + 1..])),
                None => (param, &b""[..]),
            };
            eq_fold(trim(key), name).then_some(value)
        })
}

/// The `tag` parameter of a From or To value; empty when there is none.
pub fn tag_of(value: &[u8]) -> &[u8] {
    param_of(value, b"tag").unwrap_or_default()
}

/// The part of a name-addr or addr-spec value after the address (`;tag=x;…`), or empty.
fn params_after_address(value: &[u8]) -> &[u8] {
    let Some(rest) = skip_display_name(value) else {
        return b"";
    };
    let after = match memchr::memchr(b'<', rest) {
        Some(open) => memchr::memchr(b'>', &rest[open..]).map(|close| open + close + 1),
        None => memchr::memchr(b';', rest),
    };
    after.map_or(b"", |at| &rest[at..])
}

/// Skips a quoted display name, which may itself hold `<`, `>`, `;` or escaped quotes;
/// `None` when the quote is never closed.
fn skip_display_name(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    let Some(quoted) = value.strip_prefix(b"\"") else {
        return Some(value);
    };
    let mut i = 0;
    while i < quoted.len() {
        match quoted[i] {
            b'\\' => i += 1,
            b'"' => return Some(&quoted[i + 1..]),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_of_name_addrs_and_addr_specs() {
        assert_eq!(
            uri_of(br#""Bob <x>; y" <sip:1@h;user=phone>;tag=t"#),
            Some(&b"sip:1@h;user=phone"[..])
        );
        assert_eq!(uri_of(b"Bob <tel:+1>"), Some(&b"tel:+1"[..]));
        assert_eq!(uri_of(b"sip:1@h;tag=x"), Some(&b"sip:1@h"[..]));
        for none in [&b""[..], b"<>", b"<sip:1@h", br#""open <sip:1@h>"#] {
            assert_eq!(uri_of(none), None, "{:?}", String::from_utf8_lossy(none));
        }
    }

    #[test]
    fn tags_are_header_parameters_only() {
        assert_eq!(tag_of(b"<sip:1@h>;tag=t"), b"t");
        assert_eq!(tag_of(b"sip:1@h;tag=t"), b"t", "addr-spec");
        assert_eq!(tag_of(b"<sip:1@h;tag=uri>"), b"", "a URI parameter");
        assert_eq!(tag_of(br#""a>;tag=no" <sip:1@h>;TAG=t"#), b"t");
        assert_eq!(tag_of(br#"<sip:1@h>;x="a>";tag=t"#), b"t");
        assert_eq!(param_of(b"<sip:1@h>;lr", b"lr"), Some(&b""[..]));
        assert_eq!(param_of(b"<sip:1@h>;lr", b"tag"), None);
    }

    #[test]
    fn equal_may_have_white_space_around_it() {
        // RFC 3261 §25.1 `EQUAL = SWS "=" SWS`: the old proxy reader missed these tags and
        // would have added a second one to a To it answered.
        assert_eq!(tag_of(b"<sip:1@h> ; tag = t1 "), b"t1");
        assert_eq!(tag_of(b"<sip:1@h>;tag=\r\n t1"), b"t1", "folded");
    }

    #[test]
    fn lists_split_outside_quotes_and_brackets() {
        let list: Vec<&[u8]> = split_list(br#""a, \"b" <sip:1@h;x=1,2>, <tel:+2> ,"#).collect();
        assert_eq!(list, [&br#""a, \"b" <sip:1@h;x=1,2>"#[..], b"<tel:+2>"]);
        let offsets: Vec<_> = ListValues::new(b" a , b").collect();
        assert_eq!(offsets, [(1, &b"a"[..], 2), (5, &b"b"[..], 6)]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_values_never_panic(value in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let _ = (uri_of(&value), tag_of(&value), param_of(&value, b"x"));
            for element in split_list(&value) {
                let _ = uri_of(element);
            }
        }
    }
}

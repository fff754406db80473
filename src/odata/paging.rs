//! Server-driven paging: page sizes, the opaque `$skiptoken` and `@odata.nextLink`.
//!
//! A `$skiptoken` is base64url JSON of the last returned row's sort-key values and id (the
//! keyset cursor) plus a hash binding it to the tenant and the query (path, `$filter`,
//! `$orderby`, `$search`): a token replayed with another query or tenant is refused (400), so it
//! can never skip into the wrong result set. Any instance can serve the next page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::QueryOptions;
use crate::error::{GraphError, GraphResult};
use crate::storage::query::Param;

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 999;

/// FNV-1a: stable across processes and versions (unlike `DefaultHasher`), which a token that
/// any instance may decode needs.
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// What a `$skiptoken` is bound to.
pub fn binding(tenant: &str, path: &str, options: &QueryOptions) -> u64 {
    let get = |n: &str| {
        options
            .options
            .iter()
            .find(|(k, _)| k == n)
            .map_or("", |(_, v)| v.as_str())
    };
    fn lower(s: &str) -> String {
        s.to_ascii_lowercase()
    }
    fnv1a(&[
        tenant,
        &lower(path),
        get("filter"),
        get("orderby"),
        get("search"),
    ])
}

#[derive(Serialize, Deserialize)]
struct Token {
    /// Sort-key values of the last row returned.
    k: Vec<Param>,
    /// Its id.
    i: String,
    /// The query binding.
    h: String,
}

/// The `h` of a token: the query binding and the cursor together, so that an edited cursor
/// is refused like a token of another query (a checksum against tampering, not a secret: a
/// cursor only ever positions the caller in its own tenant's result set).
fn seal(keys: &[Param], last_id: &str, binding: u64) -> String {
    let keys = serde_json::to_string(keys).unwrap_or_default();
    format!(
        "{:016x}",
        fnv1a(&[&format!("{binding:016x}"), &keys, last_id])
    )
}

pub fn encode(keys: Vec<Param>, last_id: String, binding: u64) -> String {
    let token = Token {
        h: seal(&keys, &last_id, binding),
        k: keys,
        i: last_id,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// The error for a `$skiptoken` that is malformed, edited, or issued for another query or
/// tenant.
pub fn invalid_token() -> GraphError {
    GraphError::bad_request(
        "The $skiptoken is not valid for this request: use the @odata.nextLink exactly as returned, with the same query and tenant.",
    )
}

/// Decodes a token and checks it belongs to this query and tenant and was not edited.
pub fn decode(token: &str, binding: u64) -> GraphResult<(Vec<Param>, String)> {
    let invalid = invalid_token;
    if token.len() > 8192 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let t: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if t.k.len() > 8 || t.i.len() > 64 || t.h != seal(&t.k, &t.i, binding) {
        return Err(invalid());
    }
    Ok((t.k, t.i))
}

/// The page size of a request: `$top`, else `Prefer: odata.maxpagesize`, else the default.
/// Returns the size and whether the preference was applied.
pub fn page_size(top: Option<u32>, headers: &HeaderMap, default: u32) -> (u32, Option<u32>) {
    if let Some(top) = top {
        return (top.min(MAX_PAGE_SIZE), None);
    }
    let preferred = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("odata.maxpagesize")
                .then(|| v.trim().parse::<u32>().ok())
                .flatten()
        });
    match preferred {
        Some(n) if n > 0 => {
            let n = n.min(MAX_PAGE_SIZE);
            (n, Some(n))
        }
        _ => (default.clamp(1, MAX_PAGE_SIZE), None),
    }
}

/// `@odata.nextLink`: the request's URL on the public base with every option kept except
/// `$skip` (already applied) and the old `$skiptoken`, plus the new token.
pub fn next_link(base: &str, path: &str, options: &QueryOptions, token: &str) -> String {
    // Percent-encode what would break a query value; keep OData's readable `$`, `'`, `,`, `(`.
    const VALUE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'&')
        .add(b'+')
        .add(b'<')
        .add(b'>')
        .add(b'=')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'|')
        .add(b'\\')
        .add(b'^');
    let mut parts: Vec<String> = options
        .options
        .iter()
        .filter(|(name, _)| name != "skip" && name != "skiptoken")
        .map(|(name, value)| {
            format!(
                "${name}={}",
                percent_encoding::utf8_percent_encode(value, VALUE)
            )
        })
        .collect();
    parts.push(format!("$skiptoken={token}"));
    format!("{base}{path}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_binding() {
        let q = QueryOptions::parse(Some("$filter=priority%20gt%201&$top=2")).unwrap();
        let b = binding("t1", "/beta/officeConfiguration/clientConfigurations", &q);
        let token = encode(
            vec![Param::Int(3), Param::Text("x".into())],
            "id-9".into(),
            b,
        );
        assert_eq!(
            decode(&token, b).unwrap(),
            (vec![Param::Int(3), Param::Text("x".into())], "id-9".into())
        );
        // Another tenant or another filter: refused.
        assert!(
            decode(
                &token,
                binding("t2", "/beta/officeConfiguration/clientConfigurations", &q)
            )
            .is_err()
        );
        let other = QueryOptions::parse(Some("$filter=priority%20gt%202")).unwrap();
        assert!(
            decode(
                &token,
                binding(
                    "t1",
                    "/beta/officeConfiguration/clientConfigurations",
                    &other
                )
            )
            .is_err()
        );
        assert!(decode("garbage!", b).is_err());
        // An edited cursor with the binding left intact: refused too.
        let mut json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap();
        json["k"] = serde_json::json!([4, "x"]);
        let edited = URL_SAFE_NO_PAD.encode(json.to_string());
        assert!(decode(&edited, b).is_err());
    }

    #[test]
    fn page_size_rules() {
        let mut h = HeaderMap::new();
        assert_eq!(page_size(None, &h, 100), (100, None));
        assert_eq!(page_size(Some(5), &h, 100), (5, None));
        h.insert(
            "prefer",
            "return=minimal, odata.maxpagesize=7".parse().unwrap(),
        );
        assert_eq!(page_size(None, &h, 100), (7, Some(7)));
        h.insert("prefer", "odata.maxpagesize=5000".parse().unwrap());
        assert_eq!(page_size(None, &h, 100), (999, Some(999)));
    }

    #[test]
    fn next_link_keeps_options_but_skip() {
        let q =
            QueryOptions::parse(Some("$filter=a%20eq%20'x'&$skip=3&top=2&$skiptoken=old")).unwrap();
        let link = next_link("https://h", "/beta/p", &q, "NEW");
        assert_eq!(
            link,
            "https://h/beta/p?$filter=a%20eq%20'x'&$top=2&$skiptoken=NEW"
        );
    }
}

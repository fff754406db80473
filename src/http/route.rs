//! Parses a request path into the Graph operation target it names. Graph matches segments
//! case-insensitively, accepts keys as `/{id}` or `('{id}')`, and serves bound actions both
//! unqualified and namespace-qualified; all of that is decided here, once.

use http::Method;
use percent_encoding::percent_decode_str;
use uuid::Uuid;

use crate::auth::Access;
use crate::error::{GraphError, GraphResult};
use crate::model::input::parse_guid;
use crate::model::{ConfigurationKind, PayloadKind};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    ServiceRoot,
    Metadata,
    Batch,
    OfficeConfiguration,
    /// The collection, optionally cast to one derived type.
    ClientConfigurations {
        cast: Option<ConfigurationKind>,
    },
    ClientConfigurationsCount {
        cast: Option<ConfigurationKind>,
    },
    UpdatePriorities,
    /// One configuration, optionally through a cast segment (404 if it is another type).
    ClientConfiguration {
        id: Uuid,
        cast: Option<ConfigurationKind>,
    },
    Payload {
        id: Uuid,
        kind: PayloadKind,
    },
    Assign(Uuid),
    Assignments(Uuid),
    AssignmentsCount(Uuid),
    Assignment {
        configuration_id: Uuid,
        id: Uuid,
    },
}

impl Target {
    /// The methods this target answers, as sent in `Allow` on a 405.
    pub fn allow(&self) -> &'static str {
        match self {
            Self::ServiceRoot
            | Self::Metadata
            | Self::ClientConfigurationsCount { .. }
            | Self::AssignmentsCount(_) => "GET",
            Self::Batch | Self::UpdatePriorities | Self::Assign(_) => "POST",
            Self::OfficeConfiguration => "GET, PATCH",
            Self::ClientConfigurations { cast: None } | Self::Assignments(_) => "GET, POST",
            // A cast collection is read-only (create with @odata.type on the collection).
            Self::ClientConfigurations { cast: Some(_) } => "GET",
            Self::ClientConfiguration { .. } | Self::Assignment { .. } => "GET, PATCH, DELETE",
            Self::Payload { .. } => "GET, PUT",
        }
    }

    pub fn allows(&self, method: &Method) -> bool {
        self.allow().split(", ").any(|m| m == method.as_str())
    }

    /// The permission the operation needs (api-spec.md §3, DESIGN.md §2). `None`: public.
    pub fn access(&self, method: &Method) -> Option<Access> {
        let read = *method == Method::GET;
        match self {
            Self::ServiceRoot | Self::Metadata => None,
            // Each sub-request of a batch is authorised on its own.
            Self::Batch => Some(Access::Read),
            Self::OfficeConfiguration if read => Some(Access::DelegatedRead),
            Self::OfficeConfiguration => Some(Access::DelegatedWrite),
            _ if read => Some(Access::Read),
            _ => Some(Access::Write),
        }
    }
}

fn segment_err(seg: &str) -> GraphError {
    let shown: String = seg.chars().take(100).collect();
    GraphError::UnknownSegment(shown)
}

fn not_found(what: &str, raw: &str) -> GraphError {
    let shown: String = raw.chars().take(100).collect();
    GraphError::NotFound(format!("No {what} with id '{shown}' exists."))
}

/// A key segment: a GUID, optionally quoted. Anything else cannot exist: 404.
fn key(raw: &str, what: &str) -> GraphResult<Uuid> {
    let unquoted = raw
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(raw);
    parse_guid(unquoted).ok_or_else(|| not_found(what, raw))
}

/// Splits `name('key')` / `name(key)` into the name and the key.
fn split_key(seg: &str) -> (&str, Option<&str>) {
    match seg.find('(') {
        Some(i) if seg.ends_with(')') => (&seg[..i], Some(&seg[i + 1..seg.len() - 1])),
        _ => (seg, None),
    }
}

/// A type-cast segment (`microsoft.graph.windowsOfficeClientConfiguration`): `Some(None)` for
/// the base type, `Some(Some(kind))` for a derived type, `None` if the segment is no cast.
fn configuration_cast(seg: &str) -> Option<Option<ConfigurationKind>> {
    let bare = seg
        .strip_prefix("microsoft.graph.")
        .or_else(|| seg.strip_prefix("graph."))?;
    if bare.eq_ignore_ascii_case("officeClientConfiguration") {
        return Some(None);
    }
    ConfigurationKind::ALL
        .into_iter()
        .find(|k| k.type_name().eq_ignore_ascii_case(bare))
        .map(Some)
}

fn is(seg: &str, name: &str) -> bool {
    seg.eq_ignore_ascii_case(name)
}

/// An action segment, unqualified or qualified with the Graph namespace (or the Intune
/// backend namespace the docs leak for updatePriorities).
fn is_action(seg: &str, name: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    let bare = lower
        .strip_prefix("microsoft.graph.")
        .or_else(|| lower.strip_prefix("graph."))
        .or_else(|| lower.strip_prefix("microsoft.management.services.api."))
        .unwrap_or(&lower);
    bare == name.to_ascii_lowercase()
}

pub fn parse(path: &str) -> GraphResult<Target> {
    let mut segs = Vec::new();
    for raw in path.trim_start_matches('/').split('/') {
        let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| {
            GraphError::bad_request("The request URL is not valid UTF-8 after percent-decoding.")
        })?;
        segs.push(decoded.into_owned());
    }
    // A trailing slash names the same resource.
    if segs.len() > 1 && segs.last().is_some_and(String::is_empty) {
        segs.pop();
    }
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (version, rest) = segs.split_first().ok_or_else(|| segment_err(""))?;
    if !is(version, "beta") {
        if is(version, "v1.0") {
            return Err(segment_err(rest.first().copied().unwrap_or_default()));
        }
        return Err(GraphError::NotFound(format!(
            "Invalid version: {}",
            version
                .chars()
                .take(40)
                .collect::<String>()
                .to_ascii_lowercase()
        )));
    }
    match rest {
        [] | [""] => return Ok(Target::ServiceRoot),
        [s] if is(s, "$metadata") => return Ok(Target::Metadata),
        [s] if is(s, "$batch") => return Ok(Target::Batch),
        _ => {}
    }
    let (first, rest) = rest.split_first().ok_or_else(|| segment_err(""))?;
    if !is(first, "officeConfiguration") {
        return Err(segment_err(first));
    }
    let Some((second, rest)) = rest.split_first() else {
        return Ok(Target::OfficeConfiguration);
    };
    let (name, inline_key) = split_key(second);
    if !is(name, "clientConfigurations") {
        return Err(segment_err(second));
    }
    // The configuration key, from `clientConfigurations('{id}')` or the next segment.
    let (config_key, rest): (&str, &[&str]) = match (inline_key, rest) {
        (Some(k), rest) => (k, rest),
        (None, []) => return Ok(Target::ClientConfigurations { cast: None }),
        (None, [s]) if is(s, "$count") => {
            return Ok(Target::ClientConfigurationsCount { cast: None });
        }
        (None, [s, rest @ ..]) if configuration_cast(s).is_some() => {
            let cast = configuration_cast(s).flatten();
            return match rest {
                [] => Ok(Target::ClientConfigurations { cast }),
                [c] if is(c, "$count") => Ok(Target::ClientConfigurationsCount { cast }),
                [other, ..] => Err(segment_err(other)),
            };
        }
        (None, [s]) if is_action(s, "updatePriorities") => return Ok(Target::UpdatePriorities),
        (None, [k, rest @ ..]) => (k, rest),
    };
    let config = key(config_key, "officeClientConfiguration")?;
    let Some((third, rest)) = rest.split_first() else {
        return Ok(Target::ClientConfiguration {
            id: config,
            cast: None,
        });
    };
    if !is_action(third, "assign")
        && let Some(cast) = configuration_cast(third)
    {
        return match rest {
            [] => Ok(Target::ClientConfiguration { id: config, cast }),
            [other, ..] => Err(segment_err(other)),
        };
    }
    let payload = |kind| -> GraphResult<Target> {
        match rest {
            [] => Ok(Target::Payload { id: config, kind }),
            [v] if is(v, "$value") => Ok(Target::Payload { id: config, kind }),
            [s, ..] => Err(segment_err(s)),
        }
    };
    if is(third, "policyPayload") {
        return payload(PayloadKind::Policy);
    }
    if is(third, "userPreferencePayload") {
        return payload(PayloadKind::UserPreference);
    }
    if is_action(third, "assign") {
        return match rest {
            [] => Ok(Target::Assign(config)),
            [s, ..] => Err(segment_err(s)),
        };
    }
    let (name, inline_key) = split_key(third);
    if !is(name, "assignments") {
        return Err(segment_err(third));
    }
    let (assignment_key, rest): (&str, &[&str]) = match (inline_key, rest) {
        (Some(k), rest) => (k, rest),
        (None, []) => return Ok(Target::Assignments(config)),
        (None, [s]) if is(s, "$count") => return Ok(Target::AssignmentsCount(config)),
        (None, [k, rest @ ..]) => (k, rest),
    };
    let id = key(assignment_key, "officeClientConfigurationAssignment")?;
    match rest {
        [] => Ok(Target::Assignment {
            configuration_id: config,
            id,
        }),
        [s, ..] => Err(segment_err(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b5b9e6a-1f5c-4c1e-9a51-2f3c5a7b9d01";

    fn id() -> Uuid {
        Uuid::parse_str(ID).unwrap()
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse("/beta/officeConfiguration").unwrap(),
            Target::OfficeConfiguration
        );
        assert_eq!(
            parse("/BETA/OfficeConfiguration/").unwrap(),
            Target::OfficeConfiguration
        );
        assert_eq!(
            parse("/beta/officeConfiguration/clientConfigurations").unwrap(),
            Target::ClientConfigurations { cast: None }
        );
        assert_eq!(
            parse(&format!(
                "/beta/officeConfiguration/clientConfigurations/{ID}"
            ))
            .unwrap(),
            Target::ClientConfiguration {
                id: id(),
                cast: None
            }
        );
        assert_eq!(
            parse(&format!(
                "/beta/officeConfiguration/clientConfigurations('{ID}')"
            ))
            .unwrap(),
            Target::ClientConfiguration {
                id: id(),
                cast: None
            }
        );
        assert_eq!(
            parse(&format!(
                "/beta/officeConfiguration/clientConfigurations/{}",
                ID.to_uppercase()
            ))
            .unwrap(),
            Target::ClientConfiguration {
                id: id(),
                cast: None
            }
        );
        for action in [
            "updatePriorities",
            "microsoft.graph.updatePriorities",
            "microsoft.management.services.api.updatePriorities",
        ] {
            assert_eq!(
                parse(&format!(
                    "/beta/officeConfiguration/clientConfigurations/{action}"
                ))
                .unwrap(),
                Target::UpdatePriorities
            );
        }
        for action in ["assign", "microsoft.graph.assign"] {
            assert_eq!(
                parse(&format!(
                    "/beta/officeConfiguration/clientConfigurations/{ID}/{action}"
                ))
                .unwrap(),
                Target::Assign(id())
            );
        }
        assert_eq!(
            parse(&format!(
                "/beta/officeConfiguration/clientConfigurations/{ID}/policyPayload/$value"
            ))
            .unwrap(),
            Target::Payload {
                id: id(),
                kind: PayloadKind::Policy
            }
        );
        assert_eq!(
            parse(&format!(
                "/beta/officeConfiguration/clientConfigurations/{ID}/assignments/{ID}"
            ))
            .unwrap(),
            Target::Assignment {
                configuration_id: id(),
                id: id()
            }
        );
    }

    #[test]
    fn system_segments_match_case_insensitively() {
        assert_eq!(parse("/beta/$METADATA").unwrap(), Target::Metadata);
        assert_eq!(parse("/Beta/$Batch").unwrap(), Target::Batch);
    }

    #[test]
    fn cast_segments() {
        let sec = Some(ConfigurationKind::WindowsSecurity);
        assert_eq!(
            parse("/beta/officeConfiguration/clientConfigurations/microsoft.graph.windowsOfficeClientSecurityConfiguration").unwrap(),
            Target::ClientConfigurations { cast: sec }
        );
        assert_eq!(
            parse("/beta/officeConfiguration/clientConfigurations/microsoft.graph.windowsOfficeClientSecurityConfiguration/$count").unwrap(),
            Target::ClientConfigurationsCount { cast: sec }
        );
        assert_eq!(
            parse(&format!("/beta/officeConfiguration/clientConfigurations/{ID}/microsoft.graph.windowsOfficeClientSecurityConfiguration")).unwrap(),
            Target::ClientConfiguration { id: id(), cast: sec }
        );
        assert!(matches!(
            parse("/beta/officeConfiguration/clientConfigurations/microsoft.graph.user"),
            Err(GraphError::NotFound(_))
        ));
    }

    #[test]
    fn bad_paths() {
        assert!(matches!(parse("/beta/foo"), Err(GraphError::UnknownSegment(s)) if s == "foo"));
        assert!(
            matches!(parse("/v1.0/officeConfiguration"), Err(GraphError::UnknownSegment(s)) if s == "officeConfiguration")
        );
        assert!(matches!(
            parse("/v2/officeConfiguration"),
            Err(GraphError::NotFound(_))
        ));
        for bad in ["x'y", "%00", "..%2F..%2Fetc", "'abc'"] {
            assert!(
                matches!(
                    parse(&format!(
                        "/beta/officeConfiguration/clientConfigurations/{bad}"
                    )),
                    Err(GraphError::NotFound(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse("/beta/officeConfiguration/clientConfigurations/%FF"),
            Err(GraphError::BadRequest(_))
        ));
    }
}

//! The hot single-entity reads — the singleton and a configuration by id, without `$select` or
//! `$expand` — serialised straight into the response body.
//!
//! The general path (`to_json`, then `handlers::entity`) builds a `serde_json` map per entity
//! (an allocation per key and value, a hash per insert), copies it behind `@odata.context` and
//! formats it through `fmt::Write`; for these reads that was most of the request's cost. What
//! is written here is byte for byte what that path writes: the tests below compare the two on
//! entities with every property set, so a property added to `to_json` and not here fails them.

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::model::{
    ClientConfiguration, OfficeConfiguration, UserCheckinSummary, etag, format_datetime,
};

/// An entity with the properties of its wire form (in `to_json`'s order).
pub(super) trait WireEntity {
    fn write_properties<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error>;
}

/// The response body of a single-entity read: `@odata.context`, then the entity.
pub(super) fn entity_body(context: &str, value: &impl WireEntity) -> serde_json::Result<Vec<u8>> {
    struct Body<'a, T> {
        context: &'a str,
        value: &'a T,
    }
    impl<T: WireEntity> Serialize for Body<'_, T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(None)?;
            map.serialize_entry("@odata.context", self.context)?;
            self.value.write_properties(&mut map)?;
            map.end()
        }
    }
    // Sized for the usual document, so the buffer seldom grows.
    let mut out = Vec::with_capacity(1024);
    serde_json::to_writer(&mut out, &Body { context, value })?;
    Ok(out)
}

/// A stream property inline: base64 text or `null`, encoded as it is written.
struct Payload<'a>(Option<&'a [u8]>);

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(bytes) => s.collect_str(&Base64Display::new(bytes, &STANDARD)),
            None => s.serialize_none(),
        }
    }
}

/// A uuid as `Uuid::to_string` writes it, without the allocation.
struct Id(uuid::Uuid);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            self.0
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        )
    }
}

struct Summary(UserCheckinSummary);

impl Serialize for Summary {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("@odata.type", "#microsoft.graph.officeUserCheckinSummary")?;
        map.serialize_entry("succeededUserCount", &self.0.succeeded_user_count)?;
        map.serialize_entry("failedUserCount", &self.0.failed_user_count)?;
        map.end()
    }
}

impl WireEntity for ClientConfiguration {
    fn write_properties<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        m.serialize_entry("@odata.type", self.kind.odata_type())?;
        m.serialize_entry("@odata.etag", &etag(self.version))?;
        m.serialize_entry("id", &Id(self.id))?;
        m.serialize_entry(
            "userPreferencePayload",
            &Payload(self.user_preference_payload.as_deref()),
        )?;
        m.serialize_entry("policyPayload", &Payload(self.policy_payload.as_deref()))?;
        m.serialize_entry("description", &self.description)?;
        m.serialize_entry("displayName", &self.display_name)?;
        m.serialize_entry(
            "lastModifiedDateTime",
            &format_datetime(self.last_modified_date_time),
        )?;
        m.serialize_entry("priority", &self.priority)?;
        m.serialize_entry("userCheckinSummary", &Summary(self.user_checkin_summary))?;
        m.serialize_entry("checkinStatuses", &self.checkin_statuses)
    }
}

impl WireEntity for OfficeConfiguration {
    fn write_properties<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        m.serialize_entry("@odata.type", "#microsoft.graph.officeConfiguration")?;
        m.serialize_entry("@odata.etag", &etag(self.version))?;
        m.serialize_entry("id", &Id(self.id))?;
        m.serialize_entry("tenantCheckinStatuses", &self.tenant_checkin_statuses)?;
        m.serialize_entry(
            "tenantUserCheckinSummary",
            &Summary(self.tenant_user_checkin_summary),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::model::CheckinStatus;
    use serde_json::{Map, Value};
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
    use crate::model::ConfigurationKind;

    const CONTEXT: &str = "https://graph.example/beta/$metadata#officeConfiguration";

    /// What `handlers::entity` writes for a `to_json` map.
    fn general_path(body: Map<String, Value>) -> Vec<u8> {
        let mut out = Map::new();
        out.insert("@odata.context".into(), CONTEXT.into());
        out.extend(body);
        Value::Object(out).to_string().into_bytes()
    }

    fn statuses() -> Vec<CheckinStatus> {
        vec![
            CheckinStatus {
                user_id: "u-1".into(),
                user_principal_name: Some("ada@contoso.example".into()),
                device_name: Some("PC \"1\"\n\u{e9}\u{1}".into()),
                device_platform: Some("Windows".into()),
                device_platform_version: Some("10.0.22631".into()),
                was_successful: false,
                checkin_date_time: datetime!(2026-11-23 17:25:55.813732 UTC),
                error_message: Some("0x80070005 \\ access denied".into()),
                applied_policies: vec![Some(Uuid::new_v4().to_string()), None],
                last_task_name: Some("sync".into()),
            },
            CheckinStatus {
                user_id: "u-2".into(),
                user_principal_name: None,
                device_name: None,
                device_platform: None,
                device_platform_version: None,
                was_successful: true,
                checkin_date_time: datetime!(1999-01-02 03:04:05 +02:00),
                error_message: None,
                applied_policies: vec![],
                last_task_name: None,
            },
        ]
    }

    fn configuration() -> ClientConfiguration {
        ClientConfiguration {
            id: Uuid::new_v4(),
            kind: ConfigurationKind::WindowsSecurity,
            display_name: Some("Finance \"baseline\" \u{2028}".into()),
            description: Some("</script> \t".into()),
            priority: -7,
            policy_payload: Some(br#"{"BlockMacros":true}"#.to_vec()),
            // Lengths 0..=2 mod 3, so every base64 padding case shows.
            user_preference_payload: Some(vec![0xff, 0x00, 0xfe, 0x01]),
            checkin_statuses: statuses(),
            user_checkin_summary: UserCheckinSummary {
                succeeded_user_count: 3,
                failed_user_count: i32::MAX,
            },
            checkin_override: false,
            last_modified_date_time: datetime!(2026-11-23 17:25:55.8137320 UTC),
            version: 42,
        }
    }

    #[test]
    fn configurations_render_as_the_general_path_writes_them() {
        let mut c = configuration();
        for payload in [vec![], vec![1], vec![1, 2], vec![1, 2, 3]] {
            c.user_preference_payload = Some(payload);
            assert_eq!(
                String::from_utf8(entity_body(CONTEXT, &c).unwrap()).unwrap(),
                String::from_utf8(general_path(c.to_json())).unwrap()
            );
        }
        let bare = ClientConfiguration {
            kind: ConfigurationKind::Windows,
            display_name: None,
            description: None,
            policy_payload: None,
            user_preference_payload: None,
            checkin_statuses: vec![],
            user_checkin_summary: UserCheckinSummary::default(),
            ..configuration()
        };
        assert_eq!(
            entity_body(CONTEXT, &bare).unwrap(),
            general_path(bare.to_json())
        );
    }

    #[test]
    fn the_singleton_renders_as_the_general_path_writes_it() {
        let mut o = OfficeConfiguration {
            id: Uuid::new_v4(),
            tenant_checkin_statuses: statuses(),
            tenant_user_checkin_summary: UserCheckinSummary {
                succeeded_user_count: 1,
                failed_user_count: 2,
            },
            checkin_override: true,
            version: i64::MAX,
        };
        assert_eq!(
            String::from_utf8(entity_body(CONTEXT, &o).unwrap()).unwrap(),
            String::from_utf8(general_path(o.to_json())).unwrap()
        );
        o.tenant_checkin_statuses.clear();
        assert_eq!(entity_body(CONTEXT, &o).unwrap(), general_path(o.to_json()));
    }
}

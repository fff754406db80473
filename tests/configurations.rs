mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn create_read_list_update_delete() {
    let s = Server::start().await;
    let t = s.token("contoso");
    let created = s
        .create(&t, json!({"@odata.type": WINDOWS, "displayName": "Baseline", "description": "d", "policyPayload": b64(r#"{"a":1}"#)}))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["@odata.type"], WINDOWS);
    assert_eq!(created["priority"], 1);
    assert_eq!(created["policyPayload"], b64(r#"{"a":1}"#));
    assert!(
        created["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/beta/$metadata#officeConfiguration/clientConfigurations/$entity")
    );

    let got = s
        .get(
            &format!("/officeConfiguration/clientConfigurations/{id}"),
            &t,
        )
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), created);
    assert_eq!(got.header("etag"), created["@odata.etag"].as_str());

    let r = s
        .patch(
            &format!("/officeConfiguration/clientConfigurations/{id}"),
            &t,
            json!({"displayName": "Renamed"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let got = s
        .get(
            &format!("/officeConfiguration/clientConfigurations/{id}"),
            &t,
        )
        .await
        .json();
    assert_eq!(got["displayName"], "Renamed");
    assert_ne!(got["@odata.etag"], created["@odata.etag"]);

    let list = s
        .get("/officeConfiguration/clientConfigurations", &t)
        .await
        .json();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);

    assert_eq!(
        s.delete(
            &format!("/officeConfiguration/clientConfigurations/{id}"),
            &t
        )
        .await
        .status,
        204
    );
    s.get(
        &format!("/officeConfiguration/clientConfigurations/{id}"),
        &t,
    )
    .await
    .assert_error(404, "ResourceNotFound");
    s.delete(
        &format!("/officeConfiguration/clientConfigurations/{id}"),
        &t,
    )
    .await
    .assert_error(404, "ResourceNotFound");
}

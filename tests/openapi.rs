//! The OpenAPI document: served without a token at `/openapi/graph.json`, generated from the
//! same model as `$metadata`.

#[macro_use]
mod common;

use common::*;

async fn openapi_document_is_served_without_a_token() {
    let s = Server::start().await;
    let r = Server::finish(s.client.get(format!("{}/openapi/graph.json", s.base))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.0.3");
    assert_eq!(doc["servers"][0]["url"], s.url(""));
    let paths = &doc["paths"];
    for (path, method) in [
        ("/officeConfiguration", "patch"),
        ("/officeConfiguration/clientConfigurations", "post"),
        ("/officeConfiguration/clientConfigurations/{id}", "delete"),
        (
            "/officeConfiguration/clientConfigurations/{id}/assign",
            "post",
        ),
        (
            "/officeConfiguration/clientConfigurations/updatePriorities",
            "post",
        ),
        (
            "/officeConfiguration/clientConfigurations/{id}/assignments/{assignmentId}",
            "get",
        ),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path}");
    }
    let discriminator = &doc["components"]["schemas"]["microsoft.graph.officeClientConfiguration"]
        ["allOf"][1]["discriminator"];
    assert_eq!(discriminator["propertyName"], "@odata.type");
    assert_eq!(
        discriminator["mapping"]["#microsoft.graph.windowsOfficeClientSecurityConfiguration"],
        "#/components/schemas/microsoft.graph.windowsOfficeClientSecurityConfiguration"
    );
    assert!(r.header("request-id").is_some());
}

engine_tests!(openapi_document_is_served_without_a_token);

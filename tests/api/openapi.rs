//! The OpenAPI document: snapshot-tested, and checked for the conventions every operation follows.

use serde_json::Value;

#[test]
fn openapi_document_snapshot() {
    let doc = serde_json::to_value(api::openapi::build()).unwrap();
    insta::assert_json_snapshot!("openapi", doc);
}

#[test]
fn every_operation_documents_its_errors_and_security() {
    let doc = serde_json::to_value(api::openapi::build()).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut count = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            count += 1;
            let responses = op["responses"].as_object().unwrap();
            let secured = op
                .get("security")
                .is_some_and(|s| !s.as_array().unwrap().is_empty());
            // Everything under /v1 but signing up and in.
            let must_be_secured = path.starts_with("/v1/")
                && (!path.starts_with("/v1/auth/") || path == "/v1/auth/logout");
            assert_eq!(secured, must_be_secured, "{method} {path} security");
            if secured {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            }
            if path != "/healthz" {
                assert!(
                    responses.contains_key("500") && responses.contains_key("503"),
                    "{method} {path}"
                );
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = response["content"]
                        .as_object()
                        .unwrap_or_else(|| panic!("{method} {path} {status}"));
                    assert!(
                        content.contains_key("application/problem+json"),
                        "{method} {path} {status}: {content:?}"
                    );
                }
            }
            assert!(
                op["summary"].is_string() || op["description"].is_string(),
                "{method} {path} undocumented"
            );
        }
    }
    assert_eq!(count, 34);
    let _: &Value = &doc;
}

//! The REST API's OpenAPI 3.1 document, derived from the handlers' `#[utoipa::path]`
//! attributes and the very types they deserialize and serialize, so it cannot drift from
//! the code. Served at `GET /v1/openapi.json` (no key: it holds no secret), written to
//! `docs/openapi.json` by `farmhand-control openapi` (a test fails when the committed file
//! differs), validated and fuzzed in CI (`.ci/run`).
//!
//! What the attributes do not say is added here once for every operation ([`Conventions`]):
//! the error answers every call can give (401/403 for a keyed call, 408/413 for one with a
//! body, 422 for one with a body or parameters, 429, 500, 503), all with the one error body.

use super::webhooks;
use super::{
    agents, allocations, audit, enroll, health, keys, modems, probes, quality, seller, seller_data,
    tokens,
};
use crate::events::ModemEvent;
use crate::events::{AgentEvent, AllocationEvent, EventType, HealthEvent, IdentityEvent};
use crate::http_error::ErrorBody;
use crate::webhooks::Envelope;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

/// The document (see the module docs).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Farmhand control plane",
        description = "The marketplace REST API: enrollment, keys, agents, modems, allocations, \
                       webhooks and the audit log. Prose and examples: docs/api.md.",
    ),
    paths(
        health::healthz, health::readyz, health::metrics, serve,
        enroll::enroll,
        tokens::create, tokens::list, tokens::revoke,
        keys::create, keys::list, keys::revoke,
        agents::list, agents::show, agents::approve, agents::revoke,
        seller_data::export, seller_data::erase, seller::boxes, seller::usage,
        audit::list,
        modems::list, modems::rotate, modems::resolve, quality::agent, quality::rank,
        allocations::create, allocations::list, allocations::show, allocations::usage,
        allocations::renew, allocations::replace, allocations::release, probes::show,
        webhooks::create, webhooks::list, webhooks::show, webhooks::remove,
        webhooks::deliveries,
    ),
    components(schemas(
        ErrorBody, Envelope, AllocationEvent, ModemEvent, IdentityEvent, AgentEvent, HealthEvent,
        crate::fleet::IdentityChange,
    )),
    modifiers(&Conventions),
    tags(
        (name = "health", description = "Liveness and readiness (no key)."),
        (name = "enrollment", description = "Agents joining with a one-time token."),
        (name = "admin", description = "Operators: tokens, keys, agents, sellers' data, audit."),
        (name = "modems", description = "The fleet's modems."),
        (name = "sellers", description = "A seller's own boxes (seller keys)."),
        (name = "allocations", description = "Selling ports: create (idempotent by order_id), \
                  read, renew, replace, release, usage."),
        (name = "webhooks", description = "Event endpoints and their delivery logs."),
    ),
)]
pub struct ApiDoc;

/// The document as pretty JSON, ending with a newline (what `docs/openapi.json` holds).
pub fn json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// 200 the OpenAPI document.
#[utoipa::path(get, operation_id = "openapi", path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "This document (OpenAPI 3.1).", body = Object)))]
pub async fn serve() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json(),
    )
}

/// Security schemes and the error answers common to every operation.
struct Conventions;

fn error(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        ErrorBody::name(),
                    ))))
                    .build(),
            )
            .build(),
    )
}

/// How a receiver checks a delivery (the same words as docs/integrating.md).
const SIGNATURE: &str = "`t=<unix seconds>,v1=<hex>`: `v1` is HMAC-SHA256, keyed with the \
    endpoint's secret (`whsec_…`), of `<t>.<raw body>`, in lowercase hex. Compare in constant \
    time, refuse a `t` more than 5 minutes away from now, and de-duplicate on the body's `id` \
    (a delivery is retried until a 2xx answer or `[webhooks] max_age_s`).";

/// The OpenAPI 3.1 `webhooks`: one POST per event type, its body the signed envelope with
/// that type's object.
fn webhooks() -> utoipa::openapi::path::Paths {
    use utoipa::openapi::path::{
        HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
    };
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
    use utoipa::openapi::{Ref, Required};
    let mut paths = PathsBuilder::new();
    for kind in EventType::ALL {
        let body = AllOfBuilder::new()
            .item(Ref::from_schema_name("Envelope"))
            .item(
                ObjectBuilder::new()
                    .property(
                        "type",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .enum_values(Some([kind.as_str()])),
                    )
                    .property("object", Ref::from_schema_name(kind.object_schema())),
            );
        let signature = ParameterBuilder::new()
            .name("Farmhand-Signature")
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(SIGNATURE))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)));
        let operation = OperationBuilder::new()
            .operation_id(Some(format!("on_{}", kind.as_str().replace('.', "_"))))
            .summary(Some(format!("`{}`", kind.as_str())))
            .description(Some(
                "Sent to every endpoint subscribed to this type (a marketplace's endpoint only \
                 for its own allocations). Answer 2xx once it is stored; anything else is \
                 retried with backoff.",
            ))
            .parameter(signature)
            .request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(body)).build(),
                    )
                    .required(Some(Required::True))
                    .build(),
            ))
            .response(
                "2XX",
                ResponseBuilder::new()
                    .description("Received; not sent again.")
                    .build(),
            );
        paths = paths.path(kind.as_str(), PathItem::new(HttpMethod::Post, operation));
    }
    paths.build()
}

impl Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        doc.webhooks = Some(webhooks());
        let components = doc.components.get_or_insert_with(Default::default);
        let _ = ErrorBody::schema();
        for (name, role) in [
            (
                "admin",
                "An admin API key: operators (keys, tokens, agents, audit, every tenant).",
            ),
            (
                "marketplace",
                "A marketplace API key: one tenant's modems, allocations (with buyer \
                 credentials) and webhooks.",
            ),
            (
                "seller",
                "A seller API key: its own boxes (the agents enrolled with tokens of its \
                 label) and what is sold on them, without buyer data; nothing else.",
            ),
        ] {
            let mut scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
            scheme.description = Some(role.to_string());
            components
                .security_schemes
                .insert(name.to_string(), RefOr::T(SecurityScheme::Http(scheme)));
        }
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let keyed = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let takes_input = operation.request_body.is_some()
                    || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut operation.responses.responses;
                let mut add = |code: &str, description: &str| {
                    responses
                        .entry(code.to_string())
                        .or_insert_with(|| error(description));
                };
                if keyed {
                    add(
                        "401",
                        "No key, or an unknown, expired or revoked one (`unauthorized`).",
                    );
                    add("403", "The key's role may not do this (`forbidden`).");
                }
                if takes_input {
                    add(
                        "422",
                        "The request is not acceptable as sent (`invalid_request`).",
                    );
                }
                if operation.request_body.is_some() {
                    add(
                        "413",
                        "The body is over `max_body_bytes` (`payload_too_large`).",
                    );
                    add(
                        "408",
                        "The body did not arrive in time (`request_timeout`).",
                    );
                }
                add("429", "Too many failed authentications from this client (`rate_limited`; `Retry-After`).");
                add(
                    "500",
                    "Internal error (`internal`); the plane's log says more.",
                );
                add(
                    "503",
                    "The plane is shutting down or overloaded (`Retry-After`).",
                );
            }
        }
    }
}

//! The HTTP surface: Wix's REST paths, the emulator's own, webhook intake, health.
//!
//! Handlers only move bytes: bodies are parsed and answers built by `inbox-wix`, state
//! changes go through the [`Engine`] on Tokio's blocking pool (a write waits for an
//! fsync). Every error, including a body that is too large or not JSON, an unknown path
//! and a failed auth, is answered in Wix's error shape.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use inbox_core::catalog::CatalogKind;
use inbox_core::{
    Caller, Command, ContactId, Event, Inbox, MemberId, ParticipantId, SiteId, VisitorId, WixUserId,
};
use inbox_store::{ReadError, StoredEvent};
use inbox_wix::WixError;
use inbox_wix::catalog;
use inbox_wix::error::{FieldViolation, Rule};
use inbox_wix::rest::{
    self, ContactResponse, CreateContactRequest, GetConversationResponse,
    GetOrCreateConversationRequest, GetOrCreateConversationResponse, MergeContactsRequest,
    SendMessageRequest, SendMessageResponse, parse_body,
};
use inbox_wix::webhook::WebhookVerifier;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::now;
use crate::engine::{Engine, WriteError};

/// Largest request body; larger ones get 413.
pub const MAX_BODY: usize = 1 << 20;

/// What every handler shares.
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// API key -> its site. Empty: any key, loopback only.
    pub keys: HashMap<String, SiteId>,
    /// The public half of the webhook signing key, as PEM.
    pub public_pem: String,
    /// Verifies deliveries from the real Wix, if `--wix-public-key` was given.
    pub wix_verifier: Option<WebhookVerifier>,
    /// Issues and checks the apps' access tokens.
    pub tokens: crate::oauth::TokenIssuer,
}

/// The router. Every Wix path is also served under the prefix Wix's SDK gives it when
/// pointed at a host of its own (`createClient({host: {apiBaseUrl}})`): `/crm/inbox/v2/...`
/// and `/_api/contacts/v4/...`.
pub fn router(state: Arc<AppState>) -> Router {
    let inbox: Router<Arc<AppState>> = Router::new()
        .route("/inbox/v2/conversations", post(get_or_create_conversation))
        .route("/inbox/v2/conversations/{id}", get(get_conversation))
        .route("/inbox/v2/messages", get(list_messages).post(send_message));
    let contacts: Router<Arc<AppState>> = Router::new()
        .route(
            "/contacts/v4/contacts",
            post(create_contact).get(list_contacts),
        )
        .route("/contacts/v4/contacts/query", post(query_contacts))
        .route("/contacts/v4/contacts/facets", get(list_facets))
        .route("/contacts/v4/contacts/facets/query", post(query_facets))
        .route(
            "/contacts/v4/contacts/{id}",
            get(get_contact)
                .patch(update_contact)
                .delete(delete_contact),
        )
        .route(
            "/contacts/v4/contacts/{id}/labels",
            post(label_contact).delete(unlabel_contact),
        )
        .route("/contacts/v4/contacts/{id}/merge", post(merge_contacts))
        .route(
            "/contacts/v4/contacts/{id}/preview-merge",
            post(preview_merge),
        )
        .route(
            "/contacts/v4/bulk/contacts/delete",
            post(|s, h, b| bulk(rest::BulkKind::Delete, s, h, b)),
        )
        .route(
            "/contacts/v4/bulk/contacts/update",
            post(|s, h, b| bulk(rest::BulkKind::Update, s, h, b)),
        )
        .route(
            "/contacts/v4/bulk/contacts/add-remove-labels",
            post(|s, h, b| bulk(rest::BulkKind::Labels, s, h, b)),
        );
    let contacts = catalog_routes(contacts, "/contacts/v4/labels", CatalogKind::Label);
    let contacts = catalog_routes(
        contacts,
        "/contacts/v4/extended-fields",
        CatalogKind::ExtendedField,
    );
    Router::new()
        .route("/healthz", get(healthz))
        .merge(inbox.clone())
        .nest("/crm", inbox)
        .merge(contacts.clone())
        .nest("/_api", contacts)
        .route("/oauth2/token", post(oauth_token))
        .route("/members/v1/members", post(register_member))
        .route(
            "/emulator/v1/visitors/{id}/identify",
            post(identify_visitor),
        )
        .route("/emulator/v1/interactions", post(interact))
        .route(
            "/emulator/v1/conversations/{id}/revert-merge",
            post(revert_merge),
        )
        .route(
            "/emulator/v1/conversations/{id}/revert-merge/preview",
            post(preview_revert),
        )
        .route(
            "/emulator/v1/conversations/{id}/merge-history",
            get(merge_history),
        )
        .route("/emulator/v1/public-key", get(public_key))
        .route("/webhooks/wix", post(wix_webhook))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// An error answer in Wix's shape.
pub struct ApiError(pub WixError);

impl From<WixError> for ApiError {
    fn from(e: WixError) -> Self {
        ApiError(e)
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        ApiError(match e {
            WriteError::Rejected(r) => r.into(),
            WriteError::ReadOnlyReplica(_) => WixError::forbidden(e.to_string()),
            WriteError::NotAReplica(_) => {
                WixError::application(409, "SITE_IS_NOT_A_REPLICA", e.to_string())
            }
            WriteError::Store(_)
            | WriteError::Replicas(_)
            | WriteError::Ingest(_)
            | WriteError::CatchUp(_)
            | WriteError::Contended(_) => {
                tracing::error!(error = %e, "write failed");
                WixError::application(503, "UNAVAILABLE", e.to_string())
            }
        })
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        tracing::error!(error = %e, "read failed");
        ApiError(WixError::application(
            503,
            "UNAVAILABLE",
            format!("the event log cannot be read: {e}"),
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0.body())).into_response()
    }
}

type ApiResult<T> = Result<axum::Json<T>, ApiError>;

/// Runs blocking engine work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError(WixError::application(
            500,
            "INTERNAL",
            format!("request failed: {e}"),
        )))
    })
}

/// The body, or the error for one that is too large or unreadable.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        let status = r.status().as_u16();
        let e = if status == 413 {
            WixError::application(
                413,
                "PAYLOAD_TOO_LARGE",
                format!("request body exceeds {MAX_BODY} bytes"),
            )
        } else {
            WixError::malformed_json(r.body_text())
        };
        ApiError(e)
    })
}

/// Runs a write and reads its answer from the state right after it. An answer the state
/// must hold but does not is a bug, answered 500 with `missing`.
fn write<R>(
    state: &AppState,
    t: &Tenant,
    command: &Command,
    missing: &'static str,
    answer: impl FnOnce(&Inbox, &[StoredEvent]) -> Option<R>,
) -> Result<R, ApiError> {
    state
        .engine
        .execute(&t.site, t.caller, command, answer)?
        .ok_or_else(|| WixError::application(500, "INTERNAL", missing).into())
}

/// [`write`] off the async workers, answered as JSON: what every plain write handler does.
async fn written<R: Send + 'static>(
    state: Arc<AppState>,
    t: Tenant,
    command: Command,
    missing: &'static str,
    answer: impl FnOnce(&Inbox, &[StoredEvent]) -> Option<R> + Send + 'static,
) -> ApiResult<R> {
    blocking(move || write(&state, &t, &command, missing, answer))
        .await
        .map(axum::Json)
}

/// Answers a read of the tenant's site, off the async workers: `answer` builds the response
/// from the site's state.
async fn read<R: Send + 'static>(
    state: Arc<AppState>,
    t: Tenant,
    answer: impl FnOnce(&Inbox) -> Result<R, WixError> + Send + 'static,
) -> ApiResult<R> {
    blocking(move || Ok(state.engine.read(&t.site, answer)??))
        .await
        .map(axum::Json)
}

/// A path's one parameter, as text; a segment that is not UTF-8 (or otherwise not what
/// the route takes) is answered in Wix's error shape, like every other bad input, instead
/// of axum's plain-text rejection.
struct Segment(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(text)) => Ok(Segment(text)),
            Err(rejection) => Err(ApiError(WixError::invalid(FieldViolation::new(
                "path",
                format!("the path segment is not valid: {}", rejection.body_text()),
                Rule::Format,
            )))),
        }
    }
}

/// Who is calling, for which site.
struct Tenant {
    site: SiteId,
    caller: Caller,
}

/// `Authorization: <key>` and `wix-site-id: <site>`, as Wix's SDK sends them. With keys
/// configured, the key must be known and `wix-site-id`, if sent, must be its site. Without,
/// any key is accepted (the server then listens on loopback only) and the site is
/// `wix-site-id`, or `local`.
fn tenant(state: &AppState, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let key = text(header::AUTHORIZATION.as_str())
        .map(|k| k.strip_prefix("Bearer ").unwrap_or(k).trim().to_owned());
    let asked = text("wix-site-id").map(SiteId::new);
    // An app's access token (from /oauth2/token): the app, on the site it was issued for.
    if let Some(grant) = key.as_deref().and_then(|k| {
        state
            .tokens
            .check(k, crate::clock::now().as_micros().div_euclid(1_000_000))
    }) {
        if let Some(other) = asked.filter(|s| *s != grant.site) {
            return Err(WixError::forbidden(format!(
                "the access token is for site {}, not {other}",
                grant.site
            ))
            .into());
        }
        return Ok(Tenant {
            site: grant.site,
            caller: Caller::App(grant.app),
        });
    }
    let site = if state.keys.is_empty() {
        asked.unwrap_or_else(|| SiteId::new("local"))
    } else {
        let Some(key) = &key else {
            return Err(WixError::unauthenticated(
                "an Authorization header with an API key is required",
            )
            .into());
        };
        let Some(own) = state.keys.get(key) else {
            return Err(
                WixError::unauthenticated("the API key is not known to this server").into(),
            );
        };
        match asked {
            Some(s) if &s != own => {
                return Err(WixError::forbidden(format!(
                    "the API key belongs to another site than {s}"
                ))
                .into());
            }
            _ => own.clone(),
        }
    };
    // An API key acts as a Wix user of its site; the id is stable per key.
    let caller = Caller::WixUser(WixUserId::from_uuid(Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("{site}:{}", key.unwrap_or_default()).as_bytes(),
    )));
    Ok(Tenant { site, caller })
}

/// `POST /oauth2/token`: what Wix's SDK sends for `AppStrategy({appId, appSecret,
/// instanceId})`.
#[derive(serde::Deserialize)]
struct TokenRequest {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    instance_id: String,
}

async fn oauth_token(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<serde_json::Value> {
    use crate::oauth::TokenError;
    let bytes = body(raw)?;
    let req: TokenRequest = serde_json::from_slice(&bytes).map_err(|e| {
        WixError::malformed_json(format!("request body is not a token request: {e}"))
    })?;
    let now = crate::clock::now().as_micros().div_euclid(1_000_000);
    let token = state
        .tokens
        .issue(
            &req.grant_type,
            &req.client_id,
            &req.client_secret,
            &req.instance_id,
            now,
        )
        .map_err(|e| match e {
            TokenError::BadClient => WixError::unauthenticated(e.to_string()),
            TokenError::GrantType(_) => WixError::invalid(FieldViolation::new(
                "grant_type",
                e.to_string(),
                Rule::InvalidEnumValue,
            )),
            TokenError::NoInstance => WixError::invalid(FieldViolation::new(
                "instance_id",
                e.to_string(),
                Rule::RequiredField,
            )),
        })?;
    Ok(axum::Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": crate::oauth::TOKEN_TTL_SECS,
    })))
}

async fn healthz(State(state): State<Arc<AppState>>) -> ApiResult<serde_json::Value> {
    // Asking a shared log is a database query: off the async workers.
    let events = blocking(move || {
        state.engine.core().log().last_position().map_err(|e| {
            ApiError(WixError::application(
                503,
                "UNAVAILABLE",
                format!("the event log cannot be read: {e}"),
            ))
        })
    })
    .await?;
    Ok(axum::Json(serde_json::json!({
        "status": "ok",
        "events": events,
    })))
}

async fn not_found() -> ApiError {
    ApiError(WixError::application(404, "NOT_FOUND", "no such path"))
}

async fn method_not_allowed() -> ApiError {
    ApiError(WixError::application(
        405,
        "METHOD_NOT_ALLOWED",
        "this path does not take that method",
    ))
}

async fn public_key(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.public_pem.clone(),
    )
        .into_response()
}

// ------------------------------------------------------------------------------------------
// Inbox v2

async fn get_conversation(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let t = tenant(&state, &headers)?;
    let (answer, redirected_from) = blocking(move || {
        let id = rest::conversation_id_from_path(&id)?;
        state.engine.read(&t.site, |inbox| {
            let view = inbox.conversation(id).map_err(WixError::from)?;
            Ok((GetConversationResponse::new(&view), view.redirected_from))
        })?
    })
    .await?;
    let mut response = axum::Json(answer).into_response();
    // Wix's body has no field for it; a merged id's answer says so in a header.
    if let Some(from) = redirected_from
        && let Ok(value) = header::HeaderValue::from_str(&from.to_string())
    {
        response.headers_mut().insert(REDIRECTED_FROM, value);
    }
    Ok(response)
}

/// Header on Get Conversation when the id asked for was merged into the answered one.
pub const REDIRECTED_FROM: &str = "x-inbox-redirected-from";

async fn get_or_create_conversation(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<GetOrCreateConversationResponse> {
    let t = tenant(&state, &headers)?;
    let req: GetOrCreateConversationRequest = parse_body(&body(raw)?)?;
    let command = req.to_command()?;
    let Command::GetOrCreateConversation { participant } = command else {
        return Err(WixError::application(500, "INTERNAL", "unexpected command").into());
    };
    written(
        state,
        t,
        command,
        "the conversation was not created",
        move |inbox, events| {
            let created = events
                .iter()
                .any(|e| matches!(e.envelope.event, Event::ConversationStarted { .. }));
            inbox
                .conversation_of(participant)
                .map(|view| GetOrCreateConversationResponse::new(&view, created))
        },
    )
    .await
}

async fn list_messages(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<rest::ListMessagesResponse> {
    let t = tenant(&state, &headers)?;
    let query = query.unwrap_or_default();
    read(state, t, move |inbox| rest::list_messages(inbox, &query)).await
}

async fn send_message(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<SendMessageResponse> {
    let t = tenant(&state, &headers)?;
    let req: SendMessageRequest = parse_body(&body(raw)?)?;
    let command = req.to_command()?;
    written(
        state,
        t,
        command,
        "the message was not stored",
        move |_, events| {
            events.iter().find_map(|e| match &e.envelope.event {
                Event::MessageSent { message } => Some(SendMessageResponse::new(message)),
                _ => None,
            })
        },
    )
    .await
}

// ------------------------------------------------------------------------------------------
// Contacts v4

async fn create_contact(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<ContactResponse> {
    let t = tenant(&state, &headers)?;
    let req: CreateContactRequest = parse_body(&body(raw)?)?;
    let id = ContactId::from_uuid(Uuid::new_v4());
    let command = req.to_command(id, rest::source_of(t.caller))?;
    written(
        state,
        t,
        command,
        "the contact was not created",
        move |inbox, _| inbox.contacts().get(id).map(ContactResponse::new),
    )
    .await
}

async fn update_contact(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<ContactResponse> {
    let t = tenant(&state, &headers)?;
    let id = rest::contact_id_from_path(&id)?;
    let req: rest::UpdateContactRequest = parse_body(&body(raw)?)?;
    let command = req.to_command(id)?;
    contact_write(state, t, command, id, "the updated contact is gone").await
}

async fn label_contact(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<ContactResponse> {
    let t = tenant(&state, &headers)?;
    let id = rest::contact_id_from_path(&id)?;
    let req: rest::LabelContactRequest = parse_body(&body(raw)?)?;
    contact_write(
        state,
        t,
        req.to_command(id),
        id,
        "the labelled contact is gone",
    )
    .await
}

async fn unlabel_contact(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
    RawQuery(query): RawQuery,
) -> ApiResult<ContactResponse> {
    let t = tenant(&state, &headers)?;
    let id = rest::contact_id_from_path(&id)?;
    let command = rest::unlabel_contact_command(id, &query.unwrap_or_default());
    contact_write(state, t, command, id, "the unlabelled contact is gone").await
}

/// Runs a command that changes one contact and answers with the contact after it.
async fn contact_write(
    state: Arc<AppState>,
    t: Tenant,
    command: Command,
    id: ContactId,
    missing: &'static str,
) -> ApiResult<ContactResponse> {
    written(state, t, command, missing, move |inbox, _| {
        inbox.contacts().get(id).map(ContactResponse::new)
    })
    .await
}

async fn delete_contact(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
) -> ApiResult<serde_json::Value> {
    let t = tenant(&state, &headers)?;
    let contact_id = rest::contact_id_from_path(&id)?;
    let command = Command::DeleteContact { contact_id };
    written(
        state,
        t,
        command,
        "the deletion was not recorded",
        move |_, _| Some(serde_json::json!({})),
    )
    .await
}

/// The bulk calls: the commands are decided from the state now and run one by one, each
/// contact on its own; a contact whose command is refused is skipped (and counted in the log).
async fn bulk(
    kind: rest::BulkKind,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<serde_json::Value> {
    let t = tenant(&state, &headers)?;
    let bytes = body(raw)?;
    blocking(move || {
        let commands = state
            .engine
            .read(&t.site, |inbox| rest::bulk_commands(inbox, kind, &bytes))??;
        let (mut done, mut skipped) = (0usize, 0usize);
        for command in &commands {
            match state
                .engine
                .execute(&t.site, t.caller, command, |_, _| Some(()))
            {
                Ok(_) => done += 1,
                Err(e) => {
                    let e = ApiError::from(e);
                    if e.0.status() >= 500 {
                        return Err(e);
                    }
                    skipped += 1;
                }
            }
        }
        let job_id = Uuid::new_v4();
        tracing::info!(site = %t.site, ?kind, %job_id, done, skipped, "bulk contacts call");
        Ok(serde_json::json!({ "jobId": job_id.to_string() }))
    })
    .await
    .map(axum::Json)
}

async fn list_facets(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<rest::FacetsResponse> {
    let t = tenant(&state, &headers)?;
    let query = query.unwrap_or_default();
    read(state, t, move |inbox| rest::list_facets(inbox, &query)).await
}

async fn query_facets(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<rest::FacetsResponse> {
    let t = tenant(&state, &headers)?;
    let bytes = body(raw)?;
    read(state, t, move |inbox| rest::query_facets(inbox, &bytes)).await
}

/// The Labels or Extended Fields API under `path`: list and find-or-create, query, and
/// get, rename and delete by key.
fn catalog_routes(
    router: Router<Arc<AppState>>,
    path: &str,
    kind: CatalogKind,
) -> Router<Arc<AppState>> {
    router
        .route(
            path,
            get(move |s, h, q| list_catalog(kind, s, h, q))
                .post(move |s, h, b| find_or_create(kind, s, h, b)),
        )
        .route(
            &format!("{path}/query"),
            post(move |s, h, b| query_catalog(kind, s, h, b)),
        )
        .route(
            &format!("{path}/{{key}}"),
            get(move |s, h, k| get_definition(kind, s, h, k))
                .patch(move |s, h, k, b| rename_definition(kind, s, h, k, b))
                .delete(move |s, h, k| delete_definition(kind, s, h, k)),
        )
}

/// Find Or Create Label / Extended Field: the definition with the display name, made if
/// there is none (`newLabel` / `newField` says which).
async fn find_or_create(
    kind: CatalogKind,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<serde_json::Value> {
    let t = tenant(&state, &headers)?;
    let req: catalog::FindOrCreateRequest = parse_body(&body(raw)?)?;
    let command = req.to_command(kind)?;
    let name = req.display_name()?.to_owned();
    written(
        state,
        t,
        command,
        "the label or field found or made is gone",
        move |inbox, events| {
            let catalog = inbox.contacts().catalog();
            let key = catalog::key_named(catalog, kind, &name)?;
            catalog::definition_answer(catalog, kind, &key, Some(!events.is_empty()))
        },
    )
    .await
}

async fn get_definition(
    kind: CatalogKind,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(key): Segment,
) -> ApiResult<serde_json::Value> {
    let t = tenant(&state, &headers)?;
    read(state, t, move |inbox| {
        catalog::get(inbox.contacts().catalog(), kind, &key)
    })
    .await
}

async fn rename_definition(
    kind: CatalogKind,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(key): Segment,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<serde_json::Value> {
    let t = tenant(&state, &headers)?;
    let req: catalog::RenameRequest = parse_body(&body(raw)?)?;
    let command = req.to_command(kind, &key)?;
    written(
        state,
        t,
        command,
        "the renamed label or field is gone",
        move |inbox, _| catalog::definition_answer(inbox.contacts().catalog(), kind, &key, None),
    )
    .await
}

async fn delete_definition(
    kind: CatalogKind,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(key): Segment,
) -> ApiResult<serde_json::Value> {
    let t = tenant(&state, &headers)?;
    let command = catalog::delete_command(kind, &key);
    written(
        state,
        t,
        command,
        "the deletion was not recorded",
        move |_, _| Some(serde_json::json!({})),
    )
    .await
}

async fn list_catalog(
    kind: CatalogKind,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<serde_json::Value> {
    let t = tenant(&state, &headers)?;
    let query = query.unwrap_or_default();
    read(state, t, move |inbox| {
        catalog::list(inbox.contacts().catalog(), kind, &query)
    })
    .await
}

async fn query_catalog(
    kind: CatalogKind,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<serde_json::Value> {
    let t = tenant(&state, &headers)?;
    let bytes = body(raw)?;
    read(state, t, move |inbox| {
        catalog::query(inbox.contacts().catalog(), kind, &bytes)
    })
    .await
}

async fn list_contacts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<rest::QueryContactsResponse> {
    let t = tenant(&state, &headers)?;
    let query = query.unwrap_or_default();
    read(state, t, move |inbox| rest::list_contacts(inbox, &query)).await
}

async fn get_contact(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
    RawQuery(query): RawQuery,
) -> ApiResult<rest::GetContactResponse> {
    let t = tenant(&state, &headers)?;
    let query = query.unwrap_or_default();
    read(state, t, move |inbox| rest::get_contact(inbox, &id, &query)).await
}

async fn query_contacts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<rest::QueryContactsResponse> {
    let t = tenant(&state, &headers)?;
    let bytes = body(raw)?;
    read(state, t, move |inbox| rest::query_contacts(inbox, &bytes)).await
}

async fn merge_contacts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<ContactResponse> {
    let t = tenant(&state, &headers)?;
    let target = rest::contact_id_from_path(&id)?;
    let req: MergeContactsRequest = parse_body(&body(raw)?)?;
    let command = req.to_command(target)?;
    written(
        state,
        t,
        command,
        "the target contact is gone",
        move |inbox, _| inbox.contacts().get(target).map(ContactResponse::new),
    )
    .await
}

async fn preview_merge(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<ContactResponse> {
    let t = tenant(&state, &headers)?;
    let bytes = body(raw)?;
    read(state, t, move |inbox| {
        rest::preview_merge(inbox, &id, &bytes, now())
    })
    .await
}

// ------------------------------------------------------------------------------------------
// The emulator's own paths

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterMemberRequest {
    member: Option<MemberInput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberInput {
    contact_id: Option<String>,
    login_email: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MemberOutput {
    id: String,
    contact_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_email: Option<String>,
}

#[derive(Serialize)]
struct MemberResponse {
    member: MemberOutput,
}

fn required_guid(field: &str, value: Option<&str>) -> Result<Uuid, ApiError> {
    let text = value.ok_or_else(|| {
        WixError::invalid(FieldViolation::new(
            field,
            format!("{field} is required"),
            Rule::RequiredField,
        ))
    })?;
    Uuid::parse_str(text.trim()).map_err(|_| {
        ApiError(WixError::invalid(FieldViolation::new(
            field,
            format!("must be a GUID; got {text:?}"),
            Rule::Format,
        )))
    })
}

/// `POST /members/v1/members` `{"member": {"contactId", "loginEmail"}}`: the contact becomes
/// a site member; its conversation is merged into the member's.
async fn register_member(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<MemberResponse> {
    let t = tenant(&state, &headers)?;
    let req: RegisterMemberRequest = parse_body(&body(raw)?)?;
    let member = req.member.ok_or_else(|| {
        WixError::invalid(FieldViolation::new(
            "member",
            "member is required",
            Rule::RequiredField,
        ))
    })?;
    let contact = ContactId::from_uuid(required_guid(
        "member.contactId",
        member.contact_id.as_deref(),
    )?);
    let id = MemberId::from_uuid(Uuid::new_v4());
    let command = Command::RegisterMember {
        member: id,
        contact,
        login_email: member.login_email,
    };
    written(
        state,
        t,
        command,
        "the member was not registered",
        move |inbox, _| {
            inbox.member(id).map(|m| MemberResponse {
                member: MemberOutput {
                    id: m.id.to_string(),
                    contact_id: m.contact_id.to_string(),
                    login_email: m.login_email.clone(),
                },
            })
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentifyRequest {
    contact_id: Option<String>,
}

/// `POST /emulator/v1/visitors/{anonymousVisitorId}/identify` `{"contactId"}`: the visitor
/// becomes the contact; answers the contact's live conversation.
/// Revert the merge that holds a conversation (an emulator extension: Wix's merges are
/// final). The answer is the conversation, live again.
async fn revert_merge(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
) -> ApiResult<GetConversationResponse> {
    let t = tenant(&state, &headers)?;
    let conversation = rest::conversation_id_from_path(&id)?;
    let command = Command::RevertConversationMerge { conversation };
    written(
        state,
        t,
        command,
        "the reverted conversation is missing",
        move |inbox, _| {
            inbox
                .conversation(conversation)
                .ok()
                .map(|v| GetConversationResponse::new(&v))
        },
    )
    .await
}

/// What reverting the merge that holds a conversation would give, changing nothing.
async fn preview_revert(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
) -> ApiResult<rest::RevertPreviewResponse> {
    let t = tenant(&state, &headers)?;
    let at = now();
    read(state, t, move |inbox| rest::preview_revert(inbox, &id, at)).await
}

/// The merges and reverts that shaped a conversation.
async fn merge_history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(id): Segment,
) -> ApiResult<rest::MergeHistoryResponse> {
    let t = tenant(&state, &headers)?;
    read(state, t, move |inbox| rest::merge_history(inbox, &id)).await
}

async fn identify_visitor(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Segment(visitor): Segment,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<GetConversationResponse> {
    let t = tenant(&state, &headers)?;
    let visitor = VisitorId::from_uuid(required_guid("anonymousVisitorId", Some(&visitor))?);
    let req: IdentifyRequest = parse_body(&body(raw)?)?;
    let contact = ContactId::from_uuid(required_guid("contactId", req.contact_id.as_deref())?);
    let command = Command::IdentifyVisitor { visitor, contact };
    blocking(move || {
        state
            .engine
            .execute(&t.site, t.caller, &command, |_, _| ())?;
        // The answer is the contact's live conversation; when neither the visitor nor the
        // contact had one, it is created now (Get Or Create is idempotent, so a retried
        // identify answers the same conversation).
        let participant = ParticipantId::Contact(contact);
        write(
            &state,
            &t,
            &Command::GetOrCreateConversation { participant },
            "the contact's conversation is missing",
            |inbox, _| {
                inbox
                    .conversation_of(participant)
                    .map(|v| GetConversationResponse::new(&v))
            },
        )
    })
    .await
    .map(axum::Json)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InteractionRequest {
    conversation_id: Option<String>,
    message_id: Option<String>,
    interaction_id: Option<String>,
}

/// `POST /emulator/v1/interactions`: the participant clicks a postback button.
async fn interact(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<serde_json::Value> {
    let t = tenant(&state, &headers)?;
    let req: InteractionRequest = parse_body(&body(raw)?)?;
    let conversation_id =
        rest::conversation_id_from_path(req.conversation_id.as_deref().ok_or_else(|| {
            WixError::invalid(FieldViolation::new(
                "conversationId",
                "conversationId is required",
                Rule::RequiredField,
            ))
        })?)?;
    let message_id = req
        .message_id
        .as_deref()
        .and_then(|m| m.trim().parse().ok())
        .ok_or_else(|| {
            WixError::invalid(FieldViolation::new(
                "messageId",
                "messageId is required and must be a numeric message id",
                Rule::Format,
            ))
        })?;
    let interaction_id = req
        .interaction_id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            WixError::invalid(FieldViolation::new(
                "interactionId",
                "interactionId is required",
                Rule::RequiredField,
            ))
        })?;
    let command = Command::InteractWithButton {
        conversation_id,
        message_id,
        interaction_id,
    };
    blocking(move || {
        // The participant clicks, not the app.
        state
            .engine
            .execute(&t.site, Caller::Anonymous, &command, |_, _| ())?;
        Ok(serde_json::json!({}))
    })
    .await
    .map(axum::Json)
}

// ------------------------------------------------------------------------------------------
// Webhook intake

/// `POST /webhooks/wix`: a delivery from the real Wix (the body is the JWT). It is verified,
/// made durable in the replica of its `instanceId`, and answered 200; a repeat is answered
/// 200 too and changes nothing.
async fn wix_webhook(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<serde_json::Value> {
    let Some(verifier) = state.wix_verifier.clone() else {
        return Err(WixError::application(
            501,
            "WEBHOOK_INTAKE_DISABLED",
            "start inboxd with --wix-public-key to accept Wix webhooks",
        )
        .into());
    };
    let bytes = body(raw)?;
    let token = std::str::from_utf8(&bytes)
        .map_err(|_| {
            WixError::application(400, "INVALID_WEBHOOK_PAYLOAD", "the body is not UTF-8")
        })?
        .to_owned();
    let delivery = verifier
        .verify(&token, now())
        .map_err(|e| ApiError(e.to_wix()))?;
    blocking(move || {
        let new = state.engine.ingest(&delivery)?;

        Ok(serde_json::json!({"duplicate": !new}))
    })
    .await
    .map(axum::Json)
}

/// Whether `addr` is loopback (the only place an unauthenticated server may listen).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

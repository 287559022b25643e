//! `GET /v1/runs/{id}`.

use actix_web::http::header::{ETag, IfNoneMatch};
use actix_web::{get, web, HttpResponse};

use super::RunView;
use crate::db::Database;
use crate::domain::access::{Action, Principal};
use crate::domain::ids::RunId;
use crate::error::{ApiError, Problem};
use crate::routes::caching::{self, Representation};
use crate::use_cases::visible_run;

/// Show a run.
///
/// 404 for a run that does not exist, is in another workspace or belongs to a tenant
/// outside the token (all three answer the same bytes); 403 for a member lacking the
/// type's view capability.
///
/// **Needs** the type's `view_capability`. With `If-None-Match` holding the current `ETag`:
/// `304`, no body.
#[utoipa::path(
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id"), caching::IfNoneMatchHeader),
    responses(
        (status = 200, body = RunView, headers(
            ("ETag" = String, description = "Changes exactly when the representation does, e.g. `\"run-42.3\"`")
        )),
        (status = 304, description = "Not Modified: the `If-None-Match` tag is current; no body", headers(
            ("ETag" = String, description = "The current tag")
        )),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/runs/{id}")]
pub async fn view_run(
    db: web::Data<Database>,
    principal: Principal,
    id: web::Path<i64>,
    if_none_match: Option<web::Header<IfNoneMatch>>,
) -> Result<HttpResponse, ApiError> {
    let id = RunId(id.into_inner());
    let run = db.run(move |conn| visible_run(conn, &principal, id, Action::View)).await?;
    let etag = caching::etag(Representation::Run, &run);
    if caching::client_has(if_none_match.as_ref(), &etag) {
        return Ok(caching::not_modified(etag));
    }
    Ok(HttpResponse::Ok().insert_header(ETag(etag)).json(RunView::from(run)))
}

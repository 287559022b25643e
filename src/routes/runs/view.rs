//! `GET /v1/runs/{id}`.

use actix_web::{get, web, HttpResponse};

use super::RunView;
use crate::db::Database;
use crate::domain::access::{Action, Principal};
use crate::domain::ids::RunId;
use crate::error::{ApiError, Problem};
use crate::use_cases::visible_run;

/// Show a run.
///
/// 404 for a run that does not exist, is in another workspace or belongs to a tenant
/// outside the token (all three answer the same bytes); 403 for a member lacking the
/// type's view capability.
#[utoipa::path(
    tag = "runs",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, body = RunView),
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
) -> Result<HttpResponse, ApiError> {
    let id = RunId(id.into_inner());
    let run = db.run(move |conn| visible_run(conn, &principal, id, Action::View)).await?;
    Ok(HttpResponse::Ok().json(RunView::from(run)))
}

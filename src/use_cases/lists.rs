//! Pages of runs: the lists and the schedules' histories. Concurrent identical page
//! requests share one reading ([`SharedReads`]); the HTTP side renders the page from the
//! runs as they are read.

use std::hash::Hash;
use std::sync::Arc;

use diesel::QueryResult;

use crate::db::replica::Reader;
use crate::db::run_fields::RunFields;
use crate::db::runs::{self, RunQuery};
use crate::db::shared_reads::SharedReads;
use crate::db::DbError;

/// Hands each run of a page to the visitor as it is read.
pub type ReadRuns<'a> = &'a mut dyn FnMut(&mut dyn FnMut(RunFields<'_>)) -> QueryResult<()>;

/// Pages of `P` keyed by `K`: `query` is the runs a key selects, `render` writes a page
/// from them as they are read.
pub fn shared_pages<K, P>(
    query: fn(&K) -> &RunQuery,
    render: fn(&K, ReadRuns<'_>) -> QueryResult<P>,
) -> SharedReads<K, P>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    P: Send + Sync + 'static,
{
    SharedReads::new(move |conn, key: &K| {
        let mut read = |visit: &mut dyn FnMut(RunFields<'_>)| runs::visit_page(conn, query(key), visit);
        Ok(render(key, &mut read)?)
    })
}

/// The page `key` names, read where `reader` reads, shared with the identical reads of
/// the same moment.
pub async fn page<K, P>(reader: &Reader, pages: &SharedReads<K, P>, key: K) -> Result<Arc<P>, DbError>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    P: Send + Sync + 'static,
{
    reader.read_shared(pages, key).await
}

//! Validation where the manager is lax or inconsistent: canonical paths, pipeline names, and
//! the `initial` parameter of activate.
//!
//! Two checks, placed apart in the stack: [`CanonicalPath`] runs first of all (nothing may
//! classify or route a path a decoder could change), [`PipelineRequest`] runs after
//! authentication and rate limiting (an anonymous client learns nothing about names, and a
//! flood of bad names still costs its budget).

pub mod activate;
pub mod headers;
pub mod name;
pub mod path;

use http::uri::PathAndQuery;

use crate::body::Request;
use crate::check::RequestCheck;
use crate::context::RequestContext;
use crate::errors::GatewayError;

pub use activate::ActivateQuery;
pub use headers::{RequestHygiene, UnverifiedCredentials};
pub use name::{check_name, NameError};
pub use path::check_canonical;

/// Rejects non-canonical paths with 400 `InvalidPath`.
#[derive(Clone, Copy)]
pub struct CanonicalPath;

impl RequestCheck for CanonicalPath {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        check_canonical(request.uri().path())
    }
}

/// Checks the pipeline name of `/v0/pipelines/{name}/…` and rebuilds activate's query.
#[derive(Clone, Copy)]
pub struct PipelineRequest;

impl RequestCheck for PipelineRequest {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        let classified = *RequestContext::of(request)?.classified()?;
        if let Some(name) = classified.pipeline(request.uri().path()) {
            check_name(name)?;
        }
        if classified.endpoint.activate_query {
            let query = ActivateQuery::parse(request.uri().query())?;
            let forwarded = query.forwarded_query();
            // Most clients already send the canonical form; rebuilding the URI is then
            // wasted work on every activation.
            if request.uri().query() != forwarded {
                rewrite_query(request, forwarded)?;
            }
        }
        Ok(())
    }
}

/// Replaces the request's query with `query` (or removes it).
fn rewrite_query(request: &mut Request, query: Option<&str>) -> Result<(), GatewayError> {
    let path = request.uri().path();
    let path_and_query = match query {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")),
        None => PathAndQuery::try_from(path),
    }
    .map_err(|e| GatewayError::internal(format!("rebuilding the activate query: {e}")))?;
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    *request.uri_mut() = http::Uri::from_parts(parts)
        .map_err(|e| GatewayError::internal(format!("rebuilding the activate URI: {e}")))?;
    Ok(())
}

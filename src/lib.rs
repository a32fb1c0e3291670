//! pipeline-gateway: an edge gateway for Feldera pipeline managers.

pub mod body;
pub mod standin;

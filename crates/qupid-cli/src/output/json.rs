//! The `--json` shapes: those of the dashboard's JSON API ([`qupid_web::json`]), one
//! definition for both, so a script reads either alike. Their own types, not the library's,
//! so that a change inside qupid cannot silently change what scripts read; the crate docs
//! and the README document them.

use serde::Serialize;

pub(crate) use qupid_web::json::{
    ListJson, OutcomeJson, PurgeJson, RecordJson, RemoveJson, RetryJson, StatsJson,
};

/// `value` as one line of JSON.
pub(crate) fn line<T: Serialize>(value: &T) -> anyhow::Result<String> {
    let mut s = serde_json::to_string(value)?;
    s.push('\n');
    Ok(s)
}

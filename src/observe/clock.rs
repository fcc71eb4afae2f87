//! The API server's time, as the `Date` header of a small response says it. Snapshot ages are
//! measured against it, because every `creationTimestamp` was written by it: a replica whose
//! own clock drifted must neither age good snapshots out nor take slots that have not come.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::Client;

/// How long a measured offset is trusted before it is measured again: clocks drift by
/// milliseconds a day, so once a minute costs one request and loses nothing.
const OFFSET_TTL: Duration = Duration::from_secs(60);

/// The offset between the API server's clock and this replica's, measured now and then.
#[derive(Default)]
pub struct ServerClock {
    measured: Mutex<Option<(Instant, chrono::Duration)>>,
}

impl ServerClock {
    /// The API server's time now, or `None` when it cannot be told (no recent measurement and
    /// the request failed, or the response carried no usable `Date`).
    pub async fn now(&self, client: &Client) -> Option<DateTime<Utc>> {
        if let Some(offset) = self.fresh_offset() {
            return Some(Utc::now() + offset);
        }
        match measure_offset(client).await {
            Ok(offset) => {
                if let Ok(mut m) = self.measured.lock() {
                    *m = Some((Instant::now(), offset));
                }
                Some(Utc::now() + offset)
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the API server's time");
                // A stale offset is still a better guess than none.
                self.measured
                    .lock()
                    .ok()
                    .and_then(|m| m.map(|(_, offset)| Utc::now() + offset))
            }
        }
    }

    fn fresh_offset(&self) -> Option<chrono::Duration> {
        let m = self.measured.lock().ok()?;
        m.filter(|(at, _)| at.elapsed() < OFFSET_TTL)
            .map(|(_, offset)| offset)
    }
}

#[derive(Debug, thiserror::Error)]
enum ClockError {
    #[error("GET /version: {0}")]
    Request(#[from] kube::Error),
    #[error("building the request: {0}")]
    Http(#[from] http::Error),
    #[error("the response has no Date header")]
    NoDate,
    #[error("the Date header {0:?} is not an HTTP date")]
    BadDate(String),
}

/// Server time minus local time, the local time taken halfway through the request.
async fn measure_offset(client: &Client) -> Result<chrono::Duration, ClockError> {
    let request = http::Request::get("/version").body(kube::client::Body::from(Vec::new()))?;
    let before = Utc::now();
    let response = client.send(request).await?;
    let after = Utc::now();
    let header = response
        .headers()
        .get(http::header::DATE)
        .ok_or(ClockError::NoDate)?;
    let server = parse_http_date(header.to_str().unwrap_or_default())?;
    let local = before + (after - before) / 2;
    Ok(server - local)
}

/// An HTTP `Date` (IMF-fixdate, `Sun, 06 Dec 2026 15:38:33 GMT`), which RFC 2822 parsing reads.
fn parse_http_date(text: &str) -> Result<DateTime<Utc>, ClockError> {
    DateTime::parse_from_rfc2822(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ClockError::BadDate(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_http_date_is_read_as_utc() {
        let t = parse_http_date("Sun, 06 Dec 2026 15:38:33 GMT").expect("an IMF-fixdate parses");
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 12, 6, 15, 38, 33).unwrap());
    }

    #[test]
    fn a_malformed_date_is_an_error_naming_it() {
        let err = parse_http_date("yesterday").expect_err("not a date");
        assert!(err.to_string().contains("yesterday"), "{err}");
    }
}

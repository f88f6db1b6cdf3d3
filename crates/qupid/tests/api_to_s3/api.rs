//! The HTTP API the example polls, served by the test: records whose versions the test bumps
//! mid-run, a replica that lags behind, and a record that keeps changing while the test is busy.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

/// The id of the record that changes at every read of the first page while the test is busy:
/// a poll that reads it always finds a new version, so no process can drain (stop) until the
/// test has settled the API, whatever the other pages show.
pub(crate) const HOT: &str = "hot";

#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) version: u64,
}

#[derive(Debug)]
struct State {
    /// The records as they are now; the hot one first.
    current: Vec<Record>,
    /// The records as they were before the last bump: what a lagging replica serves.
    previous: Vec<Record>,
    page_size: usize,
    lagging: bool,
    busy: bool,
    pages_served: u64,
    stale_pages_served: u64,
}

/// The API: serves `GET /records?page=N` on a spare port of 127.0.0.1 until dropped.
pub(crate) struct Api {
    state: Arc<Mutex<State>>,
    pub(crate) url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Api {
    /// `records` records (ids `0`, `1`, …) at version 1, plus the hot one, `page_size` a page.
    pub(crate) async fn start(records: usize, page_size: usize) -> Result<Api, String> {
        let mut current = vec![Record {
            id: HOT.to_owned(),
            version: 1,
        }];
        current.extend((0..records).map(|i| Record {
            id: i.to_string(),
            version: 1,
        }));
        let state = Arc::new(Mutex::new(State {
            previous: current.clone(),
            current,
            page_size,
            lagging: false,
            busy: true,
            pages_served: 0,
            stale_pages_served: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen for the API: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let served = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let response = answer(&state, &req);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Api {
            state,
            url: format!("http://127.0.0.1:{port}"),
            task,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().expect("the API's state"))
    }

    /// A new version of each record in `ids`; a lagging replica keeps serving the versions
    /// from before.
    pub(crate) fn bump(&self, ids: &[String]) {
        self.with(|s| {
            s.previous = s.current.clone();
            for r in s.current.iter_mut().filter(|r| ids.contains(&r.id)) {
                r.version += 1;
            }
        });
    }

    /// From now on, pages after the first are served from before the last bump half the time.
    pub(crate) fn lag(&self) {
        self.with(|s| s.lagging = true);
    }

    /// From now on every page is current and the hot record stops changing, so the processes
    /// can drain once they have done the latest versions.
    pub(crate) fn settle(&self) {
        self.with(|s| {
            s.lagging = false;
            s.busy = false;
        });
    }

    /// The records as they are now.
    pub(crate) fn records(&self) -> Vec<Record> {
        self.with(|s| s.current.clone())
    }

    /// Pages served, and of them, pages served from before the last bump.
    pub(crate) fn pages_served(&self) -> (u64, u64) {
        self.with(|s| (s.pages_served, s.stale_pages_served))
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(state: &Mutex<State>, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let page = (req.uri().path() == "/records")
        .then(|| req.uri().query())
        .flatten()
        .and_then(|q| q.strip_prefix("page="))
        .and_then(|n| n.parse::<usize>().ok());
    let Some(page) = page else {
        return respond(
            StatusCode::NOT_FOUND,
            json!({"error": "try /records?page=0"}),
        );
    };
    let mut s = state.lock().expect("the API's state");
    if page == 0 && s.busy {
        s.current[0].version += 1;
    }
    let stale = page > 0 && s.lagging && fastrand::bool();
    s.pages_served += 1;
    s.stale_pages_served += u64::from(stale);
    let from = if stale { &s.previous } else { &s.current };
    let start = (page * s.page_size).min(from.len());
    let end = (start + s.page_size).min(from.len());
    let records: Vec<_> = from[start..end]
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "version": r.version,
                "body": format!("record {} as of version {}", r.id, r.version),
            })
        })
        .collect();
    let next = (end < from.len()).then_some(page + 1);
    respond(StatusCode::OK, json!({"records": records, "next": next}))
}

fn respond(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

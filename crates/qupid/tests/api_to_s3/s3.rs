//! S3 for the test: a moto server, plain HTTP calls to set up a bucket and read every version
//! of every object, and a proxy that can hold one process's writes back (a slow network).

use std::convert::Infallible;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};

/// What to do when there is no S3 to test against.
pub(crate) const HOW_TO_START: &str = "the api_to_s3 test needs moto's S3 server: install it \
     with `pip install 'moto[server]'` (the test then starts `moto_server` itself), or start \
     one (`moto_server -H 127.0.0.1 -p 5000`) and set QUPID_TEST_S3=http://127.0.0.1:5000";

/// moto accepts any signature, but it reads the caller's account from an `Authorization`
/// header and refuses anonymous reads of a private bucket.
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=0";

/// The S3 server: QUPID_TEST_S3's, or a moto server started here (stopped when dropped).
pub(crate) struct S3 {
    pub(crate) endpoint: String,
    moto: Option<Child>,
    pub(crate) http: reqwest::Client,
}

impl S3 {
    pub(crate) async fn start() -> Result<S3, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let (endpoint, moto) = match std::env::var("QUPID_TEST_S3") {
            Ok(endpoint) => (endpoint.trim_end_matches('/').to_owned(), None),
            Err(_) => {
                let port = TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| e.to_string())?
                    .port();
                let port = port.to_string();
                // The command pip installs, or the module where it is not on the PATH.
                let spawn = |program: &str, args: &[&str]| {
                    Command::new(program)
                        .args(args)
                        .args(["-H", "127.0.0.1", "-p", &port])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                };
                let child = spawn("moto_server", &[])
                    .or_else(|_| spawn("python3", &["-m", "moto.server"]))
                    .map_err(|e| format!("cannot start moto's server: {e}\n{HOW_TO_START}"))?;
                (format!("http://127.0.0.1:{port}"), Some(child))
            }
        };
        let mut s3 = S3 {
            endpoint,
            moto,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if s3.http.get(&s3.endpoint).send().await.is_ok() {
                return Ok(s3);
            }
            if let Some(child) = &mut s3.moto {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("moto's server exited ({status})\n{HOW_TO_START}"));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no S3 answers at {} after 30 s\n{HOW_TO_START}",
                    s3.endpoint
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<&'static str>,
    ) -> Result<reqwest::Response, String> {
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("authorization", AUTH);
        if let Some(body) = body {
            // Not a form: moto would read it as one and find no body.
            req = req.header("content-type", "application/xml").body(body);
        }
        req.send().await.map_err(|e| format!("{method} {url}: {e}"))
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<&'static str>,
    ) -> Result<String, String> {
        let response = self.call(method.clone(), url.clone(), body).await?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(format!("{method} {url}: {status}: {text}"))
        }
    }

    /// A new bucket that keeps every version of every object.
    pub(crate) async fn create_versioned_bucket(&self, bucket: &str) -> Result<(), String> {
        self.ok(
            reqwest::Method::PUT,
            format!("{}/{bucket}", self.endpoint),
            None,
        )
        .await?;
        self.ok(
            reqwest::Method::PUT,
            format!("{}/{bucket}?versioning", self.endpoint),
            Some(
                "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <Status>Enabled</Status></VersioningConfiguration>",
            ),
        )
        .await?;
        Ok(())
    }

    /// How many objects are under `prefix` now.
    pub(crate) async fn count(&self, bucket: &str, prefix: &str) -> Result<usize, String> {
        let xml = self
            .ok(
                reqwest::Method::GET,
                format!("{}/{bucket}?list-type=2&prefix={prefix}", self.endpoint),
                None,
            )
            .await?;
        Ok(xml.matches("<Contents>").count())
    }

    /// Every version of every object under `prefix`, by key, newest first (as S3 lists them).
    pub(crate) async fn versions(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let mut all = Vec::new();
        let mut marker = String::new();
        loop {
            let xml = self
                .ok(
                    reqwest::Method::GET,
                    format!(
                        "{}/{bucket}?versions&prefix={prefix}{marker}",
                        self.endpoint
                    ),
                    None,
                )
                .await?;
            for v in xml.split("<Version>").skip(1) {
                let key = tag(v, "Key").ok_or(format!("a version without a key: {v}"))?;
                let id = tag(v, "VersionId").ok_or(format!("a version without an id: {v}"))?;
                all.push((key.to_owned(), id.to_owned()));
            }
            if tag(&xml, "IsTruncated") != Some("true") {
                return Ok(all);
            }
            let key = tag(&xml, "NextKeyMarker").unwrap_or_default();
            let id = tag(&xml, "NextVersionIdMarker").unwrap_or_default();
            marker = format!("&key-marker={key}&version-id-marker={id}");
        }
    }

    /// One version of an object (the current one without `version_id`); `None` if absent.
    pub(crate) async fn get(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<Stored>, String> {
        let mut url = format!("{}/{bucket}/{key}", self.endpoint);
        if let Some(id) = version_id {
            url.push_str(&format!("?versionId={id}"));
        }
        let response = self.call(reqwest::Method::GET, url.clone(), None).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let stamp_version = header("x-amz-meta-qupid-version")
            .and_then(|v| v.strip_prefix("ordered:").and_then(|n| n.parse().ok()));
        let token = header("x-amz-meta-qupid-token").and_then(|t| t.parse().ok());
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {url}: the object is not JSON: {e}"))?;
        Ok(Some(Stored {
            stamp_version,
            token,
            body_version: json["version"].as_u64(),
        }))
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(child) = &mut self.moto {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one version of an object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The ordered version in its `qupid-version` metadata.
    pub(crate) stamp_version: Option<u64>,
    /// The token in its `qupid-token` metadata.
    pub(crate) token: Option<u64>,
    /// The version its body says it was made from.
    pub(crate) body_version: Option<u64>,
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..end])
}

/// A proxy in front of S3 for one process: it passes every request on, except that while it
/// is closed it holds writes (PUTs) back — received whole, not yet sent on — as a slow
/// network would, until it is opened again.
pub(crate) struct Proxy {
    pub(crate) endpoint: String,
    open: tokio::sync::watch::Sender<bool>,
    held: Arc<Mutex<Vec<String>>>,
    sent_late: Arc<Mutex<Vec<(String, u16)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(upstream: &str, http: reqwest::Client) -> Result<Proxy, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen for the proxy: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (open, gate) = tokio::sync::watch::channel(true);
        let held: Arc<Mutex<Vec<String>>> = Arc::default();
        let sent_late: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            http,
            gate,
            held: held.clone(),
            sent_late: sent_late.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.pass(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Proxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            open,
            held,
            sent_late,
            task,
        })
    }

    /// Holds writes back from now on.
    pub(crate) fn close(&self) {
        self.open.send_replace(false);
    }

    /// Sends the held writes on, and every write after them.
    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }

    /// The paths of the writes held back so far.
    pub(crate) fn held(&self) -> Vec<String> {
        self.held.lock().expect("held").clone()
    }

    /// The held writes sent on after the proxy opened, with S3's answer's status.
    pub(crate) fn sent_late(&self) -> Vec<(String, u16)> {
        self.sent_late.lock().expect("sent late").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    gate: tokio::sync::watch::Receiver<bool>,
    held: Arc<Mutex<Vec<String>>>,
    sent_late: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Shared {
    async fn pass(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        match self.forward(req).await {
            Ok(r) => r,
            Err(e) => {
                let mut r = Response::new(Full::new(Bytes::from(e)));
                *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                r
            }
        }
    }

    async fn forward(
        &self,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, String> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut held = false;
        if parts.method == hyper::Method::PUT && !*self.gate.borrow() {
            held = true;
            self.held.lock().expect("held").push(path.clone());
            let mut gate = self.gate.clone();
            gate.wait_for(|open| *open)
                .await
                .map_err(|e| e.to_string())?;
        }
        let mut headers = parts.headers.clone();
        for h in ["host", "content-length", "connection", "transfer-encoding"] {
            headers.remove(h);
        }
        let upstream = self
            .http
            .request(parts.method.clone(), format!("{}{path}", self.upstream))
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = upstream.status();
        if held {
            self.sent_late
                .lock()
                .expect("sent late")
                .push((path, status.as_u16()));
        }
        let mut headers = upstream.headers().clone();
        let bytes = upstream.bytes().await.map_err(|e| e.to_string())?;
        if parts.method != hyper::Method::HEAD {
            headers.remove("content-length");
        }
        headers.remove("transfer-encoding");
        headers.remove("connection");
        let mut response = Response::new(Full::new(bytes));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

//! The distributed picture: poll a paginated HTTP API, process each record, save the output to
//! S3 — from as many copies of this program as you like, sharing one ledger.
//!
//! The API is the system of record. Each record has an id, a version that grows with every
//! change (an `updated_at`, a row version) and a body:
//!
//! ```text
//! GET {api}/records?page=0  →  {"records": [{"id": "a1", "version": 3, "body": "…"}, …], "next": 1}
//! GET {api}/records?page=1  →  {"records": […], "next": null}
//! ```
//!
//! Every poll reads every page: the API cannot tell what was handled. Each record becomes an
//! entry with an *ordered* version, so the ledger processes a record again when it changes,
//! and the sink ([`qupid::sink::ObjectSink`]) writes `{prefix}{id}.json` only if no newer
//! save is there: a copy paused past its lease, or a poll snapshot read before a change, can
//! never put older output over newer. A save that finds newer output in place is counted as
//! superseded and completes the key. The run ends when everything the API returns is done in
//! the ledger (by any copy), or on SIGINT/SIGTERM (running saves finish first).
//!
//! ```text
//! AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… AWS_REGION=… \
//! cargo run --release -p qupid --features object-store,redis --example api_to_s3 -- \
//!     --api http://127.0.0.1:8080 --bucket my-bucket [--endpoint http://127.0.0.1:5000 --allow-http] \
//!     [--prefix records/] [--ledger redis://127.0.0.1:6379 | QUPID_LEDGER] [--namespace NS | QUPID_NAMESPACE] \
//!     [--lease SECS] [--concurrency N] [--poll-ms MS] [--work-ms MS]
//! ```
//!
//! S3 settings come from the usual `AWS_*` variables (`AmazonS3Builder::from_env`); the
//! flags override the bucket and endpoint. Exit status: 0 when done, 1 on a fatal error (one
//! line on stderr), 2 on bad arguments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{Attribute, Attributes};
use qupid::sink::{ObjectSink, Saved};
use qupid::{AnyLedger, Entry, Pipeline, Policy, Source};
use serde::{Deserialize, Serialize};

/// One record of the API.
#[derive(Debug, Clone, Deserialize)]
struct Record {
    id: String,
    version: u64,
    body: String,
}

/// One page of the API.
#[derive(Debug, Deserialize)]
struct Page {
    records: Vec<Record>,
    next: Option<u64>,
}

/// What is saved for a record.
#[derive(Debug, Serialize)]
struct Output<'a> {
    id: &'a str,
    version: u64,
    words: usize,
    body: String,
}

const USAGE: &str = "usage: api_to_s3 --api URL --bucket NAME [--endpoint URL] [--allow-http] \
[--prefix P] [--ledger URL] [--namespace NS] [--lease SECS] [--concurrency N] [--poll-ms MS] \
[--work-ms MS]";

struct Args {
    api: String,
    bucket: Option<String>,
    endpoint: Option<String>,
    allow_http: bool,
    prefix: String,
    ledger: String,
    namespace: String,
    lease: Duration,
    concurrency: usize,
    poll: Duration,
    work: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        api: "http://127.0.0.1:8080".to_owned(),
        bucket: None,
        endpoint: None,
        allow_http: false,
        prefix: "records/".to_owned(),
        ledger: std::env::var("QUPID_LEDGER").unwrap_or_else(|_| "memory:".to_owned()),
        // The CLI's default too, so `qupid stats` sees what this run did.
        namespace: std::env::var("QUPID_NAMESPACE")
            .unwrap_or_else(|_| qupid::ledger::DEFAULT_NAMESPACE.to_owned()),
        lease: Duration::from_secs(30),
        concurrency: 16,
        poll: Duration::from_millis(500),
        work: Duration::from_millis(20),
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> Result<u64, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or(format!("{flag} needs a number"))
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--api" => a.api = it.next().ok_or("--api needs a URL")?,
            "--bucket" => a.bucket = Some(it.next().ok_or("--bucket needs a name")?),
            "--endpoint" => a.endpoint = Some(it.next().ok_or("--endpoint needs a URL")?),
            "--allow-http" => a.allow_http = true,
            "--prefix" => a.prefix = it.next().ok_or("--prefix needs a value")?,
            "--ledger" => a.ledger = it.next().ok_or("--ledger needs a URL")?,
            "--namespace" => a.namespace = it.next().ok_or("--namespace needs a name")?,
            "--lease" => a.lease = Duration::from_secs(number(it.next(), "--lease")?.max(1)),
            "--concurrency" => {
                a.concurrency = usize::try_from(number(it.next(), "--concurrency")?)
                    .map_err(|_| "--concurrency is too large")?
            }
            "--poll-ms" => a.poll = Duration::from_millis(number(it.next(), "--poll-ms")?),
            "--work-ms" => a.work = Duration::from_millis(number(it.next(), "--work-ms")?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(a)
}

/// Every record of the API, page after page.
async fn fetch_all(http: &reqwest::Client, api: &str) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    let mut page = 0;
    loop {
        let url = format!("{}/records?page={page}", api.trim_end_matches('/'));
        let got: Page = http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("GET {url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("GET {url}: not a page of records: {e}"))?;
        records.extend(got.records);
        match got.next {
            Some(next) if next > page => page = next,
            Some(next) => return Err(format!("GET {url}: next page {next} does not move on")),
            None => return Ok(records),
        }
    }
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    // A fatal error (the ledger's, S3's settings) ends the run with one line and status 1.
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut s3 = AmazonS3Builder::from_env().with_allow_http(args.allow_http);
    if let Some(bucket) = &args.bucket {
        s3 = s3.with_bucket_name(bucket);
    }
    if let Some(endpoint) = &args.endpoint {
        s3 = s3.with_endpoint(endpoint);
    }
    let s3 = s3.build().map_err(|e| format!("cannot set up S3: {e}"))?;
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, "application/json".into());
    let sink = ObjectSink::new(Arc::new(s3)).attributes(attributes);

    let shown = qupid::redact_url(&args.ledger);
    let ledger = AnyLedger::open(&args.ledger, &args.namespace)
        .await
        .map_err(|e| format!("cannot open the ledger {shown}: {e}"))?;
    eprintln!(
        "api {}; bucket {}; ledger {shown} (namespace {}); lease {:?}",
        args.api,
        args.bucket.as_deref().unwrap_or("(from AWS_BUCKET)"),
        args.namespace,
        args.lease
    );

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let api = args.api.clone();
    let source = Source::poll(args.poll, move || {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let records = fetch_all(&http, &api).await?;
            // An ordered version: the ledger and the sink both know v3 is newer than v2.
            Ok::<_, String>(records.into_iter().map(|r| {
                Entry::new(format!("record/{}", r.id), r.clone())
                    .map(|e| e.with_ordered_version(r.version))
            }))
        }
    })
    .named("api");

    let mut policy = Policy::default();
    policy.lease = args.lease;
    let written = Arc::new(AtomicU64::new(0));
    let superseded = Arc::new(AtomicU64::new(0));
    let (counted_written, counted_superseded) = (written.clone(), superseded.clone());
    let (work, prefix) = (args.work, args.prefix.clone());
    let pipeline = Pipeline::builder(ledger)
        .name("api_to_s3")
        .source(source)
        .process(move |a| async move {
            // Some work: the body in capitals and a word count.
            tokio::time::sleep(work).await;
            let r = a.payload();
            serde_json::to_vec(&Output {
                id: &r.id,
                version: r.version,
                words: r.body.split_whitespace().count(),
                body: r.body.to_uppercase(),
            })
        })
        .save(move |a, json: Vec<u8>| {
            let path = Path::from(format!("{prefix}{}.json", a.payload().id));
            let (sink, written, superseded) = (
                sink.clone(),
                counted_written.clone(),
                counted_superseded.clone(),
            );
            async move {
                match sink.save(&path, &a, json.into()).await? {
                    Saved::Written => written.fetch_add(1, Ordering::Relaxed),
                    // A newer save is in S3 already: nothing to write, the key is done.
                    Saved::Superseded { .. } => superseded.fetch_add(1, Ordering::Relaxed),
                };
                Ok::<_, qupid::sink::SinkError>(())
            }
        })
        .policy(policy)
        .concurrency(args.concurrency)
        // Done when everything the API returns is finished in the ledger, by any copy.
        .stop_when_drained()
        // SIGINT and SIGTERM drain: running saves finish, the rest is released.
        .stop_on_signals()
        .build()?;

    // A progress line on a terminal (nothing when the output is not one).
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {elapsed:>4} {msg}",
    )?);
    let progress = pipeline.progress();
    let ticker = {
        let (bar, written, superseded) = (bar.clone(), written.clone(), superseded.clone());
        tokio::spawn(async move {
            loop {
                let r = progress.snapshot();
                bar.set_message(match progress.ledger_down_for() {
                    Some(down) => format!(
                        "LEDGER DOWN for {down:.0?}, retrying: {}",
                        progress.ledger_error().unwrap_or_default()
                    ),
                    None => format!(
                        "saved {}  superseded {}  running {}  duplicates {}  retries {}",
                        written.load(Ordering::Relaxed),
                        superseded.load(Ordering::Relaxed),
                        progress.running(),
                        r.duplicates,
                        r.failed_attempts
                    ),
                });
                bar.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let report = pipeline.run().await;
    ticker.abort();
    bar.finish_and_clear();
    let report = report?;

    println!("{report}");
    println!(
        "saves: {} written, {} superseded (a newer save was already in place)",
        written.load(Ordering::Relaxed),
        superseded.load(Ordering::Relaxed)
    );
    Ok(())
}

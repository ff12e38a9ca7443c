//! `GET /api/v1/orgs/{org}/machines` with 1,000 machines, through a real socket, driven by wrk
//! (needs root and wrk; run through bench/run.sh). Reports requests/s and latency percentiles.

#[path = "../tests/common/mod.rs"]
mod common;

use common::api::Api;
use std::time::Duration;

fn main() {
    common::run_with(Duration::from_secs(2), |h| async move {
        let api = Api::new(&h).await;
        let op = api.operator().await;
        let org = api.org(&op, "bench", "10.100.0.0/16").await;
        let id = org["id"].as_str().unwrap().to_string();
        for i in 0..1000 {
            let (api, op, id) = (api.clone(), op.clone(), id.clone());
            let r = api
                .call(
                    "POST",
                    &format!("/api/v1/orgs/{id}/machines"),
                    Some(&op),
                    Some(serde_json::json!({"name": format!("m{i}")})),
                )
                .await;
            assert_eq!(r.status, 201);
        }
        let addr = h.serve_api(api.app.clone()).await;
        let url = format!("http://{addr}/api/v1/orgs/{id}/machines");
        let cookie = format!("Cookie: {}", op.cookie);
        let one = api
            .call(
                "GET",
                &format!("/api/v1/orgs/{id}/machines"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(one.body["machines"].as_array().unwrap().len(), 1000);
        let host = h.world.host_ns.clone();
        let out = tokio::task::spawn_blocking(move || {
            common::ns_out(
                &host,
                &[
                    "wrk",
                    "-t",
                    "2",
                    "-c",
                    "16",
                    "-d",
                    "15s",
                    "--latency",
                    "-H",
                    &cookie,
                    &url,
                ],
            )
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "wrk failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |prefix: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(prefix))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
                .unwrap_or_else(|| "?".into())
        };
        println!("## API: GET /api/v1/orgs/{{org}}/machines with 1,000 machines");
        println!();
        println!(
            "wrk, 2 threads, 16 connections, 15 s, over loopback in the controller's namespace; each"
        );
        println!(
            "response lists 1,000 machines with their kernel handshake and transfer ({} bytes).",
            one.raw.len()
        );
        println!();
        println!("| requests/s | p50 | p90 | p99 | non-2xx |");
        println!("|---|---|---|---|---|");
        let non2xx = text
            .lines()
            .find(|l| l.contains("Non-2xx"))
            .map(|l| l.split_whitespace().last().unwrap_or("0").to_string())
            .unwrap_or_else(|| "0".into());
        println!(
            "| {} | {} | {} | {} | {non2xx} |",
            field("Requests/sec:"),
            field("50%"),
            field("90%"),
            field("99%")
        );
        println!();
    });
}

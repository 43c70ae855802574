//! Fixed requests with oha (`--output-format json`), read into a [`Measurement`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::load::Measurement;

#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub body: Option<String>,
    pub header: Option<String>,
    pub connections: usize,
    pub run: Duration,
    /// Requests per second on oha's schedule, with `--latency-correction` (a request's latency
    /// counts from when its turn came, so waiting for a free connection counts).
    pub rate: Option<f64>,
}

impl Load {
    pub fn new(url: String, connections: usize, run: Duration) -> Self {
        Self {
            url,
            body: None,
            header: None,
            connections,
            run,
            rate: None,
        }
    }
}

pub struct Oha(pub PathBuf);

impl Oha {
    pub async fn version(&self) -> Result<String> {
        let mut cmd = std::process::Command::new(&self.0);
        cmd.arg("--version");
        let out = crate::env::output(cmd).await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub async fn run(&self, load: &Load) -> Result<Measurement> {
        let mut cmd = std::process::Command::new(&self.0);
        cmd.args([
            "--no-tui",
            "--output-format",
            "json",
            "--stats-success-breakdown",
            "-w",
        ])
        .args(["-c", &load.connections.to_string()])
        .args(["-z", &format!("{}ms", load.run.as_millis())]);
        if let Some(q) = load.rate {
            cmd.args(["-q", &format!("{q:.2}"), "--latency-correction"]);
        }
        if let Some(body) = &load.body {
            cmd.args(["-m", "POST", "-T", "application/json", "-d", body]);
        }
        if let Some(h) = &load.header {
            cmd.args(["-H", h]);
        }
        cmd.arg(&load.url);
        let out = crate::env::output(cmd).await.context("running oha")?;
        let json: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "oha printed no JSON: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let mut m = parse(&json)?;
        m.offered = load
            .rate
            .map(|q| (q * load.run.as_secs_f64()).round() as u64);
        Ok(m)
    }
}

fn parse(json: &Value) -> Result<Measurement> {
    let ms = |section: &str| json.get(section)?.get("p99")?.as_f64().map(|s| s * 1e3);
    let counts = |key: &str| {
        let dist = json
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        dist.map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect::<Vec<_>>()
    };
    Ok(Measurement {
        secs: json
            .pointer("/summary/total")
            .and_then(Value::as_f64)
            .context("oha JSON without summary.total")?,
        statuses: counts("statusCodeDistribution")
            .into_iter()
            .filter_map(|(k, n)| Some((k.parse().ok()?, n)))
            .collect(),
        errors: counts("errorDistribution").into_iter().collect(),
        p50_ms: json
            .pointer("/latencyPercentiles/p50")
            .and_then(Value::as_f64)
            .map(|s| s * 1e3),
        p99_ms: ms("latencyPercentiles"),
        ok_p99_ms: ms("latencyPercentilesSuccessful"),
        refused_p99_ms: ms("latencyPercentilesNotSuccessful"),
        ..Measurement::default()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_ohas_json() {
        let json = serde_json::json!({
            "summary": { "total": 2.0 },
            "statusCodeDistribution": { "200": 90, "503": 10 },
            "errorDistribution": { "connection reset": 1 },
            "latencyPercentiles": { "p50": 0.001, "p99": 0.004 },
            "latencyPercentilesSuccessful": { "p99": 0.005 },
            "latencyPercentilesNotSuccessful": { "p99": 0.002 },
        });
        let m = super::parse(&json).unwrap();
        assert_eq!(
            (m.ok(), m.rps(), m.answers().as_str()),
            (90, 45.0, "200×90, 503×10, connection reset×1")
        );
        assert_eq!(
            (m.p99_ms, m.ok_p99_ms, m.refused_p99_ms),
            (Some(4.0), Some(5.0), Some(2.0))
        );
    }
}

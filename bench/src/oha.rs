//! Fixed-request load with `oha` (`--no-tui --output-format json`), parsed into a [`Measurement`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::measure::Measurement;
use crate::procs::run_tool;

#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub method: &'static str,
    pub body: Option<String>,
    pub headers: Vec<String>,
    pub connections: usize,
    pub duration: Duration,
    /// Total requests per second (`-q`), with `--latency-correction`: latency counted from when
    /// oha's pacer released the request, so time spent waiting for a free connection counts.
    pub rate: Option<f64>,
}

impl Load {
    pub fn get(url: String, connections: usize, duration: Duration) -> Self {
        Self {
            url,
            method: "GET",
            body: None,
            headers: Vec::new(),
            connections,
            duration,
            rate: None,
        }
    }

    pub fn post_json(url: String, body: String, connections: usize, duration: Duration) -> Self {
        Self {
            method: "POST",
            body: Some(body),
            ..Self::get(url, connections, duration)
        }
    }

    pub fn header(mut self, h: String) -> Self {
        self.headers.push(h);
        self
    }

    pub fn rate(mut self, qps: f64) -> Self {
        self.rate = Some(qps);
        self
    }

    /// oha's arguments for this load: JSON out, the success/failure latency breakdown, and
    /// requests in flight at the deadline waited for instead of counted as errors.
    fn args(&self) -> Vec<String> {
        let fixed = ["--no-tui", "--output-format", "json", "--no-color", "-w"];
        let mut args: Vec<String> = fixed.map(str::to_owned).into();
        args.push("--stats-success-breakdown".into());
        args.extend(["-c".into(), self.connections.to_string()]);
        args.extend(["-z".into(), format!("{}ms", self.duration.as_millis())]);
        args.extend(["-m".into(), self.method.into()]);
        if let Some(q) = self.rate {
            args.extend([
                "-q".into(),
                format!("{q:.2}"),
                "--latency-correction".into(),
            ]);
        }
        if let Some(body) = &self.body {
            args.extend([
                "-T".into(),
                "application/json".into(),
                "-d".into(),
                body.clone(),
            ]);
        }
        for h in &self.headers {
            args.extend(["-H".into(), h.clone()]);
        }
        args.push(self.url.clone());
        args
    }

    /// How the load is described in the report (secrets such as the bearer token left out).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "oha -c {} -z {}s",
            self.connections,
            self.duration.as_secs()
        );
        if let Some(q) = self.rate {
            s.push_str(&format!(" -q {q:.0} --latency-correction"));
        }
        s
    }
}

pub struct Oha {
    pub bin: PathBuf,
}

impl Oha {
    pub fn new(bin: &Path) -> Self {
        Self {
            bin: bin.to_owned(),
        }
    }

    pub async fn version(&self) -> Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--version");
        let out = run_tool(cmd).await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub async fn run(&self, load: &Load) -> Result<Measurement> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(load.args());
        let out = run_tool(cmd).await.context("running oha")?;
        let json: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "oha printed no JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        parse(&json)
    }
}

fn ms(v: &Value, section: &str, key: &str) -> Option<f64> {
    v.get(section)?.get(key)?.as_f64().map(|s| s * 1000.0)
}

fn parse(json: &Value) -> Result<Measurement> {
    let elapsed_s = json
        .pointer("/summary/total")
        .and_then(Value::as_f64)
        .context("oha JSON without summary.total")?;
    let mut statuses = BTreeMap::new();
    if let Some(dist) = json
        .get("statusCodeDistribution")
        .and_then(Value::as_object)
    {
        for (code, n) in dist {
            if let (Ok(code), Some(n)) = (code.parse::<u16>(), n.as_u64()) {
                statuses.insert(code, n);
            }
        }
    }
    let mut errors = BTreeMap::new();
    if let Some(dist) = json.get("errorDistribution").and_then(Value::as_object) {
        for (err, n) in dist {
            errors.insert(err.clone(), n.as_u64().unwrap_or(0));
        }
    }
    Ok(Measurement {
        elapsed_s,
        statuses,
        errors,
        p50_ms: ms(json, "latencyPercentiles", "p50"),
        p99_ms: ms(json, "latencyPercentiles", "p99"),
        rejected_p99_ms: ms(json, "latencyPercentilesNotSuccessful", "p99"),
        ok_p99_ms: ms(json, "latencyPercentilesSuccessful", "p99"),
        schedule_behind_ms: None,
        timed_us: Vec::new(),
        origin: None,
        usage: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_load_args_and_description() {
        let load = Load::get(
            "http://127.0.0.1:1/v1/me".into(),
            64,
            Duration::from_secs(15),
        )
        .header("Authorization: Bearer secret".into())
        .rate(20_000.0);
        let args = load.args();
        let at = |flag: &str| args.iter().position(|a| a == flag).unwrap();
        assert_eq!(args[at("-c") + 1], "64");
        assert_eq!(args[at("-z") + 1], "15000ms");
        assert_eq!(args[at("-q") + 1], "20000.00");
        assert_eq!(args[at("-q") + 2], "--latency-correction");
        assert_eq!(args[at("-H") + 1], "Authorization: Bearer secret");
        assert!(args.contains(&"-w".to_owned()));
        assert_eq!(args.last().unwrap(), "http://127.0.0.1:1/v1/me");
        // The report names the load, never its headers.
        assert_eq!(
            load.describe(),
            "oha -c 64 -z 15s -q 20000 --latency-correction"
        );
        let closed = Load::post_json("u".into(), "{}".into(), 8, Duration::from_secs(5));
        assert!(!closed.args().contains(&"-q".to_owned()));
        assert_eq!(closed.describe(), "oha -c 8 -z 5s");
    }

    #[test]
    fn parses_oha_json() {
        let json: Value = serde_json::from_str(
            r#"{"summary":{"successRate":1.0,"total":2.0,"requestsPerSec":7.0},
                "latencyPercentiles":{"p50":0.001,"p99":0.0125},
                "latencyPercentilesSuccessful":{"p50":0.001,"p99":0.01},
                "latencyPercentilesNotSuccessful":{"p50":null,"p99":null},
                "statusCodeDistribution":{"200":12,"503":2},
                "errorDistribution":{"connection closed":1}}"#,
        )
        .unwrap();
        let m = parse(&json).unwrap();
        assert_eq!(m.ok(), 12);
        assert_eq!(m.ok_rps(), 6.0);
        assert_eq!(m.p50_ms, Some(1.0));
        assert_eq!(m.p99_ms, Some(12.5));
        assert_eq!(m.ok_p99_ms, Some(10.0));
        assert_eq!(m.rejected_p99_ms, None);
        assert_eq!(m.errors["connection closed"], 1);
    }
}

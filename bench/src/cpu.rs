//! Where all the cores' time went during one measurement: the server's hashing threads, the rest
//! of the server, the PostgreSQL backends serving the benchmark database, the rest of the
//! PostgreSQL cluster (WAL writer, checkpointer, other databases), this harness with the load
//! tools it ran, interrupts, everything else on the machine, time the hypervisor took (steal),
//! idle time, and idle time while a disk write was awaited (iowait). A goal that depends on the
//! share one of them gets (login: the hashing threads' share against the ceiling's) can then be
//! explained from the report itself.
//!
//! Everything is read from /proc in clock ticks, the unit of both `/proc/stat` (all CPUs summed)
//! and the per-process counters, so the parts add up to the machine's total up to tick rounding.

use std::collections::BTreeMap;
use std::fs;

use crate::procs::{processes, read_stat, serves_database};

/// Thread name prefix of the server's password hashing threads (`service::passwords`).
pub const HASHING_THREAD_PREFIX: &str = "tessera-hash-";

/// The machine-wide counters of `/proc/stat`'s `cpu` line, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Machine {
    /// user + nice + system: process and kernel work charged to some task.
    tasks: u64,
    /// irq + softirq.
    interrupts: u64,
    steal: u64,
    idle: u64,
    /// Idle while some task waited for a disk (here: PostgreSQL's WAL flushes).
    iowait: u64,
}

impl Machine {
    pub fn read() -> Option<Self> {
        Self::parse(&fs::read_to_string("/proc/stat").ok()?)
    }

    /// All the cores' time so far.
    pub fn total(&self) -> u64 {
        self.tasks + self.interrupts + self.steal + self.idle + self.iowait
    }

    /// Time no task ran: idle, with or without a disk write awaited.
    pub fn resting(&self) -> u64 {
        self.idle + self.iowait
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user and nice).
        Some(Self {
            tasks: at(0) + at(1) + at(2),
            idle: at(3),
            iowait: at(4),
            interrupts: at(5) + at(6),
            steal: at(7),
        })
    }
}

/// Counters at one instant: per thread or process, so that one that appears during the window
/// counts from zero.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    machine: Machine,
    hashing: BTreeMap<u32, u64>,
    server_other: BTreeMap<u32, u64>,
    pg_bench: BTreeMap<u32, u64>,
    pg_other: BTreeMap<u32, u64>,
    /// This process and the children it has reaped (oha, psql), utime + stime of both.
    harness: u64,
    /// Every other process, by PID and start time (a reused PID is another process): its
    /// command name and ticks (what "everything else" is made of, so a report can name what
    /// took the cores).
    others: BTreeMap<(u32, u64), (String, u64)>,
}

impl Snapshot {
    /// Reads the counters of the machine, the server `server_pid` (per thread), the PostgreSQL
    /// cluster (split by whether a process serves `db`) and this harness. `None` where /proc
    /// cannot be read (not Linux).
    pub fn take(server_pid: u32, db: &str) -> Option<Self> {
        let machine = Machine::read()?;
        let (mut hashing, mut server_other) = (BTreeMap::new(), BTreeMap::new());
        for entry in fs::read_dir(format!("/proc/{server_pid}/task"))
            .ok()?
            .flatten()
        {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Some(stat) = read_stat(&format!("/proc/{server_pid}/task/{tid}/stat")) else {
                continue;
            };
            let into = if stat.comm.starts_with(HASHING_THREAD_PREFIX) {
                &mut hashing
            } else {
                &mut server_other
            };
            into.insert(tid, stat.utime + stat.stime);
        }
        let (pg, other_processes) = processes(&[server_pid, std::process::id()]);
        let (mut pg_bench, mut pg_other) = (BTreeMap::new(), BTreeMap::new());
        for p in pg {
            let into = if serves_database(&p.title, db) {
                &mut pg_bench
            } else {
                &mut pg_other
            };
            into.insert(p.pid, p.ticks);
        }
        let others = other_processes
            .into_iter()
            .map(|p| ((p.pid, p.start), (p.comm, p.ticks)))
            .collect();
        let me = read_stat("/proc/self/stat")?;
        Some(Self {
            machine,
            hashing,
            server_other,
            pg_bench,
            pg_other,
            harness: me.utime + me.stime + me.children,
            others,
        })
    }
}

/// Clock ticks each part used between two snapshots; [`CpuSplit::describe`] gives them as shares
/// of the machine's total. Ticks, not percentages, so that several windows merge exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuSplit {
    pub hashing: u64,
    pub server_other: u64,
    pub pg_bench: u64,
    pub pg_other: u64,
    pub harness: u64,
    pub interrupts: u64,
    /// Task time charged to none of the above (other services, kernel threads).
    pub other: u64,
    /// Of `other`, what the processes running at the end of the window used during it, by
    /// command name (a process that ended within the window is in `other` but not here).
    pub other_named: BTreeMap<String, u64>,
    pub steal: u64,
    pub idle: u64,
    pub iowait: u64,
}

fn grown(start: &BTreeMap<u32, u64>, end: &BTreeMap<u32, u64>) -> u64 {
    end.iter()
        .map(|(id, t)| t.saturating_sub(start.get(id).copied().unwrap_or(0)))
        .sum()
}

impl CpuSplit {
    pub fn between(start: &Snapshot, end: &Snapshot) -> Self {
        let m = |f: fn(&Machine) -> u64| f(&end.machine).saturating_sub(f(&start.machine));
        let hashing = grown(&start.hashing, &end.hashing);
        let server_other = grown(&start.server_other, &end.server_other);
        let pg_bench = grown(&start.pg_bench, &end.pg_bench);
        let pg_other = grown(&start.pg_other, &end.pg_other);
        let harness = end.harness.saturating_sub(start.harness);
        let named = hashing + server_other + pg_bench + pg_other + harness;
        let mut other_named = BTreeMap::new();
        for (id, (comm, ticks)) in &end.others {
            let before = start.others.get(id).map_or(0, |(_, t)| *t);
            let used = ticks.saturating_sub(before);
            if used > 0 {
                *other_named.entry(comm.clone()).or_insert(0) += used;
            }
        }
        Self {
            hashing,
            server_other,
            pg_bench,
            pg_other,
            harness,
            interrupts: m(|x| x.interrupts),
            other: m(|x| x.tasks).saturating_sub(named),
            other_named,
            steal: m(|x| x.steal),
            idle: m(|x| x.idle),
            iowait: m(|x| x.iowait),
        }
    }

    pub fn merge(self, o: Self) -> Self {
        let mut other_named = self.other_named;
        for (comm, ticks) in o.other_named {
            *other_named.entry(comm).or_insert(0) += ticks;
        }
        Self {
            hashing: self.hashing + o.hashing,
            server_other: self.server_other + o.server_other,
            pg_bench: self.pg_bench + o.pg_bench,
            pg_other: self.pg_other + o.pg_other,
            harness: self.harness + o.harness,
            interrupts: self.interrupts + o.interrupts,
            other: self.other + o.other,
            other_named,
            steal: self.steal + o.steal,
            idle: self.idle + o.idle,
            iowait: self.iowait + o.iowait,
        }
    }

    /// The machine's total: named parts, interrupts, the rest, steal and idle. Per-process
    /// counters can run a tick ahead of `/proc/stat`, so the named parts alone may exceed the
    /// machine's task time by a little; the total is never smaller than what was counted.
    pub fn total(&self) -> u64 {
        self.hashing
            + self.server_other
            + self.pg_bench
            + self.pg_other
            + self.harness
            + self.interrupts
            + self.other
            + self.steal
            + self.idle
            + self.iowait
    }

    /// Share of the machine's total taken by `ticks`.
    pub fn share(&self, ticks: u64) -> f64 {
        ticks as f64 / self.total().max(1) as f64
    }

    /// "hashing threads 84.1%, rest of the server 3.0%, …" (shares of all cores' time).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.hashing > 0 {
            parts.push(("hashing threads", self.hashing));
            parts.push(("rest of the server", self.server_other));
        } else {
            parts.push(("server", self.server_other));
        }
        parts.extend([
            (
                "PostgreSQL backends of the benchmark database",
                self.pg_bench,
            ),
            ("rest of the PostgreSQL cluster", self.pg_other),
            ("harness and load tools", self.harness),
            ("interrupts", self.interrupts),
            ("everything else", self.other),
            ("steal", self.steal),
            ("idle", self.idle),
            ("idle waiting for the disk", self.iowait),
        ]);
        parts
            .iter()
            .map(|(name, ticks)| {
                let mut part = format!("{name} {:.1}%", self.share(*ticks) * 100.0);
                if *name == "everything else" {
                    part.push_str(&self.name_others());
                }
                part
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// " (of which kdamond.0 2.1%, tessera 1.3%)": when everything else took 1% or more, the
    /// processes that used the most of it (at least 0.5% each, three at most); empty otherwise.
    fn name_others(&self) -> String {
        if self.share(self.other) < 0.01 {
            return String::new();
        }
        let mut named: Vec<(&String, &u64)> = self
            .other_named
            .iter()
            .filter(|(_, t)| self.share(**t) >= 0.005)
            .collect();
        named.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if named.is_empty() {
            return String::new();
        }
        let list = named
            .iter()
            .take(3)
            .map(|(comm, t)| format!("{comm} {:.1}%", self.share(**t) * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        format!(" (of which {list})")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn machine_line_is_split_into_its_groups() {
        let stat = "cpu  100 5 40 1000 20 3 7 11 0 0\ncpu0 50 2 20 500 10 1 3 5 0 0\n";
        let m = Machine::parse(stat).unwrap();
        assert_eq!(
            m,
            Machine {
                tasks: 145,
                interrupts: 10,
                steal: 11,
                idle: 1000,
                iowait: 20,
            }
        );
        assert_eq!(m.total(), 100 + 5 + 40 + 1000 + 20 + 3 + 7 + 11);
        assert_eq!(m.resting(), 1020);
    }

    fn snapshot(machine: Machine, hashing: &[(u32, u64)], harness: u64) -> Snapshot {
        Snapshot {
            machine,
            hashing: hashing.iter().copied().collect(),
            server_other: [(1, 10)].into(),
            pg_bench: [(7, 5)].into(),
            pg_other: [(9, 2)].into(),
            harness,
            others: BTreeMap::new(),
        }
    }

    #[test]
    fn split_counts_growth_new_threads_from_zero_and_the_rest_as_other() {
        let start = snapshot(
            Machine {
                tasks: 1000,
                interrupts: 10,
                steal: 0,
                idle: 500,
                iowait: 7,
            },
            &[(2, 100)],
            50,
        );
        let mut end = snapshot(
            Machine {
                tasks: 1200,
                interrupts: 14,
                steal: 1,
                idle: 530,
                iowait: 9,
            },
            // Thread 3 appeared during the window.
            &[(2, 250), (3, 20)],
            60,
        );
        end.server_other.insert(1, 16);
        end.pg_bench.insert(8, 4); // a backend that connected meanwhile
        let s = CpuSplit::between(&start, &end);
        assert_eq!(s.hashing, 170);
        assert_eq!(s.server_other, 6);
        assert_eq!(s.pg_bench, 4);
        assert_eq!(s.pg_other, 0);
        assert_eq!(s.harness, 10);
        assert_eq!(s.other, 200 - 190);
        assert_eq!((s.interrupts, s.steal, s.idle, s.iowait), (4, 1, 30, 2));
        assert_eq!(s.total(), 200 + 4 + 1 + 30 + 2);
        assert!((s.share(s.hashing) - 170.0 / 237.0).abs() < 1e-12);
        let twice = s.clone().merge(s.clone());
        assert_eq!(twice.total(), 2 * s.total());
        assert_eq!(twice.share(twice.hashing), s.share(s.hashing));
        assert!(s
            .describe()
            .starts_with("hashing threads 71.7%, rest of the server 2.5%"));
        assert!(s
            .describe()
            .ends_with("idle 12.7%, idle waiting for the disk 0.8%"));
    }

    #[test]
    fn everything_else_names_the_processes_that_used_the_most_of_it() {
        let machine = |tasks, idle| Machine {
            tasks,
            interrupts: 0,
            steal: 0,
            idle,
            iowait: 0,
        };
        let mut start = snapshot(machine(1000, 500), &[(2, 100)], 50);
        let mut end = snapshot(machine(2000, 1500), &[(2, 100)], 50);
        start.others = [
            ((40, 1), ("kdamond.0".to_owned(), 10)),
            ((41, 1), ("tessera".to_owned(), 100)),
            ((42, 1), ("kworker/0:1".to_owned(), 0)),
            ((46, 1), ("sleep".to_owned(), 300)),
        ]
        .into();
        end.others = [
            ((40, 1), ("kdamond.0".to_owned(), 18)), // +8: 0.4%, too little to name
            ((41, 1), ("tessera".to_owned(), 700)),  // +600: 30.0%
            ((42, 1), ("kworker/0:1".to_owned(), 5)), // +5: 0.25%
            ((43, 9), ("kworker/0:2".to_owned(), 4)), // new: +4, with 42 still under 0.5%
            ((44, 9), ("beam.smp".to_owned(), 40)),  // new during the window: +40: 2.0%
            ((45, 9), ("tessera".to_owned(), 60)),   // a second process of that name: +60
            // PID 46 reused by a process started in the window: all of its 30 ticks are its
            // own, not 30 less the 300 of the process that had the PID before.
            ((46, 9), ("oha".to_owned(), 30)),
        ]
        .into();
        let s = CpuSplit::between(&start, &end);
        assert_eq!(s.other, 1000);
        assert_eq!(s.other_named["tessera"], 660);
        assert_eq!(s.other_named["kworker/0:1"], 5);
        assert_eq!(s.other_named["oha"], 30);
        assert!(!s.other_named.contains_key("sleep"));
        let d = s.describe();
        assert!(
            d.contains("everything else 50.0% (of which tessera 33.0%, beam.smp 2.0%, oha 1.5%), "),
            "{d}"
        );
        assert_eq!(s.clone().merge(s.clone()).other_named["tessera"], 1320);
        // Three names at most, the largest first.
        let mut many = s.clone();
        many.other_named.insert("postgres-ish".to_owned(), 100);
        assert!(
            many.describe()
                .contains("(of which tessera 33.0%, postgres-ish 5.0%, beam.smp 2.0%), "),
            "{}",
            many.describe()
        );

        // Under 1% in all: nothing named.
        let mut quiet = s.clone();
        quiet.other = 1;
        assert!(
            !quiet.describe().contains("of which"),
            "{}",
            quiet.describe()
        );
    }

    #[test]
    fn a_named_hashing_thread_of_a_live_process_is_counted_as_hashing() {
        // This test process plays the server: one thread named like the server's hashing
        // threads spins until /proc has charged it some CPU.
        let me = std::process::id();
        let start = Snapshot::take(me, "no-such-database").unwrap();
        let spinner = std::thread::Builder::new()
            .name(format!("{HASHING_THREAD_PREFIX}0"))
            .spawn(|| {
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(300) {
                    std::hint::black_box(t.elapsed());
                }
            })
            .unwrap();
        // Read while the thread is alive (an exited thread leaves /proc/<pid>/task).
        std::thread::sleep(Duration::from_millis(250));
        let end = Snapshot::take(me, "no-such-database").unwrap();
        spinner.join().unwrap();
        let s = CpuSplit::between(&start, &end);
        assert!(s.hashing >= 5, "{s:?}");
        assert_eq!(s.pg_bench, 0, "no backend serves that database: {s:?}");
        assert!(s.total() > 0);
    }

    /// Against a real PostgreSQL (`TESSERA_TEST_PG_URL`, which the README's test command sets):
    /// a backend working for the benchmark database counts as one of its backends, not as the
    /// rest of the cluster.
    #[test]
    fn a_backend_of_the_database_is_counted_as_the_databases() {
        let Some(db) = crate::pg::tests::test_database() else {
            return;
        };
        let me = std::process::id();
        let start = Snapshot::take(me, &db.name).unwrap();
        let url = db.url.clone();
        let busy = std::thread::spawn(move || {
            crate::pg::psql(
                &url,
                "SELECT count(*) FROM generate_series(1, 2000000) g WHERE g % 7 = 0 \
                 AND clock_timestamp() > now() - interval '1 day'; SELECT pg_sleep(0.5)",
            )
            .unwrap()
        });
        // Read while the backend is still connected (it sleeps after its work).
        std::thread::sleep(Duration::from_millis(200));
        let mut end = Snapshot::take(me, &db.name).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while CpuSplit::between(&start, &end).pg_bench < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            end = Snapshot::take(me, &db.name).unwrap();
        }
        busy.join().unwrap();
        let s = CpuSplit::between(&start, &end);
        assert!(s.pg_bench >= 5, "{s:?}");
        assert!(s.pg_bench > s.pg_other, "{s:?}");
    }
}

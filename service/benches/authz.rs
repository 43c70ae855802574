//! The in-process decision at 10 / 1k / 10k / 100k tenants: the server's path (an answer
//! remembered per organization, asked of that organization's own enforcer once) next to its
//! ceiling, a plain Casbin `Enforcer` over every tenant's lines (up to 10k tenants: beyond that
//! one check takes too long to be worth the wait). Besides criterion's means it prints, per
//! size, the p50/p99 of single remembered decisions, the cost of a first (unremembered) answer,
//! and the memory per tenant (bytes allocated and still held, over the tenants touched).
//!
//!     cargo bench -p service --bench authz
//!
//! Each tenant: 10 members, one account with two projects, a custom role of three permissions,
//! 1–2 grants per member at a random level. Questions are random (tenant, member, scope,
//! permission) from a working set of 20,000.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use service::authz::{
    build_enforcer, enforce, Decisions, FixedAdapter, Permission, PolicyLines, PolicySet, Scope,
};
use uuid::Uuid;

const USERS: u128 = 10;
const WORKING_SET: usize = 20_000;

fn id(kind: u128, tenant: u128, n: u128) -> Uuid {
    Uuid::from_u128((kind << 120) | (tenant << 32) | n)
}

fn scopes(t: u128) -> [Scope; 4] {
    let org = id(1, t, 0);
    let account = id(2, t, 0);
    [
        Scope::organization(org),
        Scope::account(org, account),
        Scope::project(org, account, id(3, t, 0)),
        Scope::project(org, account, id(3, t, 1)),
    ]
}

/// xorshift64*, deterministic.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Tenant `t`'s lines, as the SeaORM adapter would load them: the built-in roles, its custom
/// role, its grants.
fn lines(policy: &PolicySet, t: u128) -> PolicyLines {
    let mut out = policy.builtin_lines();
    let org = id(1, t, 0).to_string();
    let custom = id(4, t, 0).to_string();
    for p in ["project:read", "project:update", "authz:check"] {
        out.push(("p", vec![custom.clone(), org.clone(), p.into()]));
    }
    let roles = ["owner", "admin", "member", "viewer"];
    let mut rng = Rng(t as u64 * 7919 + 1);
    let sc = scopes(t);
    for u in 0..USERS {
        for _ in 0..1 + rng.below(2) {
            let role = match rng.below(5) {
                4 => custom.clone(),
                r => roles[r as usize].to_owned(),
            };
            let at = sc[rng.below(4) as usize].id();
            out.push(("g", vec![id(5, t, u).to_string(), role, at.to_string()]));
        }
    }
    out
}

type Question = (u128, Uuid, Scope, Permission);

fn questions(tenants: u128, n: usize, seed: u64) -> Vec<Question> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let t = rng.below(tenants as u64) as u128;
            let user = id(5, t, rng.below(USERS as u64) as u128);
            let scope = scopes(t)[rng.below(4) as usize];
            let permission = Permission::ALL[rng.below(Permission::ALL.len() as u64) as usize];
            (t, user, scope, permission)
        })
        .collect()
}

/// Bytes the allocator has handed out and not taken back (glibc's count, so memory freed by an
/// earlier size and reused by this one is not missed, as a resident-set delta would).
fn allocated_bytes() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

fn decisions(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    // `cargo test --bench authz` runs each bench once: small sizes only.
    let sizes: &[u128] = if full {
        &[10, 1_000, 10_000, 100_000]
    } else {
        &[10, 1_000]
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let policy = Arc::new(PolicySet::embedded().expect("shipped policy"));
    let mut group = c.benchmark_group("authz decision");
    group.measurement_time(Duration::from_secs(3));
    for &tenants in sizes {
        let decisions = Decisions::new(policy.clone());
        let working = questions(tenants, if full { WORKING_SET } else { 500 }, 42);
        let touched: std::collections::BTreeSet<u128> = working.iter().map(|q| q.0).collect();
        let before = allocated_bytes();
        let started = Instant::now();
        rt.block_on(async {
            for (t, user, scope, permission) in &working {
                let p = policy.clone();
                let t = *t;
                decisions
                    .decide(
                        scope.organization_id,
                        1,
                        *user,
                        scope,
                        *permission,
                        || async move { Ok(lines(&p, t)) },
                    )
                    .await
                    .expect("decide");
            }
        });
        let first = started.elapsed() / working.len() as u32;
        let per_tenant = allocated_bytes().saturating_sub(before) / touched.len() as u64;
        let mut single: Vec<Duration> = working
            .iter()
            .cycle()
            .take(200_000)
            .map(|(_, user, scope, permission)| {
                let t0 = Instant::now();
                black_box(decisions.remembered(
                    scope.organization_id,
                    1,
                    *user,
                    scope,
                    *permission,
                ));
                t0.elapsed()
            })
            .collect();
        single.sort();
        println!(
            "authz {tenants} tenants: remembered decision p50 {:?} p99 {:?}; first answer (enforcer built as needed) {:?} mean; {} tenants touched, {} answers, ~{} bytes allocated per tenant touched (the 512 kept enforcers included)",
            percentile(&single, 0.5),
            percentile(&single, 0.99),
            first,
            touched.len(),
            decisions.answers(),
            per_tenant,
        );
        let mut i = 0;
        group.bench_function(format!("remembered, {tenants} tenants"), |b| {
            b.iter(|| {
                let (_, user, scope, permission) = &working[i % working.len()];
                i += 1;
                decisions
                    .remembered(scope.organization_id, 1, *user, scope, *permission)
                    .expect("remembered")
            })
        });

        if tenants > 10_000 {
            continue;
        }
        let all: PolicyLines = {
            let mut all = policy.builtin_lines();
            for t in 0..tenants {
                all.extend(lines(&policy, t).into_iter().filter(|(ty, r)| {
                    // Each tenant's copy of the built-in lines once, not per tenant.
                    *ty == "g" || r.get(1).is_some_and(|d| d != "*")
                }));
            }
            all
        };
        let plain = rt
            .block_on(build_enforcer(&policy, FixedAdapter(all)))
            .expect("plain enforcer");
        let sample: Vec<&Question> = working.iter().take(if full { 200 } else { 20 }).collect();
        let mut times: Vec<Duration> = sample
            .iter()
            .map(|(_, user, scope, permission)| {
                let t0 = Instant::now();
                black_box(enforce(&plain, *user, scope, *permission).expect("enforce"));
                t0.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "authz {tenants} tenants: ceiling plain Enforcer p50 {:?} p99 {:?} ({} questions)",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times.len()
        );
        // The oracle: the remembered answers are the plain enforcer's.
        for (_, user, scope, permission) in &sample {
            assert_eq!(
                decisions.remembered(scope.organization_id, 1, *user, scope, *permission),
                Some(enforce(&plain, *user, scope, *permission).expect("enforce")),
            );
        }
        let mut j = 0;
        group.sample_size(10);
        group.bench_function(format!("ceiling: plain Enforcer, {tenants} tenants"), |b| {
            b.iter(|| {
                let (_, user, scope, permission) = sample[j % sample.len()];
                j += 1;
                enforce(&plain, *user, scope, *permission).expect("enforce")
            })
        });
        group.sample_size(100);
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);

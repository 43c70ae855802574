//! The policy files: `model.conf` (the Casbin model) and `policy.csv` (built-in roles as
//! permission sets), compiled in as the default or read from `policy.dir`, and linted on load.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};

use casbin::{CoreApi, DefaultModel, Enforcer};
use uuid::Uuid;

use super::vocabulary::Permission;
use super::Scope;

/// The role every organization's creator is granted; the server cannot work without it.
const OWNER_ROLE: &str = "owner";

pub const EMBEDDED_MODEL: &str = include_str!("../../../policies/model.conf");
pub const EMBEDDED_POLICY: &str = include_str!("../../../policies/policy.csv");

/// Errors make a policy unusable (the server refuses to start, `tessera policy lint` exits
/// non-zero); warnings point at something an author probably did not mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A problem found in a policy file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintMessage {
    pub file: String,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: usize,
    pub message: String,
    pub severity: Severity,
}

impl LintMessage {
    pub fn error(file: impl Into<String>, line: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line,
            message: message.into(),
            severity: Severity::Error,
        }
    }

    pub fn warning(file: impl Into<String>, line: usize, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, line, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `file:line: message`, with `warning: ` before the message of a warning.
impl fmt::Display for LintMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line != 0 {
            write!(f, ":{}", self.line)?;
        }
        if self.severity == Severity::Warning {
            write!(f, ": warning")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One `p` line of `policy.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLine {
    pub line: usize,
    pub role: String,
    pub permission: Permission,
}

/// A linted policy: the model's text and the built-in roles' permission sets.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub model_text: String,
    pub lines: Vec<PolicyLine>,
    /// Built-in role → its permissions, from `policy.csv`.
    pub builtin: BTreeMap<String, BTreeSet<Permission>>,
    /// Where the files came from (`embedded` or a directory), for messages.
    pub source: String,
    /// The file `lines` come from, as shown in messages.
    pub policy_file: String,
    /// What the lint found that does not stop the policy from being used.
    pub warnings: Vec<LintMessage>,
}

impl PolicySet {
    /// The files compiled into the binary.
    pub fn embedded() -> Result<Self, Vec<LintMessage>> {
        Self::parse(
            EMBEDDED_MODEL,
            EMBEDDED_POLICY,
            "policies/model.conf",
            "policies/policy.csv",
            "embedded".into(),
        )
    }

    /// `dir/model.conf` and `dir/policy.csv`.
    pub fn from_dir(dir: &Path) -> Result<Self, Vec<LintMessage>> {
        let read = |name: &str| -> Result<(String, String), LintMessage> {
            let path: PathBuf = dir.join(name);
            let shown = path.display().to_string();
            std::fs::read_to_string(&path)
                .map(|text| (text, shown.clone()))
                .map_err(|e| LintMessage::error(shown, 0, format!("cannot read: {e}")))
        };
        let model = read("model.conf");
        let policy = read("policy.csv");
        match (model, policy) {
            (Ok((model, model_file)), Ok((policy, policy_file))) => Self::parse(
                &model,
                &policy,
                &model_file,
                &policy_file,
                dir.display().to_string(),
            ),
            (model, policy) => Err([model.err(), policy.err()].into_iter().flatten().collect()),
        }
    }

    /// Parses and lints both files; every error is reported, not only the first (warnings are
    /// in [`PolicySet::warnings`] when there is no error).
    pub fn parse(
        model: &str,
        policy: &str,
        model_file: &str,
        policy_file: &str,
        source: String,
    ) -> Result<Self, Vec<LintMessage>> {
        let mut problems = lint_model(model, model_file);
        let mut lines = Vec::new();
        let mut seen: BTreeMap<(String, Permission), usize> = BTreeMap::new();
        for (index, raw) in policy.lines().enumerate() {
            let line = index + 1;
            let text = raw.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let mut problem =
                |message: String| problems.push(LintMessage::error(policy_file, line, message));
            let fields: Vec<&str> = text.split(',').map(str::trim).collect();
            if fields[0] != "p" {
                problem(format!(
                    "only `p, <role>, *, <permission>` lines belong here (grants live in the database), found `{}`",
                    fields[0]
                ));
                continue;
            }
            if fields.len() != 4 {
                problem(format!(
                    "expected 4 fields `p, <role>, *, <permission>`, found {}",
                    fields.len()
                ));
                continue;
            }
            let (role, domain, permission) = (fields[1], fields[2], fields[3]);
            if crate::domain::RoleName::parse(role).is_err() {
                problem(format!(
                    "`{role}` is not a valid role name (lowercase letters, digits, `-`, `_`; 1 to 64 characters)"
                ));
                continue;
            }
            if domain != "*" {
                problem(format!(
                    "built-in roles apply to every organization: the domain must be `*`, found `{domain}`"
                ));
                continue;
            }
            let Ok(permission) = permission.parse::<Permission>() else {
                problem(format!(
                    "unknown permission `{permission}`; known: {}",
                    Permission::ALL.map(Permission::as_str).join(", ")
                ));
                continue;
            };
            if let Some(first) = seen.insert((role.to_owned(), permission), line) {
                problem(format!(
                    "duplicate line: `{role}` already has `{permission}` (line {first})"
                ));
                continue;
            }
            lines.push(PolicyLine {
                line,
                role: role.to_owned(),
                permission,
            });
        }
        let mut builtin: BTreeMap<String, BTreeSet<Permission>> = BTreeMap::new();
        for l in &lines {
            builtin
                .entry(l.role.clone())
                .or_default()
                .insert(l.permission);
        }
        match builtin.get(OWNER_ROLE) {
            None if problems.is_empty() => problems.push(LintMessage::error(
                policy_file,
                0,
                format!("no `{OWNER_ROLE}` role: the creator of an organization is granted `{OWNER_ROLE}`"),
            )),
            None => {}
            Some(held) => {
                let missing: Vec<&str> = Permission::ALL
                    .into_iter()
                    .filter(|p| !held.contains(p))
                    .map(Permission::as_str)
                    .collect();
                if !missing.is_empty() {
                    problems.push(LintMessage::warning(
                        policy_file,
                        0,
                        format!(
                            "`{OWNER_ROLE}` lacks {}: an organization's owners cannot use or grant that",
                            missing.join(", ")
                        ),
                    ));
                }
            }
        }
        if !problems.iter().any(LintMessage::is_error) {
            problems.extend(check_with_casbin(model, model_file));
        }
        let (errors, warnings): (Vec<_>, Vec<_>) =
            problems.into_iter().partition(LintMessage::is_error);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            model_text: model.to_owned(),
            lines,
            builtin,
            source,
            policy_file: policy_file.to_owned(),
            warnings,
        })
    }

    /// The built-in roles' `p` lines as Casbin loads them: `("p", [role, "*", permission])`.
    pub fn builtin_lines(&self) -> Vec<(&'static str, Vec<String>)> {
        self.lines
            .iter()
            .map(|l| {
                (
                    "p",
                    vec![l.role.clone(), "*".into(), l.permission.as_str().into()],
                )
            })
            .collect()
    }

    pub fn builtin_permissions(&self, role: &str) -> Option<&BTreeSet<Permission>> {
        self.builtin.get(role)
    }
}

/// `(section, key) → (line, value)` of a model file, and the lines that are neither.
type ModelEntries = BTreeMap<(String, String), (usize, String)>;

fn model_entries(model: &str, file: &str) -> (ModelEntries, Vec<LintMessage>) {
    let mut problems = Vec::new();
    let mut entries = BTreeMap::new();
    let mut current = String::new();
    for (index, raw) in model.lines().enumerate() {
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with('[') {
            if !text.ends_with(']') {
                problems.push(LintMessage::error(
                    file,
                    index + 1,
                    format!("unterminated section header `{text}`"),
                ));
            }
            current = text.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let Some((key, value)) = text.split_once('=') else {
            problems.push(LintMessage::error(
                file,
                index + 1,
                format!("expected `key = value`, found `{text}`"),
            ));
            continue;
        };
        entries.insert(
            (current.clone(), key.trim().to_owned()),
            (index + 1, value.trim().to_owned()),
        );
    }
    (entries, problems)
}

/// The sections and request shape the server relies on; Casbin itself checks the rest
/// ([`check_with_casbin`]).
fn lint_model(model: &str, file: &str) -> Vec<LintMessage> {
    let (sections, mut problems) = model_entries(model, file);
    let expect = |section: &str, key: &str, fields: Option<&str>, problems: &mut Vec<_>| {
        match sections.get(&(section.to_owned(), key.to_owned())) {
            None => problems.push(LintMessage::error(
                file,
                0,
                format!("missing `{key}` in [{section}]"),
            )),
            Some((line, value)) => {
                if let Some(fields) = fields {
                    let normalized: String = value.chars().filter(|c| !c.is_whitespace()).collect();
                    if normalized != fields {
                        problems.push(LintMessage::error(
                            file,
                            *line,
                            format!(
                                "Tessera sends `{key} = {}` and loads lines of that shape; found `{value}`",
                                fields.replace(',', ", ")
                            ),
                        ));
                    }
                }
            }
        }
    };
    expect(
        "request_definition",
        "r",
        Some("sub,dom,acct,proj,act"),
        &mut problems,
    );
    expect("policy_definition", "p", Some("sub,dom,act"), &mut problems);
    expect("role_definition", "g", Some("_,_,_"), &mut problems);
    expect("policy_effect", "e", None, &mut problems);
    expect("matchers", "m", None, &mut problems);
    // Casbin panics on an effect it does not know, and the `p` lines carry no effect column,
    // so the deny-based effects it does know would read every line as allow.
    if let Some((line, value)) = sections.get(&("policy_effect".to_owned(), "e".to_owned())) {
        let normalized: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        if normalized != "some(where(p.eft==allow))" {
            problems.push(LintMessage::error(
                file,
                *line,
                format!("Tessera's `p` lines only allow: the effect must be `some(where (p.eft == allow))`, found `{value}`"),
            ));
        }
    }
    problems
}

/// Loads the model with Casbin, as the server does, and asks it one question shaped like the
/// server's, so that a matcher or effect Casbin cannot evaluate is found here rather than on
/// the first request. Run only on a model whose shape [`lint_model`] accepted.
fn check_with_casbin(model: &str, file: &str) -> Vec<LintMessage> {
    let (entries, _) = model_entries(model, file);
    let line_of = |section: &str, key: &str| {
        entries
            .get(&(section.to_owned(), key.to_owned()))
            .map_or(0, |(line, _)| *line)
    };
    let matcher_line = line_of("matchers", "m");
    let (org, account, project, user) = (
        Uuid::from_u128(1),
        Uuid::from_u128(2),
        Uuid::from_u128(3),
        Uuid::from_u128(4),
    );
    let role = "lint-sample";
    let lines = vec![
        (
            "p",
            vec![role.into(), "*".into(), Permission::OrgRead.as_str().into()],
        ),
        ("g", vec![user.to_string(), role.into(), org.to_string()]),
    ];
    let model = model.to_owned();
    let outcome = block_on(move || async move {
        let enforcer = enforcer_from_lines(&model, lines).await.map_err(|e| {
            let line = match &e {
                casbin::Error::ModelError(casbin::error::ModelError::R(_)) => {
                    line_of("request_definition", "r")
                }
                casbin::Error::ModelError(casbin::error::ModelError::P(_)) => {
                    line_of("policy_definition", "p")
                }
                casbin::Error::ModelError(casbin::error::ModelError::E(_)) => {
                    line_of("policy_effect", "e")
                }
                casbin::Error::ModelError(casbin::error::ModelError::M(_)) => matcher_line,
                _ => 0,
            };
            (
                line,
                format!("Casbin cannot load the model: {}", casbin_message(&e)),
            )
        })?;
        let mut allowed = Vec::new();
        for scope in [
            Scope::organization(org),
            Scope::project(org, account, project),
        ] {
            let decision =
                super::enforce(&enforcer, user, &scope, Permission::OrgRead).map_err(|e| {
                    (
                        matcher_line,
                        format!(
                            "Casbin cannot evaluate the matcher: {}",
                            service_error_message(&e)
                        ),
                    )
                })?;
            allowed.push(decision);
        }
        Ok::<_, (usize, String)>(allowed)
    });
    match outcome {
        Some(Ok(allowed)) if allowed.iter().all(|a| *a) => Vec::new(),
        Some(Ok(_)) => vec![LintMessage::warning(
            file,
            matcher_line,
            "a role granted at an organization does not get its own permission there and \
             below: every such decision will be deny",
        )],
        Some(Err((line, message))) => vec![LintMessage::error(file, line, message)],
        None => vec![LintMessage::error(
            file,
            0,
            "Casbin could not be run to check the model",
        )],
    }
}

/// Casbin's own words (its `Display` wraps them in `Debug` output).
fn casbin_message(e: &casbin::Error) -> String {
    match e {
        casbin::Error::ModelError(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// The cause a [`crate::error::ServiceError`] carries (its `Display` is deliberately opaque).
pub(crate) fn service_error_message(e: &crate::error::ServiceError) -> String {
    std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string)
}

/// A Casbin enforcer over `model` (loaded as [`super::build_enforcer`] loads it) and the given
/// `("p" | "g", fields)` lines, for the lint and `tessera policy test`.
pub(crate) async fn enforcer_from_lines(
    model: &str,
    lines: Vec<(&'static str, Vec<String>)>,
) -> casbin::Result<Enforcer> {
    let model = DefaultModel::from_str(model).await?;
    Enforcer::new(model, super::adapter::FixedAdapter(lines)).await
}

/// Runs Casbin's (async, but I/O-free for in-memory models and lines) loading to completion from
/// synchronous code, on a thread of its own so that it also works inside a runtime.
pub(crate) fn block_on<F, Fut>(make: F) -> Option<Fut::Output>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future,
    Fut::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .ok()
                .map(|rt| rt.block_on(make()))
        })
        .join()
        .ok()
        .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_files_lint_clean_and_define_the_four_roles() {
        let policy = PolicySet::embedded().expect("shipped policy lints clean");
        let names: Vec<&str> = policy.builtin.keys().map(String::as_str).collect();
        assert_eq!(names, ["admin", "member", "owner", "viewer"]);
        let owner = &policy.builtin["owner"];
        assert_eq!(owner.len(), Permission::ALL.len());
        assert!(!policy.builtin["admin"].contains(&Permission::OrgDelete));
        assert!(policy.builtin["viewer"]
            .iter()
            .all(|p| p.as_str().ends_with(":read")));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let csv = "# roles\np, viewer, *, org:read\np, viewer, *, org:read\np, viewer, *, org:own\ng, a, b, c\np, Bad Name, *, org:read\np, x, 123, org:read\np, y, *\n";
        let errs = PolicySet::parse(EMBEDDED_MODEL, csv, "m.conf", "p.csv", "t".into())
            .expect_err("invalid");
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8], "{errs:?}");
        assert!(errs[0].message.contains("duplicate"));
        assert!(errs[1].message.contains("unknown permission"));
        assert!(errs.iter().all(|e| e.file == "p.csv"));
    }

    #[test]
    fn casbin_loads_the_model_and_a_broken_matcher_is_an_error_at_its_line() {
        let m_line = EMBEDDED_MODEL
            .lines()
            .position(|l| l.starts_with("m ="))
            .expect("a matcher")
            + 1;
        let unbalanced = EMBEDDED_MODEL.replace("m = (g(r.sub", "m = ((g(r.sub");
        let errs = PolicySet::parse(&unbalanced, EMBEDDED_POLICY, "m.conf", "p.csv", "t".into())
            .expect_err("invalid");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .to_string()
                .starts_with(&format!("m.conf:{m_line}: Casbin cannot load the model")),
            "{errs:?}"
        );

        // Compiles, but names what the request does not have: found by the sample decision.
        let undefined = EMBEDDED_MODEL.replace("r.act == p.act", "r.act == p.action");
        let errs = PolicySet::parse(&undefined, EMBEDDED_POLICY, "m.conf", "p.csv", "t".into())
            .expect_err("invalid");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, m_line);
        assert!(errs[0].message.contains("cannot evaluate"), "{errs:?}");
    }

    #[test]
    fn an_effect_other_than_allow_is_refused_before_casbin_panics_on_it() {
        for effect in ["!some(where (p.eft == deny))", "first(p.eft)"] {
            let model = EMBEDDED_MODEL.replace("some(where (p.eft == allow))", effect);
            let errs = PolicySet::parse(&model, EMBEDDED_POLICY, "m.conf", "p.csv", "t".into())
                .expect_err("invalid");
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(errs[0].message.contains("effect"), "{errs:?}");
        }
    }

    #[test]
    fn a_model_that_denies_a_role_where_it_is_granted_is_a_warning() {
        let model = EMBEDDED_MODEL.replace("r.act == p.act", "r.act != p.act");
        let policy = PolicySet::parse(&model, EMBEDDED_POLICY, "m.conf", "p.csv", "t".into())
            .expect("usable, if useless");
        assert_eq!(policy.warnings.len(), 1);
        assert_eq!(policy.warnings[0].severity, Severity::Warning);
        assert!(policy.warnings[0].to_string().contains(": warning: "));
    }

    #[test]
    fn owner_is_required_and_should_hold_the_whole_vocabulary() {
        let errs = PolicySet::parse(
            EMBEDDED_MODEL,
            "p, viewer, *, org:read\n",
            "m.conf",
            "p.csv",
            "t".into(),
        )
        .expect_err("no owner");
        assert_eq!(
            errs[0].to_string(),
            "p.csv: no `owner` role: the creator of an organization is granted `owner`"
        );

        let policy = PolicySet::parse(
            EMBEDDED_MODEL,
            "p, owner, *, org:read\n",
            "m.conf",
            "p.csv",
            "t".into(),
        )
        .expect("a warning only");
        assert_eq!(policy.warnings.len(), 1);
        assert!(policy.warnings[0].message.contains("org:delete"));
    }

    #[test]
    fn a_model_of_another_shape_is_refused() {
        let model = EMBEDDED_MODEL.replace("r = sub, dom, acct, proj, act", "r = sub, obj, act");
        let errs = PolicySet::parse(&model, EMBEDDED_POLICY, "m.conf", "p.csv", "t".into())
            .expect_err("invalid");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].file, "m.conf");
        assert!(errs[0].line > 0);
    }
}

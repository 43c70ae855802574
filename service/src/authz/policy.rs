//! The policy files: `model.conf` (the Casbin model) and `policy.csv` (built-in roles as
//! permission sets), compiled in as the default or read from `policy.dir`, and linted on load.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::vocabulary::Permission;

pub const EMBEDDED_MODEL: &str = include_str!("../../../policies/model.conf");
pub const EMBEDDED_POLICY: &str = include_str!("../../../policies/policy.csv");

/// A problem found in a policy file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintMessage {
    pub file: String,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LintMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
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
                .map_err(|e| LintMessage {
                    file: shown,
                    line: 0,
                    message: format!("cannot read: {e}"),
                })
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

    /// Parses and lints both files; every problem is reported, not only the first.
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
            let mut problem = |message: String| {
                problems.push(LintMessage {
                    file: policy_file.to_owned(),
                    line,
                    message,
                })
            };
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
        if lines.is_empty() && problems.is_empty() {
            problems.push(LintMessage {
                file: policy_file.to_owned(),
                line: 0,
                message: "defines no role".into(),
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut builtin: BTreeMap<String, BTreeSet<Permission>> = BTreeMap::new();
        for l in &lines {
            builtin
                .entry(l.role.clone())
                .or_default()
                .insert(l.permission);
        }
        Ok(Self {
            model_text: model.to_owned(),
            lines,
            builtin,
            source,
        })
    }

    pub fn builtin_permissions(&self, role: &str) -> Option<&BTreeSet<Permission>> {
        self.builtin.get(role)
    }
}

/// The sections and request shape the server relies on; Casbin itself checks the rest when the
/// model is loaded (see [`super::build_enforcer`]).
fn lint_model(model: &str, file: &str) -> Vec<LintMessage> {
    let mut problems = Vec::new();
    let mut sections = BTreeMap::new();
    let mut current = String::new();
    for (index, raw) in model.lines().enumerate() {
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with('[') {
            if !text.ends_with(']') {
                problems.push(LintMessage {
                    file: file.to_owned(),
                    line: index + 1,
                    message: format!("unterminated section header `{text}`"),
                });
            }
            current = text.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let Some((key, value)) = text.split_once('=') else {
            problems.push(LintMessage {
                file: file.to_owned(),
                line: index + 1,
                message: format!("expected `key = value`, found `{text}`"),
            });
            continue;
        };
        sections.insert(
            (current.clone(), key.trim().to_owned()),
            (index + 1, value.trim().to_owned()),
        );
    }
    let expect = |section: &str, key: &str, fields: Option<&str>, problems: &mut Vec<_>| {
        match sections.get(&(section.to_owned(), key.to_owned())) {
            None => problems.push(LintMessage {
                file: file.to_owned(),
                line: 0,
                message: format!("missing `{key}` in [{section}]"),
            }),
            Some((line, value)) => {
                if let Some(fields) = fields {
                    let normalized: String = value.chars().filter(|c| !c.is_whitespace()).collect();
                    if normalized != fields {
                        problems.push(LintMessage {
                            file: file.to_owned(),
                            line: *line,
                            message: format!(
                                "Tessera sends `{key} = {}` and loads lines of that shape; found `{value}`",
                                fields.replace(',', ", ")
                            ),
                        });
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
    problems
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
    fn a_model_of_another_shape_is_refused() {
        let model = EMBEDDED_MODEL.replace("r = sub, dom, acct, proj, act", "r = sub, obj, act");
        let errs = PolicySet::parse(&model, EMBEDDED_POLICY, "m.conf", "p.csv", "t".into())
            .expect_err("invalid");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].file, "m.conf");
        assert!(errs[0].line > 0);
    }
}

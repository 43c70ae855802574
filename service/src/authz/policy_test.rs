//! `tessera policy test`: expected decisions in `DIR/tests/*.csv`, asked of Casbin over the
//! policy's model and lines in a synthetic organization (the format is in `policies/README.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use uuid::Uuid;

use super::policy::{block_on, enforcer_from_lines, service_error_message, LintMessage, PolicySet};
use super::vocabulary::Permission;
use super::Scope;

/// Organization O: accounts A and B, project P under A and Q under B; O2 is another tenant.
const ORG: Uuid = Uuid::from_u128(0x0a);
const ACCOUNT: Uuid = Uuid::from_u128(0x0b);
const PROJECT: Uuid = Uuid::from_u128(0x0c);
const SIBLING_ACCOUNT: Uuid = Uuid::from_u128(0x0d);
const SIBLING_PROJECT: Uuid = Uuid::from_u128(0x0e);
const OTHER_ORG: Uuid = Uuid::from_u128(0x0f);

/// The role every organization's creator gets: the vocabulary, whole; its lines need no case.
const OWNER_ROLE: &str = "owner";

/// A named place in the synthetic organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Organization,
    Account,
    Project,
    SiblingAccount,
    SiblingProject,
    OtherOrganization,
}

impl Place {
    pub const ALL: [Place; 6] = [
        Place::Organization,
        Place::Account,
        Place::Project,
        Place::SiblingAccount,
        Place::SiblingProject,
        Place::OtherOrganization,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Place::Organization => "organization",
            Place::Account => "account",
            Place::Project => "project",
            Place::SiblingAccount => "sibling-account",
            Place::SiblingProject => "sibling-project",
            Place::OtherOrganization => "other-organization",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The scope as the server would resolve it (a project carries its account).
    pub fn scope(self) -> Scope {
        match self {
            Place::Organization => Scope::organization(ORG),
            Place::Account => Scope::account(ORG, ACCOUNT),
            Place::Project => Scope::project(ORG, ACCOUNT, PROJECT),
            Place::SiblingAccount => Scope::account(ORG, SIBLING_ACCOUNT),
            Place::SiblingProject => Scope::project(ORG, SIBLING_ACCOUNT, SIBLING_PROJECT),
            Place::OtherOrganization => Scope::organization(OTHER_ORG),
        }
    }
}

/// `role, <name>, <permission> <permission> …`: a custom role of organization O, for this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomRole {
    pub line: usize,
    pub permissions: Vec<Permission>,
}

/// `<role>, <granted at>, <asked at>, <permission>, allow|deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub line: usize,
    pub role: String,
    pub granted_at: Place,
    pub asked_at: Place,
    pub permission: Permission,
    pub allow: bool,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` granted at {}, asked at {} for `{}`",
            self.role,
            self.granted_at.as_str(),
            self.asked_at.as_str(),
            self.permission
        )
    }
}

/// One file of `DIR/tests/`.
#[derive(Debug, Clone, Default)]
pub struct TestFile {
    pub file: String,
    pub roles: BTreeMap<String, CustomRole>,
    pub cases: Vec<Case>,
}

fn verdict(allow: bool) -> &'static str {
    if allow {
        "allow"
    } else {
        "deny"
    }
}

/// Parses one test file; every problem is reported with its line.
pub fn parse_file(text: &str, file: &str) -> (TestFile, Vec<LintMessage>) {
    let mut parsed = TestFile {
        file: file.to_owned(),
        ..TestFile::default()
    };
    let mut problems = Vec::new();
    let mut seen: BTreeMap<(String, Place, Place, Permission), usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let mut problem = |message: String| problems.push(LintMessage::error(file, line, message));
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        match fields.as_slice() {
            ["role", name, permissions] => {
                if crate::domain::RoleName::parse(name).is_err() {
                    problem(format!(
                        "`{name}` is not a valid role name (lowercase letters, digits, `-`, `_`; 1 to 64 characters)"
                    ));
                    continue;
                }
                let mut perms = Vec::new();
                for p in permissions.split_whitespace() {
                    match p.parse::<Permission>() {
                        Ok(p) if perms.contains(&p) => {
                            problem(format!("`{p}` is listed twice for `{name}`"))
                        }
                        Ok(p) => perms.push(p),
                        Err(_) => problem(unknown_permission(p)),
                    }
                }
                if let Some(first) = parsed.roles.get(*name) {
                    problem(format!(
                        "role `{name}` is already declared (line {})",
                        first.line
                    ));
                    continue;
                }
                parsed.roles.insert(
                    (*name).to_owned(),
                    CustomRole {
                        line,
                        permissions: perms,
                    },
                );
            }
            [role, granted, asked, permission, expected] => {
                let granted_at = Place::parse(granted);
                let asked_at = Place::parse(asked);
                let perm = permission.parse::<Permission>().ok();
                let allow = match *expected {
                    "allow" => Some(true),
                    "deny" => Some(false),
                    _ => None,
                };
                for (field, value, known) in [
                    ("granted at", granted, granted_at.is_some()),
                    ("asked at", asked, asked_at.is_some()),
                ] {
                    if !known {
                        problem(format!(
                            "unknown place `{value}` ({field}); known: {}",
                            Place::ALL.map(Place::as_str).join(", ")
                        ));
                    }
                }
                if perm.is_none() {
                    problem(unknown_permission(permission));
                }
                if allow.is_none() {
                    problem(format!("expected `allow` or `deny`, found `{expected}`"));
                }
                let (Some(granted_at), Some(asked_at), Some(permission), Some(allow)) =
                    (granted_at, asked_at, perm, allow)
                else {
                    continue;
                };
                if let Some(first) =
                    seen.insert(((*role).to_owned(), granted_at, asked_at, permission), line)
                {
                    problem(format!("duplicate case (line {first})"));
                    continue;
                }
                parsed.cases.push(Case {
                    line,
                    role: (*role).to_owned(),
                    granted_at,
                    asked_at,
                    permission,
                    allow,
                });
            }
            _ => problem(format!(
                "expected `<role>, <granted at>, <asked at>, <permission>, allow|deny` or \
                 `role, <name>, <permissions>`, found {} fields",
                fields.len()
            )),
        }
    }
    (parsed, problems)
}

fn unknown_permission(p: &str) -> String {
    format!(
        "unknown permission `{p}`; known: {}",
        Permission::ALL.map(Permission::as_str).join(", ")
    )
}

/// Every `DIR/tests/*.csv`, in name order. No `tests/` directory is a warning, not an error.
pub fn load_dir(dir: &Path) -> (Vec<TestFile>, Vec<LintMessage>) {
    let tests = dir.join("tests");
    let shown = tests.display().to_string();
    let entries = match std::fs::read_dir(&tests) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (
                Vec::new(),
                vec![LintMessage::warning(
                    shown,
                    0,
                    "no tests directory: `tessera policy test` has no case to run",
                )],
            )
        }
        Err(e) => {
            return (
                Vec::new(),
                vec![LintMessage::error(shown, 0, format!("cannot read: {e}"))],
            )
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "csv"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (file, mut found) = parse_file(&text, &shown);
                files.push(file);
                problems.append(&mut found);
            }
            Err(e) => problems.push(LintMessage::error(shown, 0, format!("cannot read: {e}"))),
        }
    }
    if files.is_empty() && problems.is_empty() {
        problems.push(LintMessage::warning(
            tests.display().to_string(),
            0,
            "no `*.csv` file: `tessera policy test` has no case to run",
        ));
    }
    (files, problems)
}

/// A case's role must be a built-in role of the policy or declared in its file, and a declared
/// role must not hide a built-in one.
pub fn check_roles(files: &[TestFile], policy: &PolicySet) -> Vec<LintMessage> {
    let mut problems = Vec::new();
    for f in files {
        for (name, role) in &f.roles {
            if policy.builtin.contains_key(name) {
                problems.push(LintMessage::error(
                    &f.file,
                    role.line,
                    format!("`{name}` is a built-in role of {}; declare custom roles under another name", policy.policy_file),
                ));
            }
        }
        for case in &f.cases {
            if !policy.builtin.contains_key(&case.role) && !f.roles.contains_key(&case.role) {
                problems.push(LintMessage::error(
                    &f.file,
                    case.line,
                    format!(
                        "unknown role `{}`: no `p` line of {} defines it and this file does not declare it (`role, {}, <permissions>`)",
                        case.role, policy.policy_file, case.role
                    ),
                ));
            }
        }
    }
    problems
}

/// What `tessera policy lint DIR` finds: the policy files and the test files.
#[derive(Debug)]
pub struct LintReport {
    pub policy: Option<PolicySet>,
    pub tests: Vec<TestFile>,
    pub messages: Vec<LintMessage>,
}

impl LintReport {
    pub fn errors(&self) -> usize {
        self.messages.iter().filter(|m| m.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.messages.len() - self.errors()
    }
}

impl fmt::Display for LintReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.messages {
            writeln!(f, "{m}")?;
        }
        write!(
            f,
            "{} error(s), {} warning(s)",
            self.errors(),
            self.warnings()
        )
    }
}

/// Lints `dir/model.conf`, `dir/policy.csv` and `dir/tests/*.csv`.
pub fn lint_dir(dir: &Path) -> LintReport {
    let (policy, mut messages) = match PolicySet::from_dir(dir) {
        Ok(policy) => {
            let warnings = policy.warnings.clone();
            (Some(policy), warnings)
        }
        Err(errors) => (None, errors),
    };
    let (tests, mut found) = load_dir(dir);
    messages.append(&mut found);
    if let Some(policy) = &policy {
        messages.extend(check_roles(&tests, policy));
    }
    LintReport {
        policy,
        tests,
        messages,
    }
}

/// What `tessera policy test DIR` finds.
#[derive(Debug)]
pub struct TestReport {
    pub lint: LintReport,
    pub cases: usize,
    /// One per failing case, at its line.
    pub failures: Vec<LintMessage>,
    /// The `p` lines (other than the owner's) no case exercised.
    pub unexercised: Vec<LintMessage>,
}

impl TestReport {
    /// No lint error and no failing case (unexercised lines are reported, not failed).
    pub fn passed(&self) -> bool {
        self.lint.errors() == 0 && self.failures.is_empty()
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in self.lint.messages.iter().chain(&self.failures) {
            writeln!(f, "{m}")?;
        }
        if self.lint.errors() > 0 {
            return write!(f, "{} lint error(s): no case was run", self.lint.errors());
        }
        for m in &self.unexercised {
            writeln!(f, "{m}")?;
        }
        write!(f, "{} cases, {} failed", self.cases, self.failures.len())?;
        match self.unexercised.len() {
            0 => write!(f, "; every policy line exercised"),
            n => write!(f, "; {n} policy line(s) not exercised by any case"),
        }
    }
}

/// Lints `dir`, then asks Casbin every case of every test file.
pub fn run_dir(dir: &Path) -> TestReport {
    let lint = lint_dir(dir);
    let mut report = TestReport {
        cases: 0,
        failures: Vec::new(),
        unexercised: Vec::new(),
        lint,
    };
    let Some(policy) = report
        .lint
        .policy
        .as_ref()
        .filter(|_| report.lint.errors() == 0)
    else {
        return report;
    };
    let mut exercised: BTreeSet<(String, Permission)> = BTreeSet::new();
    for file in &report.lint.tests {
        let (failures, allowed) = run_file(policy, file);
        report.cases += file.cases.len();
        report.failures.extend(failures);
        exercised.extend(
            allowed
                .into_iter()
                .filter(|k| !file.roles.contains_key(&k.0)),
        );
    }
    report.unexercised = policy
        .lines
        .iter()
        .filter(|l| l.role != OWNER_ROLE)
        .filter(|l| !exercised.contains(&(l.role.clone(), l.permission)))
        .map(|l| {
            LintMessage::warning(
                &policy.policy_file,
                l.line,
                format!("no case exercises `p, {}, *, {}`", l.role, l.permission),
            )
        })
        .collect();
    report
}

/// One enforcer per file: the policy's `p` lines, the file's custom roles (as the server loads
/// an organization's: `p, <role>, <organization id>, <permission>`), and one synthetic user per
/// case with the case's grant. Returns the failures and the `(role, permission)` pairs some
/// case saw allowed.
fn run_file(
    policy: &PolicySet,
    file: &TestFile,
) -> (Vec<LintMessage>, BTreeSet<(String, Permission)>) {
    let user = |index: usize| Uuid::from_u128(0x1_0000 + index as u128);
    let mut lines = policy.builtin_lines();
    for (name, role) in &file.roles {
        for p in &role.permissions {
            lines.push(("p", vec![name.clone(), ORG.to_string(), p.as_str().into()]));
        }
    }
    for (index, case) in file.cases.iter().enumerate() {
        lines.push((
            "g",
            vec![
                user(index).to_string(),
                case.role.clone(),
                case.granted_at.scope().id().to_string(),
            ],
        ));
    }
    let model = policy.model_text.clone();
    let cases = file.cases.clone();
    let outcome = block_on(move || async move {
        let enforcer = enforcer_from_lines(&model, lines)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(
            cases
                .iter()
                .enumerate()
                .map(|(index, case)| {
                    super::enforce(
                        &enforcer,
                        user(index),
                        &case.asked_at.scope(),
                        case.permission,
                    )
                    .map_err(|e| service_error_message(&e))
                })
                .collect::<Vec<_>>(),
        )
    });
    let decisions = match outcome {
        Some(Ok(decisions)) => decisions,
        Some(Err(e)) => {
            return (
                vec![LintMessage::error(
                    &file.file,
                    0,
                    format!("Casbin cannot load the policy with this file's lines: {e}"),
                )],
                BTreeSet::new(),
            )
        }
        None => {
            return (
                vec![LintMessage::error(&file.file, 0, "Casbin could not be run")],
                BTreeSet::new(),
            )
        }
    };
    let mut failures = Vec::new();
    let mut allowed = BTreeSet::new();
    for (case, decision) in file.cases.iter().zip(decisions) {
        match decision {
            Ok(got) => {
                if got {
                    allowed.insert((case.role.clone(), case.permission));
                }
                if got != case.allow {
                    failures.push(LintMessage::error(
                        &file.file,
                        case.line,
                        format!(
                            "{case}: expected {}, got {}",
                            verdict(case.allow),
                            verdict(got)
                        ),
                    ));
                }
            }
            Err(e) => failures.push(LintMessage::error(
                &file.file,
                case.line,
                format!("{case}: Casbin failed: {e}"),
            )),
        }
    }
    (failures, allowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::policy::Severity;

    #[test]
    fn places_round_trip_and_nest() {
        for p in Place::ALL {
            assert_eq!(Place::parse(p.as_str()), Some(p));
        }
        assert!(Place::Project.scope().within(&Place::Account.scope()));
        assert!(!Place::SiblingProject
            .scope()
            .within(&Place::Account.scope()));
        assert!(!Place::OtherOrganization
            .scope()
            .within(&Place::Organization.scope()));
    }

    #[test]
    fn every_malformed_line_is_reported_with_its_line() {
        let text = "# comment\n\
                    viewer, organization, project, project:read, allow\n\
                    viewer, org, project, project:read, allow\n\
                    viewer, organization, project, project:own, allow\n\
                    viewer, organization, project, project:read, maybe\n\
                    viewer, organization, project, project:read, deny\n\
                    role, auditor, org:read org:nope\n\
                    role, auditor, org:read\n\
                    viewer, organization\n";
        let (file, problems) = parse_file(text, "t.csv");
        let at: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(at, [3, 4, 5, 6, 7, 8, 9], "{problems:?}");
        assert!(problems[0]
            .to_string()
            .starts_with("t.csv:3: unknown place `org`"));
        assert!(problems[3].message.contains("duplicate case (line 2)"));
        assert_eq!(file.cases.len(), 1);
        assert_eq!(file.roles["auditor"].permissions, [Permission::OrgRead]);
        assert!(problems.iter().all(|p| p.severity == Severity::Error));
    }

    fn shipped() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    /// A copy of the shipped directory, edited by `edit(file name, text) -> text`.
    fn broken_copy(edit: impl Fn(&str, String) -> String) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("tests")).expect("tests dir");
        for name in [
            "model.conf",
            "policy.csv",
            "tests/builtin.csv",
            "tests/custom-roles.csv",
        ] {
            let text = std::fs::read_to_string(shipped().join(name)).expect("shipped file");
            std::fs::write(dir.path().join(name), edit(name, text)).expect("write copy");
        }
        dir
    }

    fn line_of(text: &str, starts_with: &str) -> usize {
        text.lines()
            .position(|l| l.starts_with(starts_with))
            .expect("line present")
            + 1
    }

    #[test]
    fn the_shipped_files_lint_clean_and_pass_with_every_line_exercised() {
        let lint = lint_dir(&shipped());
        assert!(lint.messages.is_empty(), "{lint}");
        let report = run_dir(&shipped());
        assert!(report.passed(), "{report}");
        assert!(report.unexercised.is_empty(), "{report}");
        assert!(report.cases >= 4 * Permission::ALL.len(), "{report}");
        assert!(report
            .to_string()
            .ends_with("0 failed; every policy line exercised"));
    }

    #[test]
    fn the_shipped_tests_cover_every_builtin_role_and_permission_at_the_organization() {
        let (files, problems) = load_dir(&shipped());
        assert!(problems.is_empty(), "{problems:?}");
        let policy = PolicySet::from_dir(&shipped()).expect("shipped policy");
        let covered: BTreeSet<(&str, Permission)> = files
            .iter()
            .flat_map(|f| &f.cases)
            .filter(|c| c.granted_at == Place::Organization && c.asked_at == Place::Organization)
            .map(|c| (c.role.as_str(), c.permission))
            .collect();
        for role in policy.builtin.keys() {
            for p in Permission::ALL {
                assert!(covered.contains(&(role.as_str(), p)), "{role} × {p}");
            }
        }
    }

    #[test]
    fn a_broken_policy_is_reported_at_file_and_line() {
        let policy = std::fs::read_to_string(shipped().join("policy.csv")).expect("policy");
        let bad_perm = line_of(&policy, "p, viewer, *, role:read");
        let dir = broken_copy(|name, text| match name {
            "policy.csv" => text.replace(
                "p, viewer, *, role:read\n",
                "p, viewer, *, role:reed\np, viewer, *, org:read\n",
            ),
            _ => text,
        });
        let lint = lint_dir(dir.path());
        let shown: Vec<String> = lint.messages.iter().map(ToString::to_string).collect();
        let file = dir.path().join("policy.csv").display().to_string();
        assert_eq!(lint.errors(), 2, "{lint}");
        assert!(
            shown[0].starts_with(&format!(
                "{file}:{bad_perm}: unknown permission `role:reed`"
            )),
            "{lint}"
        );
        assert!(
            shown[1].starts_with(&format!("{file}:{}: duplicate line", bad_perm + 1)),
            "{lint}"
        );
        let report = run_dir(dir.path());
        assert!(!report.passed());
        assert_eq!(report.cases, 0);
    }

    #[test]
    fn an_unknown_role_in_a_test_is_a_lint_error() {
        let dir = broken_copy(|name, text| match name {
            "tests/custom-roles.csv" => {
                text + "auditors, organization, organization, org:read, allow\n"
            }
            _ => text,
        });
        let file = dir.path().join("tests/custom-roles.csv");
        let last = std::fs::read_to_string(&file)
            .expect("copy")
            .lines()
            .count();
        let lint = lint_dir(dir.path());
        assert_eq!(lint.errors(), 1, "{lint}");
        assert!(
            lint.messages[0].to_string().starts_with(&format!(
                "{}:{last}: unknown role `auditors`",
                file.display()
            )),
            "{lint}"
        );
        assert!(!run_dir(dir.path()).passed());
    }

    #[test]
    fn a_failing_expectation_is_reported_at_its_line_and_its_line_left_unexercised() {
        let builtin = std::fs::read_to_string(shipped().join("tests/builtin.csv")).expect("tests");
        let wrong = line_of(
            &builtin,
            "viewer, organization, organization, org:update, deny",
        );
        let removed = line_of(
            &builtin,
            "member, organization, organization, role:read, allow",
        );
        let dir = broken_copy(|name, text| match name {
            "tests/builtin.csv" => text
                .replace(
                    "viewer, organization, organization, org:update, deny",
                    "viewer, organization, organization, org:update, allow",
                )
                .replace(
                    "member, organization, organization, role:read, allow",
                    "# removed",
                ),
            _ => text,
        });
        let report = run_dir(dir.path());
        assert!(!report.passed(), "{report}");
        assert_eq!(report.failures.len(), 1, "{report}");
        let file = dir.path().join("tests/builtin.csv").display().to_string();
        assert_eq!(
            report.failures[0].to_string(),
            format!("{file}:{wrong}: `viewer` granted at organization, asked at organization for `org:update`: expected allow, got deny")
        );
        assert_ne!(wrong, removed);
        let policy = std::fs::read_to_string(shipped().join("policy.csv")).expect("policy");
        let member_role_read = line_of(&policy, "p, member, *, role:read");
        assert_eq!(report.unexercised.len(), 1, "{report}");
        assert_eq!(report.unexercised[0].line, member_role_read);
        assert!(
            report
                .to_string()
                .ends_with("1 failed; 1 policy line(s) not exercised by any case"),
            "{report}"
        );
    }

    #[test]
    fn unexercised_owner_lines_are_not_listed() {
        let dir = broken_copy(|name, text| match name {
            "tests/builtin.csv" => text
                .lines()
                .filter(|l| !l.starts_with("owner,"))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => text,
        });
        let report = run_dir(dir.path());
        assert!(report.passed(), "{report}");
        assert!(report.unexercised.is_empty(), "{report}");
    }

    #[test]
    fn a_broken_matcher_fails_lint_and_test_at_the_matcher_line() {
        let model = std::fs::read_to_string(shipped().join("model.conf")).expect("model");
        let m_line = line_of(&model, "m =");
        let dir = broken_copy(|name, text| match name {
            "model.conf" => text.replace("m = (g(r.sub", "m = ((g(r.sub"),
            _ => text,
        });
        let lint = lint_dir(dir.path());
        assert_eq!(lint.errors(), 1, "{lint}");
        let file = dir.path().join("model.conf").display().to_string();
        assert!(
            lint.messages[0]
                .to_string()
                .starts_with(&format!("{file}:{m_line}: Casbin cannot load the model")),
            "{lint}"
        );
        let report = run_dir(dir.path());
        assert!(!report.passed());
        assert!(report.to_string().ends_with("no case was run"), "{report}");
    }

    #[test]
    fn custom_roles_in_a_test_file_may_not_shadow_builtin_ones() {
        let dir = broken_copy(|name, text| match name {
            "tests/custom-roles.csv" => text + "role, viewer, org:read\n",
            _ => text,
        });
        let lint = lint_dir(dir.path());
        assert_eq!(lint.errors(), 1, "{lint}");
        assert!(lint.messages[0].message.contains("built-in role"), "{lint}");
    }

    #[test]
    fn the_readme_lists_the_whole_vocabulary() {
        let readme = std::fs::read_to_string(shipped().join("README.md")).expect("README");
        for p in Permission::ALL {
            let row = format!("| `{p}` | {} |", p.description());
            assert!(readme.contains(&row), "policies/README.md lacks `{row}`");
        }
        for place in Place::ALL {
            assert!(
                readme.contains(&format!("| `{}` |", place.as_str())),
                "{place:?}"
            );
        }
    }
}

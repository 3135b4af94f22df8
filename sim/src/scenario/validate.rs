//! Reading a scenario: parse RON (with line and column on error),
//! cross-field validation (names resolve, ranges make sense, limits hold),
//! and locating a field path in the text so an error points at its value.
//! The schema types are in the parent module.

use super::*;

impl Scenario {
    /// Parse RON text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
        // `implicit_some`: optional fields are written as plain values
        // (`lease_duration_ms: 8000`), not `Some(8000)`.
        let options = ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
        let s: Scenario = options.from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_string(),
            line: e.span.start.line,
            col: e.span.start.col,
            message: e.code.to_string(),
        })?;
        s.check().map_err(|e| {
            let (line, col) = locate(text, &e.field);
            ScenarioError::Invalid { path: path.to_string(), line, col, message: e.to_string() }
        })?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|err| ScenarioError::Io { path: path.display().to_string(), err })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Canonical RON text of this scenario (for resolved scenarios).
    pub fn to_ron(&self) -> String {
        // Depth 2: one line per node, agent and timeline step.
        let cfg = ron::ser::PrettyConfig::new()
            .struct_names(true)
            .depth_limit(2)
            .extensions(ron::extensions::Extensions::IMPLICIT_SOME);
        // Serializing plain data with string keys cannot fail.
        ron::ser::to_string_pretty(self, cfg).expect("scenario serializes")
    }

    /// Cross-field checks: names resolve, ranges make sense. The message
    /// starts with the offending field's path (`timeline[3].at_ms: ...`).
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())
    }

    /// [`Scenario::validate`] with the field path kept apart, so that
    /// [`Scenario::parse`] can point at the value in the file.
    pub fn check(&self) -> Result<(), FieldError> {
        let err = |field: String, message: String| Err(FieldError { field, message });
        if self.duration_s == 0 || self.duration_s > MAX_DURATION_S {
            return err("duration_s".into(), format!("{} is outside 1..={MAX_DURATION_S}", self.duration_s));
        }
        if self.step_ms == 0 || self.step_ms > 1000 {
            return err("step_ms".into(), format!("{} is outside 1..=1000", self.step_ms));
        }
        if self.timeline.len() > MAX_TIMELINE_STEPS {
            return err("timeline".into(), format!("{} steps (limit {MAX_TIMELINE_STEPS})", self.timeline.len()));
        }
        let (lo, hi) = self.network.latency_ms;
        if lo > hi {
            return err("network.latency_ms".into(), format!("({lo}, {hi}) is not a range"));
        }
        if !(0.0..=1.0).contains(&self.network.loss) {
            return err("network.loss".into(), format!("{} is not a probability", self.network.loss));
        }
        let mut nodes = std::collections::BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Err(e) = igor::units::NodeId::new(n.name.clone()) {
                return err(format!("nodes[{i}].name"), e.to_string());
            }
            if !nodes.insert(n.name.as_str()) {
                return err(format!("nodes[{i}].name"), format!("duplicate node {:?}", n.name));
            }
            if n.name == RESERVED_NODE {
                let why = "is the host name of the simulator's own trace lines";
                return err(format!("nodes[{i}].name"), format!("{RESERVED_NODE:?} {why}"));
            }
            if n.price_microcents < 0 {
                return err(format!("nodes[{i}].price_microcents"), format!("{} is negative", n.price_microcents));
            }
            // Zero would make the node due again at the same instant
            // forever (a livelock outside testing found with a zero lease).
            for (field, v) in [
                ("lease_duration_ms", n.lease_duration_ms),
                ("tick_interval_ms", n.tick_interval_ms),
                ("checkpoint_interval_ms", n.checkpoint_interval_ms),
            ] {
                if v == Some(0) {
                    return err(format!("nodes[{i}].{field}"), "must be at least 1 ms".into());
                }
            }
            // Spec §5 clock bound: the lease grace must exceed S.
            let skew_ms = igor::migration::MigrationConfig::default().max_clock_skew_ns / 1_000_000;
            if let Some(g) = n.lease_grace_ms.filter(|g| *g <= skew_ms) {
                return err(
                    format!("nodes[{i}].lease_grace_ms"),
                    format!("{g} must exceed the clock bound S = {skew_ms} ms (spec §5: S < grace)"),
                );
            }
        }
        let node = |field: String, name: &str| {
            if nodes.contains(name) { Ok(()) } else { err(field, format!("unknown node {name:?}")) }
        };
        let mut agents = std::collections::BTreeSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            let id = match igor::units::AgentId::new(a.name.clone()) {
                Ok(id) => id,
                Err(e) => return err(format!("agents[{i}].name"), e.to_string()),
            };
            if let Some(key) = agent_key(&id)
                && igor::identity::check_agent_key(&id, &key.public()).is_err()
            {
                let label = igor::identity::agent_label(&id);
                let right = igor::identity::tagged_agent_id(label, &key.public())
                    .map(|i| i.to_string())
                    .unwrap_or_else(|e| e.to_string());
                return err(
                    format!("agents[{i}].name"),
                    format!("the tag is not the simulator's key for label {label:?}: the id is {right:?}"),
                );
            }
            if !agents.insert(a.name.as_str()) {
                return err(format!("agents[{i}].name"), format!("duplicate agent {:?}", a.name));
            }
            node(format!("agents[{i}].node"), &a.node)?;
            if a.budget_microcents < 0 {
                return err(format!("agents[{i}].budget_microcents"), format!("{} is negative", a.budget_microcents));
            }
        }
        let agent = |field: String, name: &str| {
            if agents.contains(name) { Ok(()) } else { err(field, format!("unknown agent {name:?}")) }
        };
        for (i, step) in self.timeline.iter().enumerate() {
            let f = format!("timeline[{i}]");
            if step.at_ms > self.duration_s * 1000 {
                return err(format!("{f}.at_ms"), format!("{} is after the end of the run", step.at_ms));
            }
            for (field, n) in step.action.node_fields() {
                node(format!("{f}.action.{field}"), n)?;
            }
            if let Some(a) = step.action.agent() {
                let field = if matches!(step.action, Action::Restart { .. }) { "storage.agent" } else { "agent" };
                agent(format!("{f}.action.{field}"), a)?;
            }
            match &step.action {
                Action::Duplicate { probability, .. } | Action::Corrupt { probability, .. }
                    if !(0.0..=1.0).contains(probability) =>
                {
                    return err(format!("{f}.action.probability"), format!("{probability} is not a probability"));
                }
                Action::Drift { ppm, .. } if ppm.unsigned_abs() > MAX_DRIFT_PPM => {
                    return err(format!("{f}.action.ppm"), format!("{ppm} is outside ±{MAX_DRIFT_PPM}"));
                }
                // A reordering delay beyond the longest run only ever holds
                // a request past the end (the net twin copes with any u64,
                // but such a bound is a typo, not a fault to explore).
                Action::Reorder { max_delay_ms, .. } if *max_delay_ms > MAX_DURATION_S * 1000 => {
                    return err(
                        format!("{f}.action.max_delay_ms"),
                        format!("{max_delay_ms} is outside 0..={} (the longest run)", MAX_DURATION_S * 1000),
                    );
                }
                Action::Swizzle { nodes, .. } if nodes.is_empty() => {
                    return err(format!("{f}.action.nodes"), "empty".into());
                }
                Action::DiskFault { for_ms: 0, .. } => {
                    return err(format!("{f}.action.for_ms"), "0 (a disk fault lasts at least 1 ms)".into());
                }
                _ => {}
            }
        }
        for (n, per_agent) in &self.expect.authority {
            node(format!("expect.authority.{n}"), n)?;
            for a in per_agent.keys() {
                agent(format!("expect.authority.{n}.{a}"), a)?;
            }
        }
        for a in self.expect.ticks.keys() {
            agent(format!("expect.ticks.{a}"), a)?;
        }
        if let Some(l) = &self.expect.liveness
            && (l.within_ms == 0 || l.within_ms > MAX_LIVENESS_MS)
        {
            return err(
                "expect.liveness.within_ms".into(),
                format!("{} is outside 1..={MAX_LIVENESS_MS}", l.within_ms),
            );
        }
        if let Some(e) = &self.explore {
            // explore's messages start with their field path.
            e.validate(&nodes, &agents).map_err(|m| match m.split_once(": ") {
                Some((field, message)) => FieldError { field: field.to_string(), message: message.to_string() },
                None => FieldError { field: "explore".into(), message: m },
            })?;
        }
        Ok(())
    }

    /// Directory that relative paths in this scenario are resolved against.
    pub fn base_dir(path: &Path) -> PathBuf {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// Scenario files (`*.ron`) at `path`: the file itself, or every one under
/// the directory, recursively, sorted (the order every command reports in).
#[allow(clippy::disallowed_methods)] // the scenario tree is the simulator's input, read before any run
pub fn files(path: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let io = |dir: &Path, err| ScenarioError::Io { path: dir.display().to_string(), err };
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let p = entry.map_err(|e| io(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "ron") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// 1-based (line, column) of the value of `field` (a path as
/// [`FieldError::field`] writes it) in RON `text`; the nearest enclosing
/// value that is written out when the field itself is not (a default), and
/// (1, 1) when nothing matches.
pub fn locate(text: &str, field: &str) -> (usize, usize) {
    let positions = value_positions(text);
    let mut path = field.to_string();
    loop {
        if let Some(p) = positions.get(&path) {
            return *p;
        }
        match path.rfind(['.', '[']) {
            Some(i) => path.truncate(i),
            None => return (1, 1),
        }
    }
}

/// Where each value starts in RON text, by field path: a small scanner
/// (strings, comments, nesting, `key:` and list positions), enough to point
/// a user at a value; the parser proper is `ron`.
fn value_positions(text: &str) -> BTreeMap<String, (usize, usize)> {
    struct Frame {
        path: String,
        index: usize,
        key: Option<String>,
    }
    let join = |f: &Frame| -> String {
        match &f.key {
            Some(k) if f.path.is_empty() => k.clone(),
            Some(k) => format!("{}.{k}", f.path),
            None => format!("{}[{}]", f.path, f.index),
        }
    };
    let mut out = BTreeMap::new();
    let mut stack = vec![Frame { path: String::new(), index: 0, key: None }];
    let mut expect_value = true;
    let mut word: Option<String> = None;
    let chars: Vec<char> = text.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let advance = |i: &mut usize, line: &mut usize, col: &mut usize, c: char| {
        *i += 1;
        if c == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
    };
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col, c);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while let Some(&c) = chars.get(i) {
                if c == '\n' {
                    break;
                }
                advance(&mut i, &mut line, &mut col, c);
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            while let Some(&c) = chars.get(i) {
                let end = c == '*' && chars.get(i + 1) == Some(&'/');
                advance(&mut i, &mut line, &mut col, c);
                if end {
                    advance(&mut i, &mut line, &mut col, '/');
                    break;
                }
            }
            continue;
        }
        // A token starts here.
        let root = stack.len() == 1;
        let top = stack.last_mut().expect("the root frame is never popped");
        if expect_value && !matches!(c, ')' | ']' | '}' | ',' | ':') {
            let at = if root { String::new() } else { join(top) };
            out.entry(at).or_insert((line, col));
            expect_value = false;
        }
        let top = stack.last_mut().expect("the root frame is never popped");
        match c {
            ':' => {
                top.key = word.take();
                expect_value = true;
                advance(&mut i, &mut line, &mut col, c);
            }
            ',' => {
                top.index += 1;
                top.key = None;
                word = None;
                expect_value = true;
                advance(&mut i, &mut line, &mut col, c);
            }
            '(' | '[' | '{' => {
                let path = if root { String::new() } else { join(top) };
                stack.push(Frame { path, index: 0, key: None });
                word = None;
                expect_value = true;
                advance(&mut i, &mut line, &mut col, c);
            }
            ')' | ']' | '}' => {
                if stack.len() > 1 {
                    stack.pop();
                }
                word = None;
                expect_value = false;
                advance(&mut i, &mut line, &mut col, c);
            }
            '"' => {
                let mut s = String::new();
                advance(&mut i, &mut line, &mut col, c);
                while let Some(&c) = chars.get(i) {
                    advance(&mut i, &mut line, &mut col, c);
                    match c {
                        '\\' => {
                            if let Some(&n) = chars.get(i) {
                                s.push(n);
                                advance(&mut i, &mut line, &mut col, n);
                            }
                        }
                        '"' => break,
                        _ => s.push(c),
                    }
                }
                word = Some(s);
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.get(i) {
                    if c.is_whitespace() || "()[]{},:\"".contains(c) || (c == '/' && chars.get(i + 1) == Some(&'/')) {
                        break;
                    }
                    s.push(c);
                    advance(&mut i, &mut line, &mut col, c);
                }
                word = Some(s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"Scenario(
        name: "minimal",
        seed: 1,
        duration_s: 10,
        nodes: [(name: "a")],
        agents: [(name: "counter", wasm: "counter.wat", budget_microcents: 1000, node: "a")],
        timeline: [(at_ms: 100, action: Crash(node: "a"))],
        expect: (verdict: Pass),
    )"#;

    #[test]
    fn minimal_scenario_parses_with_defaults() {
        let s = Scenario::parse(MINIMAL, "m.ron").unwrap();
        assert_eq!(s.step_ms, 10);
        assert_eq!(s.network.latency_ms, (1, 5));
        assert_eq!(s.nodes[0].price_microcents, 1000);
        let again = Scenario::parse(&s.to_ron(), "again.ron").unwrap();
        assert_eq!(again, s, "to_ron round-trips");
    }

    #[test]
    fn typo_is_an_error_with_line_and_column() {
        let text = MINIMAL.replace("duration_s: 10", "duraton_s: 10");
        let err = Scenario::parse(&text, "typo.ron").unwrap_err().to_string();
        assert!(err.starts_with("typo.ron:4:"), "{err}");
        assert!(err.contains("duraton_s"), "{err}");
    }

    #[test]
    fn unknown_names_are_rejected_at_the_value() {
        let text = MINIMAL.replace("Crash(node: \"a\")", "Crash(node: \"zz\")");
        let err = Scenario::parse(&text, "x.ron").unwrap_err().to_string();
        // Line 7 of MINIMAL, column of the "zz" string.
        let col = text.lines().nth(6).unwrap().find("\"zz\"").unwrap() + 1;
        assert_eq!(err, format!("x.ron:7:{col}: timeline[0].action.node: unknown node \"zz\""));
    }

    /// Every validation error names its field and points at the value's
    /// line and column in the file (the value's first character).
    #[test]
    fn every_validation_error_points_at_its_value() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("duration_s: 10", "duration_s: 0", "duration_s", "0,"),
            ("seed: 1,", "seed: 1, step_ms: 0,", "step_ms", "0,"),
            ("seed: 1,", "seed: 1, network: (latency_ms: (9, 2)),", "network.latency_ms", "(9, 2)"),
            ("seed: 1,", "seed: 1, network: (loss: 1.5),", "network.loss", "1.5"),
            ("[(name: \"a\")]", "[(name: \"a\"), (name: \"a\")]", "nodes[1].name", "\"a\")]"),
            ("[(name: \"a\")]", "[(name: \"a\"), (name: \"sim\")]", "nodes[1].name", "\"sim\")]"),
            ("[(name: \"a\")]", "[(name: \"a\", price_microcents: -1)]", "nodes[0].price_microcents", "-1)"),
            ("[(name: \"a\")]", "[(name: \"a\", lease_duration_ms: 0)]", "nodes[0].lease_duration_ms", "0)"),
            ("[(name: \"a\")]", "[(name: \"a\", tick_interval_ms: 0)]", "nodes[0].tick_interval_ms", "0)"),
            ("[(name: \"a\")]", "[(name: \"a\", lease_grace_ms: 500)]", "nodes[0].lease_grace_ms", "500)"),
            ("node: \"a\")]", "node: \"q\")]", "agents[0].node", "\"q\")]"),
            ("budget_microcents: 1000", "budget_microcents: -5", "agents[0].budget_microcents", "-5,"),
            ("at_ms: 100", "at_ms: 99999999", "timeline[0].at_ms", "99999999"),
            (
                "Crash(node: \"a\")",
                "Migrate(agent: \"nope\", from: \"a\", to: \"a\")",
                "timeline[0].action.agent",
                "\"nope\"",
            ),
            (
                "Crash(node: \"a\")",
                "Migrate(agent: \"counter\", from: \"a\", to: \"b\")",
                "timeline[0].action.to",
                "\"b\")",
            ),
            ("Crash(node: \"a\")", "Corrupt(node: \"a\", probability: 2.0)", "timeline[0].action.probability", "2.0)"),
            ("Crash(node: \"a\")", "Drift(node: \"a\", ppm: 900000)", "timeline[0].action.ppm", "900000)"),
            ("Crash(node: \"a\")", "Swizzle(nodes: [], step_ms: 5)", "timeline[0].action.nodes", "[],"),
            (
                "Crash(node: \"a\")",
                "Reorder(node: \"a\", max_delay_ms: 18446744073709551615)",
                "timeline[0].action.max_delay_ms",
                "18446744073709551615)",
            ),
            (
                "Crash(node: \"a\")",
                "Restart(node: \"a\", storage: CorruptNewest(agent: \"x\"))",
                "timeline[0].action.storage.agent",
                "\"x\")",
            ),
            ("(verdict: Pass)", "(verdict: Pass, authority: {\"zz\": {}})", "expect.authority.zz", "{}}"),
            (
                "(verdict: Pass)",
                "(verdict: Pass, authority: {\"a\": {\"ghost\": \"RETIRED\"}})",
                "expect.authority.a.ghost",
                "\"RETIRED\"",
            ),
            ("(verdict: Pass)", "(verdict: Pass, ticks: {\"ghost\": (1, 2)})", "expect.ticks.ghost", "(1, 2)"),
            ("(verdict: Pass)", "(verdict: Pass, liveness: (within_ms: 0))", "expect.liveness.within_ms", "0))"),
        ];
        for (from, to, field, value) in cases {
            assert!(MINIMAL.contains(from), "{from}");
            let text = MINIMAL.replacen(from, to, 1);
            let err = Scenario::parse(&text, "v.ron").unwrap_err();
            let ScenarioError::Invalid { line, col, message, .. } = &err else { panic!("{field}: {err}") };
            assert!(message.starts_with(&format!("{field}: ")), "{field}: {message}");
            let at = &text.lines().nth(line - 1).unwrap()[col - 1..];
            assert!(at.starts_with(value), "{field}: {err} points at {at:?}, not {value:?}");
        }
    }

    #[test]
    fn the_locator_skips_comments_and_strings_and_falls_back_to_the_parent() {
        let text = "// a: (\n(name: \"x: [\", /* b: 1 */ seed: 7, nodes: [(name: \"a\"), (name: \"b\")])";
        assert_eq!(locate(text, "seed"), (2, 33));
        assert_eq!(locate(text, "nodes[1].name"), (2, 64));
        // A field left at its default is not written: its parent is.
        assert_eq!(locate(text, "nodes[1].price_microcents"), (2, 57));
        assert_eq!(locate(text, "expect.liveness.within_ms"), (1, 1));
    }
}

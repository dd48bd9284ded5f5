//! The report: one section per figure, each a table of ours / baseline / ratio /
//! target / met, plus the machine description; printed and written as Markdown.

use std::fmt::Write;
use std::process::Command;

/// Whether a row's target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Met {
    /// Target met.
    Yes,
    /// Target missed.
    No,
    /// The row has no target (informational).
    NotApplicable,
    /// Nothing was measured.
    NotMeasured,
}

impl Met {
    /// `Yes` when `ok`, else `No`.
    pub fn from(ok: bool) -> Met {
        if ok {
            Met::Yes
        } else {
            Met::No
        }
    }

    fn text(self) -> &'static str {
        match self {
            Met::Yes => "yes",
            Met::No => "**no**",
            Met::NotApplicable => "—",
            Met::NotMeasured => "not measured",
        }
    }
}

/// One line of a figure's table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What is measured.
    pub name: String,
    /// The module's figure.
    pub ours: String,
    /// The baseline's figure.
    pub baseline: String,
    /// ours / baseline, or a difference, as text.
    pub ratio: String,
    /// The target, as text (`—` when none).
    pub target: String,
    /// Whether the target was met.
    pub met: Met,
}

impl Row {
    /// A row without a target.
    pub fn info(name: &str, ours: String, baseline: String, ratio: String) -> Row {
        Row { name: name.into(), ours, baseline, ratio, target: "—".into(), met: Met::NotApplicable }
    }
}

/// One benchmark figure: a title, what was compared and how, and the table.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// Paragraphs describing the method and exactly what is compared.
    pub method: Vec<String>,
    /// The table.
    pub rows: Vec<Row>,
    /// Observations made during the run (warnings, checks).
    pub notes: Vec<String>,
}

/// What the machine and the programs under test are.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory, human-readable.
    pub memory: String,
    /// CPU model name.
    pub cpu_model: String,
    /// `<server> --version` output.
    pub server: String,
    /// `SELECT version()`.
    pub postgres: String,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Describes this machine, the server binary and the Postgres at `pg_url`.
    pub fn describe(server_bin: &str, pg_url: &str) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            memory: mem_total(&meminfo),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            server: run_text(server_bin, &["--version"]),
            postgres: postgres::Client::connect(pg_url, postgres::NoTls)
                .and_then(|mut c| c.query_one("SELECT version()", &[]))
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_else(|e| format!("unknown ({e})")),
            kernel: run_text("uname", &["-r"]),
        }
    }
}

fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string())
}

fn mem_total(meminfo: &str) -> String {
    field(meminfo, "MemTotal")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into())
}

fn run_text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The whole report.
pub struct Report {
    /// Machine and programs.
    pub machine: Machine,
    /// Extra facts about the run (module path, commit, date, duration).
    pub run: Vec<(String, String)>,
    /// The figures, in order.
    pub sections: Vec<Section>,
}

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Written by the benchmark program (`bench/`); every run overwrites this file. \
             Each figure is measured together with its baseline in the same run on the same machine.\n"
        );
        let _ = writeln!(out, "To reproduce:\n\n    scripts/bench.sh\n");
        let _ = writeln!(
            out,
            "(`PGSYNC_SERVER_BIN=/path/to/redis-server scripts/bench.sh` to run it on another server binary.)\n"
        );
        self.machine_markdown(&mut out);
        self.summary_markdown(&mut out);
        for s in &self.sections {
            section_markdown(&mut out, s);
        }
        // Profiling findings and before/after figures are kept by hand in
        // bench/PROFILING.md and carried into every report.
        if let Ok(notes) = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROFILING.md")) {
            out.push('\n');
            out.push_str(&notes);
        }
        out
    }

    fn machine_markdown(&self, out: &mut String) {
        let m = &self.machine;
        let _ = writeln!(out, "## Machine\n");
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| CPUs (nproc) | {} |", m.cpus);
        let _ = writeln!(out, "| CPU model | {} |", m.cpu_model);
        let _ = writeln!(out, "| memory | {} |", m.memory);
        let _ = writeln!(out, "| kernel | {} |", m.kernel);
        let _ = writeln!(out, "| server | {} |", m.server);
        let _ = writeln!(out, "| PostgreSQL | {} |", m.postgres);
        for (k, v) in &self.run {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        let _ = writeln!(out);
    }

    fn summary_markdown(&self, out: &mut String) {
        let _ = writeln!(out, "## Summary\n");
        let _ = writeln!(out, "| figure | ours | baseline | ratio | target | met |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for s in &self.sections {
            for r in s.rows.iter().filter(|r| r.met != Met::NotApplicable) {
                table_row(out, &format!("{}: {}", s.title, r.name), r);
            }
        }
        let _ = writeln!(out);
    }

    /// The report as plain text for the terminal.
    pub fn print(&self) {
        println!("\n==== results ====");
        for s in &self.sections {
            print_section(s);
        }
    }
}

/// One Markdown table row: the figure's name, then its values.
fn table_row(out: &mut String, name: &str, r: &Row) {
    let _ = writeln!(out, "| {name} | {} | {} | {} | {} | {} |", r.ours, r.baseline, r.ratio, r.target, r.met.text());
}

fn section_markdown(out: &mut String, s: &Section) {
    let _ = writeln!(out, "## {}\n", s.title);
    for p in &s.method {
        let _ = writeln!(out, "{p}\n");
    }
    let _ = writeln!(out, "| figure | ours | baseline | ratio | target | met |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for r in &s.rows {
        table_row(out, &r.name, r);
    }
    let _ = writeln!(out);
    if !s.notes.is_empty() {
        for n in &s.notes {
            let _ = writeln!(out, "- {n}");
        }
        let _ = writeln!(out);
    }
}

/// Prints one section as aligned plain text.
pub fn print_section(s: &Section) {
    println!("\n## {}", s.title);
    for r in &s.rows {
        println!(
            "  {:<44} ours {:>16}  baseline {:>16}  ratio {:>12}  target {:<22} met {}",
            r.name,
            r.ours,
            r.baseline,
            r.ratio,
            r.target,
            r.met.text().trim_matches('*')
        );
    }
    for n in &s.notes {
        println!("  note: {n}");
    }
}

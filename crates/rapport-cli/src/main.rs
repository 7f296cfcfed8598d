//! The `rapport` binary: argument parsing, progress bars and exit codes over the
//! engine. Exit status: 0 success, 2 a problem the user can fix (bad input, config,
//! arguments), 1 anything else.

mod bench;
mod commands;
mod progress;
mod scale_bench;
mod serve_bench;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: ingest and run create and free millions of
/// small strings on many threads, where glibc's malloc was measurably slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "rapport", version, about = "Customer intelligence from the data you already have")]
struct Cli {
    /// The workspace folder (tables, catalog, key, reports).
    #[arg(long, global = true, env = "RAPPORT_WORKSPACE", default_value = "rapport-workspace")]
    workspace: PathBuf,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Commands that change the workspace (init, ingest, run, uplift, rekey) wait this many
    /// seconds for another such command to finish; 0 fails at once (exit 75).
    #[arg(long, global = true, default_value_t = 0.0, value_name = "SECONDS")]
    wait: f64,
    /// Run the queries of ingest, run, sql and export on a Ballista cluster (`df://host:50050`,
    /// see `rapport scheduler`) instead of in this process; overrides `[engine] url`.
    #[arg(long, global = true, env = "RAPPORT_ENGINE", value_name = "URL")]
    engine: Option<String>,
    /// Memory the queries may hold before sorts, joins and aggregations spill to disk
    /// (`8GB`, `512MiB`); overrides `[engine] memory_limit` (default: half the memory).
    #[arg(long, global = true, env = "RAPPORT_MEMORY_LIMIT", value_name = "SIZE")]
    memory_limit: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token with a role (collector, analyst, marketer, privacy, admin) and
    /// print it; only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
    },
    /// The tokens with their role and when they were created and revoked.
    List,
    /// Revoke a token by name; requests with it get 401 from then on.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of `rapport serve`'s audit log from its first row; names the
    /// first row that was changed, removed or reordered (exit 1).
    Verify,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented rapport.toml and create the workspace and its key.
    Init {
        /// Where to write rapport.toml (default: the current folder).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Overwrite an existing rapport.toml.
        #[arg(long)]
        force: bool,
    },
    /// Read, validate, clean and unify a folder of exports; append to the workspace.
    Ingest {
        #[arg(long)]
        data: PathBuf,
        /// rapport.toml to use (default: DATA/rapport.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Features, segments, models, gaps, recommendations and actions, as seen at the end of a date.
    Run {
        /// Ignore data after this date (YYYY-MM-DD); default: the last order date.
        #[arg(long)]
        as_of: Option<String>,
        /// rapport.toml whose [models] and [actions] sections to use (default: the defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Calibration/holdout checks: the CLV and churn models (default), or `recs`.
    Evaluate {
        /// What to evaluate: clv (CLV and churn models), recs (recommendations) or gaps
        /// (how well the gap evidence holds up against later behaviour; no truth needed).
        #[arg(value_parser = ["clv", "recs", "gaps"], default_value = "clv")]
        what: String,
        /// Days before the last order where the holdout starts.
        #[arg(long)]
        holdout_days: Option<u32>,
        /// recs: the first day of the test period (YYYY-MM-DD), instead of --holdout-days.
        #[arg(long)]
        split_date: Option<String>,
        /// recs: the length of each recommendation list.
        #[arg(long, default_value_t = 10)]
        k: usize,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cross-validate classifiers on any labelled table (e.g. a churn export).
    Train {
        /// A CSV, JSON Lines or Parquet file, one row per customer.
        #[arg(long)]
        data: PathBuf,
        /// The yes/no column to predict (yes/no, true/false or 1/0).
        #[arg(long)]
        target: String,
        /// A column that identifies rows and must not be used as a feature.
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value_t = 5)]
        folds: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One customer's profile, scores, gaps and answers, with the numbers behind them.
    Explain {
        /// The unified customer id or any source system's id.
        #[arg(long)]
        customer: String,
        #[arg(long)]
        json: bool,
        /// Show personal columns in clear (needs the workspace key or RAPPORT_KEY).
        #[arg(long)]
        reveal: bool,
    },
    /// Recommendations for a new customer from a basket, folded into the last run's ALS
    /// factors without refitting.
    Recommend {
        /// Product ids, comma-separated, each optionally with a quantity: P1,P2:3.
        #[arg(long)]
        products: String,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Render reports/report.html again from the workspace tables and the last run's
    /// reports/models.json (as `rapport run` does), e.g. after editing nothing but wanting
    /// a fresh copy, or after an upgrade changed the report.
    Report,
    /// Treated vs control per campaign and action from the ingested campaign outcomes.
    Uplift {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Rotate the key: every personal value and pseudonym re-encrypted under a new key
    /// in one transaction; the old key is refused afterwards.
    Rekey {
        /// Where to write the new key (needed when the key comes from RAPPORT_KEY;
        /// otherwise the new key replaces the current key file).
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
    /// Serve the HTTP API over the workspace (docs/openapi.json) until SIGINT or SIGTERM;
    /// requests carry a token from `rapport token create`.
    Serve {
        /// The address to listen on (default: `[server] bind`, else 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<String>,
        /// rapport.toml whose [server] section, and the [ingest], [identity] and
        /// [privacy] settings posted records are checked and stored with, to use.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the OpenAPI document of the API and exit (docs/openapi.json is this).
        #[arg(long)]
        print_openapi: bool,
    },
    /// Bearer tokens of `rapport serve`: create (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        what: TokenCommand,
    },
    /// `rapport serve`'s audit log (every reveal of personal data, write, SQL query and
    /// refused request, hash-chained).
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Verify the workspace against its catalog: every part present, with the size,
    /// SHA-256 and row count recorded at commit, readable as Parquet, and no stray file.
    /// Exit 1 on any problem.
    Check {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Run SQL over every workspace table.
    Sql {
        query: String,
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
        /// Show personal columns in clear (needs the workspace key or RAPPORT_KEY).
        #[arg(long)]
        reveal: bool,
    },
    /// Write a workspace table to a file.
    Export {
        #[arg(long)]
        table: String,
        #[arg(long, value_parser = ["csv", "parquet", "json"])]
        format: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        reveal: bool,
    },
    /// Start a Ballista scheduler that knows Rapport's functions; commands given
    /// `--engine df://HOST:PORT` send it their queries. Runs until stopped.
    Scheduler {
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: std::net::SocketAddr,
    },
    /// Start a Ballista executor for a `rapport scheduler`: it runs the tasks of the
    /// commands' queries, reading the workspace's files by path (give every executor
    /// the same filesystem as the commands). Runs until stopped.
    Executor {
        #[arg(long, default_value = "df://127.0.0.1:50050")]
        scheduler: String,
        /// Where it listens for the fetches of its tasks' results (this port and the next).
        #[arg(long, default_value = "127.0.0.1:50051")]
        bind: std::net::SocketAddr,
        /// Where it keeps its tasks' intermediate results (default: a temporary folder).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Tasks at once (default: the number of cores).
        #[arg(long)]
        concurrent_tasks: Option<usize>,
    },
    /// Write a realistic synthetic company (with its truth) in the input format.
    Generate {
        #[arg(long, default_value_t = 20_000)]
        customers: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        /// No planted dirt.
        #[arg(long)]
        clean: bool,
        #[command(flatten)]
        world: commands::WorldArgs,
    },
    /// The whole loop on generated data, ending with the report.
    Demo {
        #[arg(long, default_value = "rapport-demo")]
        out: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        customers: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// The command reference in Markdown (docs/commands.md is this output).
    #[command(hide = true)]
    Reference,
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        what: bench::Bench,
    },
}

/// Every command's `--help`, as Markdown: the command reference in docs/commands.md.
fn reference() -> String {
    use clap::CommandFactory;
    use std::fmt::Write;
    fn section(out: &mut String, path: &str, cmd: &mut clap::Command) {
        let help = cmd.render_long_help().to_string();
        let _ = write!(out, "\n## `{path}`\n\n```text\n{}\n```\n", help.trim_end());
        let mut subs: Vec<clap::Command> = cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned().collect();
        for sub in &mut subs {
            if sub.get_name() != "help" {
                section(out, &format!("{path} {}", sub.get_name()), sub);
            }
        }
    }
    let mut cmd = Cli::command().term_width(100);
    cmd.build();
    let mut out = String::from(
        "# Command and configuration reference\n\nEvery command's `--help`, then every `rapport.toml` key. Generated by\n`rapport reference > docs/commands.md`; a test checks that this file is current.\n",
    );
    section(&mut out, "rapport", &mut cmd);
    let _ = write!(
        out,
        "\n## `rapport.toml`\n\nEvery key, as `rapport init` writes the file (a key left out keeps the default shown).\n\
         A key or section Rapport does not read is an error naming it.\n\n```toml\n{}```\n",
        rapport_store::config::TEMPLATE
    );
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Everything Rapport creates (workspace files, reports, exports) is its owner's alone.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if !(cli.wait.is_finite() && cli.wait >= 0.0) {
        eprintln!("error: --wait takes a number of seconds, 0 or more");
        return ExitCode::from(2);
    }
    let wait = std::time::Duration::from_secs_f64(cli.wait);
    let engine = commands::EngineArgs {
        url: cli.engine.clone(),
        memory_limit: cli.memory_limit.clone(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RAPPORT_LOG").unwrap_or_else(|_| {
            // A cluster job's failure is the command's error; Ballista's client logging
            // it as well would say it twice.
            "warn,ballista_core::execution_plans::distributed_query=off".into()
        }))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Init { data, force } => commands::init(&cli.workspace, data.as_deref(), force, wait),
        Command::Ingest { data, config } => commands::ingest(&cli.workspace, &data, config.as_deref(), &engine, cli.quiet, wait),
        Command::Run { as_of, config } => commands::run(&cli.workspace, as_of.as_deref(), config.as_deref(), &engine, wait),
        Command::Evaluate {
            what,
            holdout_days,
            split_date,
            k,
            config,
            json,
        } => commands::evaluate(
            &cli.workspace,
            &what,
            holdout_days,
            split_date.as_deref(),
            k,
            config.as_deref(),
            json,
        ),
        Command::Train {
            data,
            target,
            id,
            folds,
            seed,
            json,
        } => commands::train(&data, &target, id.as_deref(), folds, seed, json),
        Command::Explain { customer, json, reveal } => commands::explain(&cli.workspace, &customer, json, reveal),
        Command::Recommend { products, k, json } => commands::recommend(&cli.workspace, &products, k, json),
        Command::Uplift { json } => commands::uplift(&cli.workspace, json, wait),
        Command::Report => commands::report(&cli.workspace, wait),
        Command::Check { json } => commands::check(&cli.workspace, json),
        Command::Serve {
            bind,
            config,
            print_openapi,
        } => commands::serve(&cli.workspace, bind.as_deref(), config.as_deref(), print_openapi),
        Command::Token { what } => match what {
            TokenCommand::Create { name, role } => commands::token_create(&cli.workspace, &name, &role),
            TokenCommand::List => commands::token_list(&cli.workspace),
            TokenCommand::Revoke { name } => commands::token_revoke(&cli.workspace, &name),
        },
        Command::Audit {
            what: AuditCommand::Verify,
        } => commands::audit_verify(&cli.workspace),
        Command::Rekey { new_key_file } => commands::rekey(&cli.workspace, new_key_file.as_deref(), wait),
        Command::Sql { query, format, reveal } => commands::sql(&cli.workspace, &query, &format, reveal, &engine),
        Command::Export {
            table,
            format,
            out,
            reveal,
        } => commands::export(&cli.workspace, &table, &format, &out, reveal, &engine),
        Command::Scheduler { bind } => commands::scheduler(bind),
        Command::Executor {
            scheduler,
            bind,
            work_dir,
            concurrent_tasks,
        } => commands::executor(&scheduler, bind, work_dir, concurrent_tasks, &engine),
        Command::Generate {
            customers,
            seed,
            out,
            clean,
            world,
        } => world.into_world().and_then(|w| commands::generate(customers, seed, &out, clean, w)),
        Command::Demo { out, customers, seed } => commands::demo(&out, customers, seed, cli.quiet, &engine),
        Command::Bench { what } => bench::run(what),
        Command::Reference => {
            print!("{}", reference());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
